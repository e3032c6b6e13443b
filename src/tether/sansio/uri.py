"""WebSocket URIs (RFC 6455 section 3): ``ws://host:port/path?query`` and ``wss://``."""

from __future__ import annotations

import dataclasses
import urllib.parse

from ..exceptions import InvalidURI

__all__ = ["WebSocketURI", "parse_uri"]


@dataclasses.dataclass(frozen=True, slots=True)
class WebSocketURI:
    secure: bool
    host: str
    port: int
    resource_name: str = "/"
    user_info: tuple[str, str] | None = None

    @property
    def scheme(self) -> str:
        return "wss" if self.secure else "ws"

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the port is left out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.resource_name}"


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI. http:// and https:// are accepted as ws:// and wss:// (as
    browsers do since 2023) so redirects to them can be followed.

    Raises:
        InvalidURI: wrong scheme, no host, a fragment (3: "MUST NOT be used"), bad port.
    """
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise InvalidURI(uri, "scheme isn't ws or wss")
    if parsed.fragment:
        raise InvalidURI(uri, "a WebSocket URI has no fragment")
    host = parsed.hostname
    if not host:
        raise InvalidURI(uri, "no host")
    secure = scheme in ("wss", "https")
    try:
        port = parsed.port or (443 if secure else 80)
    except ValueError as exc:
        raise InvalidURI(uri, str(exc)) from None
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    path = urllib.parse.quote(path, safe="/:@!$&'()*+,;=%?~-._")
    user_info = None
    if parsed.username is not None:
        user_info = (
            urllib.parse.unquote(parsed.username),
            urllib.parse.unquote(parsed.password or ""),
        )
    return WebSocketURI(secure, host, port, path, user_info)
