"""The options of a server and of a client, shared by every I/O layer.

The asyncio layer (``serve()``, ``connect()``), the threading layer and the ASGI layer all take
the same WebSocket options. They live here once: defaults, validation, and the construction of
the sans-I/O protocol (with its extension factories) from them. An I/O layer adds only what is
its own (sockets, TLS, hooks that receive its connection type).

Layer: above :mod:`tether.sansio` and :mod:`tether.extensions`, below the I/O layers. No I/O.

Adding an option: one field with a ``#:`` line in :class:`ServerOptions` or
:class:`ClientOptions` (and its check in ``__post_init__`` when a type check is not enough),
then the same keyword in each layer's signature; ``tests/test_options.py`` checks that every
layer's signature and docstring name every field with the same default.

Keywords that websockets (or its legacy API) takes and tether spells differently are refused
by :func:`check_unknown_keywords` with a message naming tether's equivalent.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from .extensions.base import ClientExtensionFactory, ServerExtensionFactory
from .extensions.permessage_deflate import (
    PRESETS,
    ClientPerMessageDeflateFactory,
    DeflateSettings,
    ServerPerMessageDeflateFactory,
)
from .limits import Limits
from .sansio.client import ClientProtocol, check_additional_headers
from .sansio.handshake import SUPPORTED_VERSIONS
from .sansio.http11 import HeadersLike
from .sansio.server import OriginRule, SelectSubprotocol, ServerProtocol
from .sansio.uri import WebSocketURI
from .typing import Subprotocol
from .version import __version__

__all__ = [
    "DEFAULT_SERVER_HEADER",
    "DEFAULT_USER_AGENT",
    "WEBSOCKETS_KEYWORDS",
    "ClientOptions",
    "Compression",
    "ServerOptions",
    "check_process_request",
    "check_select_subprotocol",
    "check_unknown_keywords",
    "client_extensions",
    "pick",
    "server_extensions",
]

#: ``"deflate"`` (the "balanced" preset), a preset name ("balanced", "small", "fast", "max"),
#: a :class:`~tether.extensions.permessage_deflate.DeflateSettings`, or ``None``/``"none"``.
Compression: TypeAlias = str | DeflateSettings | None

#: The default ``Server`` and ``User-Agent`` headers.
DEFAULT_SERVER_HEADER = f"tether/{__version__}"
DEFAULT_USER_AGENT = f"tether/{__version__}"


def _deflate_settings(compression: Compression) -> DeflateSettings | str | None:
    if compression is None or compression == "none":
        return None
    if compression == "deflate":
        return "balanced"
    return compression


def server_extensions(compression: Compression) -> list[ServerExtensionFactory]:
    """The extension factories that ``compression=`` stands for, on a server."""
    settings = _deflate_settings(compression)
    return [] if settings is None else [ServerPerMessageDeflateFactory(settings)]


def client_extensions(compression: Compression) -> list[ClientExtensionFactory]:
    """The extension factories that ``compression=`` stands for, on a client."""
    settings = _deflate_settings(compression)
    return [] if settings is None else [ClientPerMessageDeflateFactory(settings)]


# --- validation helpers --------------------------------------------------------------------


def _expect(name: str, value: object, types: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}: {value!r}")


def _timeout(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value}")


def _strings(name: str, value: Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a list of str, not a single {type(value).__name__}")
    items = tuple(value)
    for item in items:
        _expect(name, item, str, "a list of str")
    return items


def _compression(value: Compression) -> None:
    if value is None or isinstance(value, DeflateSettings):
        return
    if not isinstance(value, str):
        raise TypeError(
            f"compression must be 'deflate', a preset name, a DeflateSettings or None, "
            f"got {value!r}"
        )
    if value not in ("deflate", "none") and value not in PRESETS:
        names = ", ".join(repr(n) for n in ("deflate", *PRESETS, "none"))
        raise ValueError(f"compression must be one of {names}, or a DeflateSettings; got {value!r}")


def check_select_subprotocol(hook: object) -> None:
    """Refuse a ``select_subprotocol`` hook with the old ``(offered, supported)`` shape.

    The hook is ``(connection, subprotocols) -> choice | None``, in websockets' order. Both
    shapes take two arguments, so the parameter names and annotations tell them apart.

    Raises:
        TypeError: the hook is not callable with two positional arguments, or looks like the
            old shape.
    """
    if hook is None:
        return
    if not callable(hook):
        raise TypeError(f"select_subprotocol must be callable, got {hook!r}")
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(None, ())
    except TypeError:
        raise TypeError(
            "select_subprotocol must accept two positional arguments: "
            "(connection, subprotocols) -> subprotocol or None"
        ) from None
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    names = [p.name for p in params[:2]]
    annotation = str(params[0].annotation) if params else ""
    old_names = names[:1] in (["offered"], ["client_subprotocols"]) or names[1:2] in (
        ["supported"],
        ["server_subprotocols"],
    )
    if old_names or re.search(r"\b(Sequence|list|List)\b", annotation):
        raise TypeError(
            f"select_subprotocol{signature} looks like the old (offered, supported) shape; "
            "it is now (connection, subprotocols) -> subprotocol or None, as in websockets: "
            "subprotocols is what the client offered, and the server's own list is "
            "connection.protocol.subprotocols"
        )


def check_process_request(hook: object) -> None:
    """Refuse a ``process_request`` hook with websockets' legacy shape ``(path,
    request_headers)``, which returns ``(status, headers, body)``; tether's (as websockets'
    new API) is ``(connection, request) -> Response | None``.

    Raises:
        TypeError: the hook is not callable, or its parameters are named as the legacy ones.
    """
    if hook is None:
        return
    if not callable(hook):
        raise TypeError(f"process_request must be callable, got {hook!r}")
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):
        return
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if names[:1] == ["path"] or names[1:2] in (["request_headers"], ["headers"]):
        raise TypeError(
            f"process_request{signature} looks like websockets' legacy (path, request_headers) "
            "shape; it is now (connection, request) -> Response | None: read request.path and "
            "request.headers, and answer with connection.respond(status, text)"
        )


# --- the options -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """The WebSocket options of a server, validated when built.

    Every I/O layer builds one from its keyword arguments and makes each connection's
    :class:`~tether.sansio.server.ServerProtocol` with :meth:`make_protocol`.
    """

    #: The server's subprotocols; by default the first of the client's list that is here wins.
    subprotocols: Sequence[str] | None = None
    #: ``(connection, subprotocols) -> subprotocol | None`` replacing that policy.
    select_subprotocol: Callable[[Any, Sequence[str]], str | None] | None = None
    #: Refuse (400) a client that agrees no subprotocol.
    require_subprotocol: bool = False
    #: ``"deflate"`` (default), a preset name, a ``DeflateSettings``, or ``None``.
    compression: Compression = "deflate"
    #: More extension factories, negotiated before ``compression``'s.
    extensions: Sequence[ServerExtensionFactory] | None = None
    #: Allowed ``Origin`` values: str, compiled patterns, ``None`` for "no header" (403 else).
    origins: Sequence[OriginRule] | None = None
    #: Protocol versions accepted and advertised in a 426.
    versions: Sequence[str] = SUPPORTED_VERSIONS
    #: Value of the ``Server`` header; ``None`` sends none.
    server_header: str | None = DEFAULT_SERVER_HEADER
    #: Sizes and flow control: a :class:`~tether.limits.Limits`.
    limits: Limits | None = None
    #: Bytes that all connections together may hold of unfinished and unread messages;
    #: past it new handshakes get 503 and the biggest holders close with 1013 (``None``: no
    #: server-wide bound).
    memory_budget: int | None = None
    #: Seconds for the opening handshake (``None``: no limit).
    open_timeout: float | None = 10
    #: Seconds between keepalive pings (``None``: no keepalive).
    ping_interval: float | None = 20
    #: Seconds to wait for a pong before failing with 1011 (``None``: forever).
    ping_timeout: float | None = 20
    #: Seconds to wait for the closing handshake before dropping the TCP connection.
    close_timeout: float | None = 10

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "subprotocols", _strings("subprotocols", self.subprotocols))
        if self.memory_budget is not None:
            if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int):
                raise TypeError(
                    f"memory_budget must be a number of bytes or None, got {self.memory_budget!r}"
                )
            if self.memory_budget < 1:
                raise ValueError(f"memory_budget must be >= 1 byte, got {self.memory_budget}")
        check_select_subprotocol(self.select_subprotocol)
        _expect("require_subprotocol", self.require_subprotocol, bool, "True or False")
        _compression(self.compression)
        extensions = tuple(self.extensions or ())
        for factory in extensions:
            _expect("extensions", factory, ServerExtensionFactory, "ServerExtensionFactory items")
        set_(self, "extensions", extensions)
        if self.origins is not None:
            if isinstance(self.origins, str):
                raise TypeError("origins must be a list of origins, not a single str")
            origins = tuple(self.origins)
            for rule in origins:
                _expect("origins", rule, (str, re.Pattern, type(None)), "str, re.Pattern or None")
            set_(self, "origins", origins)
        versions = _strings("versions", self.versions)
        if not versions:
            raise ValueError("versions must list at least one version, e.g. ('13',)")
        set_(self, "versions", versions)
        if self.server_header is not None:
            _expect("server_header", self.server_header, str, "a str or None")
        if self.limits is not None:
            _expect("limits", self.limits, Limits, "a tether.Limits")
        for name in ("open_timeout", "ping_interval", "ping_timeout", "close_timeout"):
            _timeout(name, getattr(self, name))

    @property
    def extension_factories(self) -> list[ServerExtensionFactory]:
        """``extensions`` followed by what ``compression`` stands for."""
        return [*(self.extensions or ()), *server_extensions(self.compression)]

    def make_protocol(self, connection: Callable[[], Any]) -> ServerProtocol:
        """A fresh sans-I/O server protocol for one connection, delivering fragments.

        ``connection`` returns the I/O layer's connection: the sans-I/O layer calls its hook
        as ``(protocol, offered)``, and :attr:`select_subprotocol` gets ``(connection(),
        offered)`` instead (a callable, since the connection is built after its protocol).
        """
        hook = self.select_subprotocol
        select: SelectSubprotocol | None = None
        if hook is not None:

            def select(
                protocol: ServerProtocol, offered: Sequence[Subprotocol]
            ) -> Subprotocol | None:
                assert hook is not None
                return Subprotocol(choice) if (choice := hook(connection(), offered)) else None

        return ServerProtocol(
            subprotocols=self.subprotocols,
            select_subprotocol=select,
            require_subprotocol=self.require_subprotocol,
            extensions=self.extension_factories,
            origins=self.origins,
            versions=self.versions,
            server_header=self.server_header,
            limits=self.limits,
            assemble=False,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """The WebSocket options of a client, validated when built."""

    #: The ``Origin`` header (``None``: none).
    origin: str | None = None
    #: Subprotocols to offer, in order of preference.
    subprotocols: Sequence[str] | None = None
    #: Fail unless the server selects a subprotocol.
    require_subprotocol: bool = False
    #: ``"deflate"`` (default), a preset name, a ``DeflateSettings``, or ``None``.
    compression: Compression = "deflate"
    #: More extension factories, offered before ``compression``'s.
    extensions: Sequence[ClientExtensionFactory] | None = None
    #: More request headers: a mapping, a list of (name, value) pairs or ``Headers``.
    additional_headers: HeadersLike | None = None
    #: The ``User-Agent`` header (``None``: none).
    user_agent: str | None = DEFAULT_USER_AGENT
    #: Seconds for the TCP/TLS connection and the opening handshake, per attempt.
    open_timeout: float | None = 10
    #: How many 3xx redirects to follow.
    max_redirects: int = 10
    #: Seconds between keepalive pings (``None``: no keepalive).
    ping_interval: float | None = 20
    #: Seconds to wait for a pong before failing with 1011 (``None``: forever).
    ping_timeout: float | None = 20
    #: Seconds to wait for the closing handshake before dropping the TCP connection.
    close_timeout: float | None = 10
    #: Sizes and flow control: a :class:`~tether.limits.Limits`.
    limits: Limits | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.origin is not None:
            _expect("origin", self.origin, str, "a str or None")
        set_(self, "subprotocols", _strings("subprotocols", self.subprotocols))
        _expect("require_subprotocol", self.require_subprotocol, bool, "True or False")
        _compression(self.compression)
        extensions = tuple(self.extensions or ())
        for factory in extensions:
            _expect("extensions", factory, ClientExtensionFactory, "ClientExtensionFactory items")
        set_(self, "extensions", extensions)
        if self.additional_headers is not None:
            try:
                headers = tuple(check_additional_headers(self.additional_headers))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"additional_headers: {exc}") from None
            set_(self, "additional_headers", headers)
        if self.user_agent is not None:
            _expect("user_agent", self.user_agent, str, "a str or None")
        if isinstance(self.max_redirects, bool) or not isinstance(self.max_redirects, int):
            raise TypeError(f"max_redirects must be an int, got {self.max_redirects!r}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")
        if self.limits is not None:
            _expect("limits", self.limits, Limits, "a tether.Limits")
        for name in ("open_timeout", "ping_interval", "ping_timeout", "close_timeout"):
            _timeout(name, getattr(self, name))

    @property
    def extension_factories(self) -> list[ClientExtensionFactory]:
        """``extensions`` followed by what ``compression`` stands for."""
        return [*(self.extensions or ()), *client_extensions(self.compression)]

    def make_protocol(self, uri: WebSocketURI) -> ClientProtocol:
        """A fresh sans-I/O client protocol for one attempt to ``uri``, delivering fragments."""
        return ClientProtocol(
            uri,
            origin=self.origin,
            subprotocols=self.subprotocols,
            require_subprotocol=self.require_subprotocol,
            extensions=self.extension_factories,
            additional_headers=self.additional_headers,
            user_agent=self.user_agent,
            limits=self.limits,
            assemble=False,
        )


def pick(options: type[ServerOptions] | type[ClientOptions], values: Mapping[str, Any]) -> Any:
    """Build ``options`` from the entries of ``values`` that name one of its fields (a layer
    passes its ``locals()``, so each option is spelled once in its signature)."""
    names = {f.name for f in dataclasses.fields(options)}
    return options(**{k: v for k, v in values.items() if k in names})


# --- websockets' keywords ----------------------------------------------------------------

_LIMITS = "limits=Limits(...)"

#: Keywords of websockets' ``serve()``/``connect()`` (new and legacy asyncio API) that tether
#: spells differently, and what to write instead.
WEBSOCKETS_KEYWORDS: dict[str, str] = {
    "max_size": "limits=Limits(max_message_size=...) (and max_frame_size=... for one frame)",
    "max_queue": "limits=Limits(max_queue=...), a number of bytes rather than of messages",
    "read_limit": "limits=Limits(max_queue=...), a number of bytes",
    "write_limit": "limits=Limits(write_high_water=..., write_low_water=...)",
    "max_line": "limits=Limits(max_line_length=...)",
    "max_num_headers": "limits=Limits(max_header_count=...)",
    "max_body_size": "limits=Limits(max_body_size=...)",
    "user_agent_header": "user_agent=...",
    "extra_headers": "additional_headers=... on connect(); on a server, add headers to the "
    "response in process_response=",
    "create_protocol": "no equivalent: connection classes are not replaceable; use the "
    "handler and the process_request=/process_response= hooks",
    "create_connection": "no equivalent: connection classes are not replaceable; use the "
    "handler and the process_request=/process_response= hooks",
    "klass": "no equivalent: connection classes are not replaceable",
    "timeout": "close_timeout=...",
    "loop": "no equivalent: tether uses the running event loop",
    "legacy_recv": "no equivalent: recv() raises ConnectionClosed once closed",
    "ws_handler": "the handler, as the first positional argument",
    "start_serving": "no equivalent: the server starts listening when awaited or entered",
}


def check_unknown_keywords(where: str, unknown: Mapping[str, object]) -> None:
    """Raise ``TypeError`` for keywords that ``where`` does not take, naming tether's
    equivalent for websockets' spellings (layers call it with their ``**unknown`` catch-all,
    typed ``Never`` so that mypy flags them too)."""
    if not unknown:
        return
    messages = []
    for name in unknown:
        hint = WEBSOCKETS_KEYWORDS.get(name)
        if hint is not None:
            messages.append(f"{where}() got the websockets keyword {name!r}: in tether use {hint}")
        else:
            messages.append(f"{where}() got an unexpected keyword argument {name!r}")
    raise TypeError("; ".join(messages))
