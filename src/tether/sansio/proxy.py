"""Client proxies, sans-I/O: choosing one, and opening a tunnel through it.

RFC 6455 section 4.1 lets a client "connect to the host through the proxy": tether supports

- HTTP ``CONNECT`` proxies (RFC 9110 section 9.3.6), with Basic authentication (RFC 7617)
  in ``Proxy-Authorization`` (RFC 9110 section 11.7.2) when the proxy URL has userinfo;
- SOCKS5 proxies (RFC 1928), with username/password authentication (RFC 1929) when the
  proxy URL has userinfo. ``socks5://`` resolves the target's name locally and sends the
  address; ``socks5h://`` lets the proxy resolve it (needed for names only it knows).

:func:`proxy_from_environment` reads the conventional variables the way
``urllib.request.getproxies()`` and ``proxy_bypass_environment()`` do: ``wss://`` uses
``https_proxy``, ``ws://`` uses ``http_proxy``, both fall back to ``all_proxy``; lowercase
names win over uppercase ones; ``http_proxy`` is ignored when ``REQUEST_METHOD`` is set (a
CGI request could set it: "httpoxy"); ``no_proxy`` lists hosts to reach directly.

:class:`HTTPConnectTunnel` and :class:`SOCKS5Tunnel` speak the proxy's protocol and nothing
else: feed them bytes with ``receive_data``, send what ``data_to_send`` returns, and once
``established`` is true the connection carries the target's bytes (TLS first, for wss).
A refusal raises :class:`~tether.exceptions.InvalidProxy` naming the status or reply.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Generator, Mapping

from ..exceptions import InvalidHTTP, InvalidProxy
from ..limits import Limits
from .http11 import Headers, Request, Response
from .streams import StreamReader
from .uri import WebSocketURI

__all__ = [
    "SOCKS5_REPLIES",
    "HTTPConnectTunnel",
    "Proxy",
    "SOCKS5Tunnel",
    "Tunnel",
    "parse_proxy",
    "proxy_bypass",
    "proxy_from_environment",
]

_DEFAULT_PORTS = {"http": 80, "socks5": 1080, "socks5h": 1080}


@dataclasses.dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy URL, parsed: ``http://user:pw@host:port``, ``socks5://``, ``socks5h://``."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The URL without the password, for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = "" if self.username is None else urllib.parse.quote(self.username, safe="") + "@"
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """Parse a proxy URL; a URL without a scheme (``proxy:3128``) is an HTTP proxy.

    Raises:
        InvalidProxy: unsupported scheme (``https://``, ``socks4://``...), no host, bad port.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}"
    if scheme not in _DEFAULT_PORTS:
        raise InvalidProxy(
            shown,
            f"unsupported proxy scheme {scheme!r}; use http://, socks5:// or socks5h:// "
            "(TLS to the proxy itself, https://, is not supported)",
        )
    if not parts.hostname:
        raise InvalidProxy(shown, "no host in the proxy URL")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise InvalidProxy(shown, f"invalid port in the proxy URL: {exc}") from None
    username = password = None
    if parts.username is not None:
        username = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
    return Proxy(scheme, parts.hostname, port, username, password)


# --- choosing a proxy from the environment -----------------------------------------------------


def _environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    # As urllib.request.getproxies_environment(): any case first, then lowercase wins.
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        key = name.lower()
        if value and key.endswith("_proxy"):
            proxies[key[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name.endswith("_proxy"):
            key = name[:-6]
            if value:
                proxies[key] = value
            else:
                proxies.pop(key, None)
    return proxies


def proxy_bypass(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` says to reach ``host:port`` directly.

    The entries are comma-separated: ``*`` (every host), a domain (``example.com`` or
    ``.example.com``: the domain and its subdomains), a host with a port (``example.com:8080``
    matches that port only), an IP address, or an IP network (``10.0.0.0/8``, as curl
    accepts). Names compare case-insensitively; IPv6 addresses may be bracketed.
    """
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry and address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, entry_port = entry, None
        if entry.startswith("["):
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, _, entry_port = entry.partition(":")
        if entry_port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_from_environment(uri: WebSocketURI, environ: Mapping[str, str]) -> str | None:
    """The proxy URL the environment asks ``uri`` to use, or ``None`` for a direct connection."""
    proxies = _environment_proxies(environ)
    if proxy_bypass(uri.host, uri.port, proxies.get("no", "")):
        return None
    for key in ("https", "all") if uri.secure else ("http", "all"):
        if proxies.get(key):
            return proxies[key]
    return None


# --- tunnels -----------------------------------------------------------------------------------


class Tunnel:
    """The client side of a proxy handshake, driven by bytes; see the module docstring."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.reader = StreamReader()
        self.established = False
        self.error: InvalidProxy | None = None
        self._writes: list[bytes] = []
        self._parser = self._run()
        self._step()

    def _run(self) -> Generator[None, None, None]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    def _fail(self, reason: str, *, retryable: bool = False) -> InvalidProxy:
        return InvalidProxy(str(self.proxy), reason, retryable=retryable)

    def _step(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            next(self._parser)
        except StopIteration:
            self.established = True
        except EOFError:
            self.error = self._fail("the proxy closed the connection during its handshake")
            raise self.error from None
        except InvalidProxy as exc:
            self.error = exc
            raise

    def data_to_send(self) -> bytes:
        """The bytes to write to the proxy now."""
        data, self._writes = b"".join(self._writes), []
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the proxy.

        Raises:
            InvalidProxy: the proxy refused, or does not speak its protocol.
        """
        if self.established:
            raise self._fail("data received after the tunnel was established")
        self.reader.feed_data(data)
        self._step()

    def receive_eof(self) -> None:
        """The proxy closed the connection.

        Raises:
            InvalidProxy: always, unless the tunnel was already established.
        """
        self.reader.feed_eof()
        if not self.established:
            self._step()

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the proxy's handshake (the target's)."""
        return bytes(self.reader.buffer)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HTTPConnectTunnel(Tunnel):
    """``CONNECT host:port`` (RFC 9110 section 9.3.6); any 2xx opens the tunnel."""

    def __init__(
        self,
        proxy: Proxy,
        host: str,
        port: int,
        *,
        user_agent: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.target = _authority(host, port)
        self.user_agent = user_agent
        self.limits = limits if limits is not None else Limits()
        super().__init__(proxy)

    def request(self) -> Request:
        """The ``CONNECT`` request: authority-form target (RFC 9112 section 3.2.3)."""
        headers = Headers([("Host", self.target)])
        if self.proxy.username is not None:
            credentials = f"{self.proxy.username}:{self.proxy.password or ''}".encode()
            token = base64.b64encode(credentials).decode("ascii")
            headers["Proxy-Authorization"] = f"Basic {token}"
        if self.user_agent is not None:
            headers["User-Agent"] = self.user_agent
        return Request("CONNECT", self.target, headers, path=self.target)

    def _run(self) -> Generator[None, None, None]:
        self._writes.append(self.request().serialize())
        reader = self.reader
        try:
            response = yield from Response.parse(
                reader.read_line, reader.read_exact, reader.read_to_eof, self.limits,
                method="CONNECT",
            )  # fmt: skip
        except InvalidHTTP as exc:
            raise self._fail(f"invalid answer to CONNECT: {exc}") from None
        self.response = response
        if 200 <= response.status < 300:
            return
        reason = f"HTTP {response.status} {response.reason}".rstrip()
        reason += f" to CONNECT {self.target}"
        if response.status in (401, 407):  # tinyproxy answers 401 to wrong credentials
            reason += (
                "; the credentials in the proxy URL were refused"
                if self.proxy.username is not None
                else "; put credentials in the proxy URL: http://user:password@host:port"
            )
        # tinyproxy answers 500 when it cannot reach the target, others 502, 503 or 504.
        raise self._fail(reason, retryable=response.status in (500, 502, 503, 504))


#: SOCKS5 reply codes (RFC 1928 section 6) and whether each is worth retrying later.
SOCKS5_REPLIES: dict[int, tuple[str, bool]] = {
    1: ("general SOCKS server failure", True),
    2: ("connection not allowed by ruleset", False),
    3: ("network unreachable", True),
    4: ("host unreachable", True),
    5: ("connection refused", True),
    6: ("TTL expired", True),
    7: ("command not supported", False),
    8: ("address type not supported", False),
}

_NO_AUTH, _USERNAME_PASSWORD, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF


class SOCKS5Tunnel(Tunnel):
    """``CONNECT`` through a SOCKS5 proxy (RFC 1928), authenticating as RFC 1929 says.

    ``host`` is sent as a domain name for ``socks5h://`` and when it is not an IP address;
    for ``socks5://`` the I/O layer resolves the name first and passes the address.
    """

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"invalid port: {port}")
        self.host = host
        self.port = port
        self.bound: tuple[str, int] | None = None
        self._destination = self._address() + port.to_bytes(2, "big")
        super().__init__(proxy)

    def _address(self) -> bytes:
        # RFC 1928 section 5: ATYP 1 (IPv4), 3 (domain name, length-prefixed), 4 (IPv6).
        host = self.host.strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            name = host.encode("idna")
            if not 0 < len(name) < 256:
                raise ValueError(f"host name too long for SOCKS5: {host!r}") from None
            return bytes([3, len(name)]) + name
        return bytes([1 if address.version == 4 else 4]) + address.packed

    def _run(self) -> Generator[None, None, None]:
        read_exact = self.reader.read_exact
        # Section 3: VER, NMETHODS, METHODS. We offer username/password only when we have them.
        methods = [_NO_AUTH]
        if self.proxy.username is not None:
            methods = [_USERNAME_PASSWORD, _NO_AUTH]
        self._writes.append(bytes([5, len(methods), *methods]))
        version, method = yield from read_exact(2)
        if version != 5:
            raise self._fail(f"not a SOCKS5 proxy (version byte {version})")
        if method == _NO_ACCEPTABLE:
            raise self._fail(
                "no acceptable authentication method; the proxy requires credentials: "
                "socks5://user:password@host:port"
                if self.proxy.username is None
                else "no acceptable authentication method (username/password offered)"
            )
        if method not in methods:
            raise self._fail(f"the proxy chose authentication method {method}, not offered")
        if method == _USERNAME_PASSWORD:
            yield from self._authenticate()
        # Section 4: VER, CMD (1 = CONNECT), RSV, DST.ADDR, DST.PORT.
        self._writes.append(bytes([5, 1, 0]) + self._destination)
        version, reply, _, address_type = yield from read_exact(4)
        if version != 5:
            raise self._fail(f"invalid SOCKS5 reply (version byte {version})")
        if reply != 0:
            text, retryable = SOCKS5_REPLIES.get(reply, ("unknown reply", False))
            raise self._fail(
                f"SOCKS5 reply {reply} ({text}) to CONNECT {_authority(self.host, self.port)}",
                retryable=retryable,
            )
        # Section 6: BND.ADDR and BND.PORT, the proxy's address for the tunnel; read and kept.
        if address_type == 1:
            bound = str(ipaddress.IPv4Address((yield from read_exact(4))))
        elif address_type == 4:
            bound = str(ipaddress.IPv6Address((yield from read_exact(16))))
        elif address_type == 3:
            (length,) = yield from read_exact(1)
            bound = (yield from read_exact(length)).decode("ascii", "replace")
        else:
            raise self._fail(f"invalid SOCKS5 reply (address type {address_type})")
        self.bound = (bound, int.from_bytes((yield from read_exact(2)), "big"))

    def _authenticate(self) -> Generator[None, None, None]:
        # RFC 1929 section 2: VER (1), ULEN, UNAME, PLEN, PASSWD; each 1 to 255 bytes.
        username = (self.proxy.username or "").encode()
        password = (self.proxy.password or "").encode()
        if not (0 < len(username) < 256 and 0 < len(password) < 256):
            raise self._fail("SOCKS5 username and password must each be 1 to 255 bytes")
        self._writes.append(
            bytes([1, len(username)]) + username + bytes([len(password)]) + password
        )
        _, status = yield from self.reader.read_exact(2)
        if status != 0:
            raise self._fail(
                f"SOCKS5 username/password authentication failed (status {status}); "
                "check the credentials in the proxy URL"
            )
