"""Every exception tether defines, in one tree.

::

    TetherError
    ├── InvalidHandshake                  the opening handshake failed
    │   ├── InvalidHTTP                   the HTTP head could not be parsed (400, 431, 505)
    │   ├── InvalidHeader                 a header is missing, repeated or has a bad value
    │   │   ├── InvalidHeaderFormat       a header does not follow its grammar
    │   │   ├── InvalidUpgrade            Upgrade / Connection lack "websocket" / "upgrade"
    │   │   ├── InvalidVersion            Sec-WebSocket-Version (426 or 400)
    │   │   ├── InvalidKey                Sec-WebSocket-Key is not base64 of 16 bytes
    │   │   ├── InvalidAccept             Sec-WebSocket-Accept does not match the key
    │   │   ├── InvalidOrigin             Origin is not allowed (403)
    │   │   ├── InvalidSubprotocol        subprotocol not offered, or none agreed
    │   │   └── InvalidExtension          an extension was not offered or its parameters are wrong
    │   ├── InvalidStatus                 the server did not answer 101 (client side)
    │   ├── InvalidRedirect               too many redirects, or one from wss:// to ws://
    │   ├── InvalidRequest                the request cannot upgrade (method, no Upgrade)
    │   ├── ConnectionLostDuringHandshake the peer closed before a complete request/response
    │   └── NegotiationError              an extension factory declines an offer or a response
    │       ├── DuplicateParameter
    │       ├── InvalidParameterName
    │       └── InvalidParameterValue
    ├── InvalidURI                        not a ws:// or wss:// URI (also a ValueError)
    ├── InvalidProxy                      a proxy refused the tunnel or broke its protocol
    ├── InvalidUnixPath                   a Unix socket path is unusable (also a ValueError)
    ├── MultipleValuesError               headers[name] on a repeated header (also a KeyError)
    ├── LineTooLong                       a line over the reader's limit (the HTTP parser
    │                                     turns it into InvalidHTTP 431; never escapes)
    ├── ProtocolError                     the peer broke RFC 6455 / RFC 7692 (close code 1002)
    ├── PayloadTooBig                     a frame or message is over a limit (close code 1009)
    ├── ConnectionFailed (also OSError)   connect() could not open the TCP/TLS connection
    ├── OpenTimeout (also TimeoutError)   connect() or the handshake took over open_timeout
    ├── InvalidState                      API misuse: not allowed in this state
    ├── ConcurrencyError                  API misuse: two coroutines read or write at once
    ├── ConnectionClosed                  the connection is closed
    │   ├── ConnectionClosedOK            with 1000, 1001 or 1005
    │   └── ConnectionClosedError         with any other code, or without a close frame
    ├── ClientDisconnected                ASGI: send() after the client left (also an OSError)
    └── HubError                          publish/subscribe (tether.hub)
        ├── HubUnavailable                the backend (Redis) is unreachable or failed a command
        ├── InvalidChannel                a channel name breaks the naming rules
        └── MessageTooBig                 a message to publish is over the hub's limit

Exceptions live here, with two kinds of exception to that rule: private refinements that only
choose the answer's status (``sansio/server.py`` raises ``_MethodNotAllowed`` (405),
``_NotWebSocket`` (426) and ``_ServerError`` (500), all caught as :class:`InvalidRequest`), and
``CannotConnect``, internal to ``tether inspect``.

Peer misbehaviour (``ProtocolError``, ``PayloadTooBig``, ``UnicodeDecodeError``) is turned
into a close code at one place, :meth:`tether.sansio.protocol.Protocol.receive_data`. API misuse
(``InvalidState``, ``ConcurrencyError``) is raised to the caller and never closes the connection.

Handshake errors carry the header name and value and print in plain words, for example
``invalid Sec-WebSocket-Version header: 8 (unsupported version; supported: 13)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # For annotations only: this module imports nothing from tether at run time (it is a leaf
    # of the layering, see tests/test_layering.py).
    from .sansio.frames import Close
    from .sansio.http11 import Response

__all__ = [
    "ClientDisconnected",
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionFailed",
    "ConnectionLostDuringHandshake",
    "DuplicateParameter",
    "HubError",
    "HubUnavailable",
    "InvalidAccept",
    "InvalidChannel",
    "InvalidExtension",
    "InvalidHTTP",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidKey",
    "InvalidOrigin",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidProxy",
    "InvalidRedirect",
    "InvalidRequest",
    "InvalidState",
    "InvalidStatus",
    "InvalidSubprotocol",
    "InvalidURI",
    "InvalidUnixPath",
    "InvalidUpgrade",
    "InvalidVersion",
    "LineTooLong",
    "MessageTooBig",
    "MultipleValuesError",
    "NegotiationError",
    "OpenTimeout",
    "PayloadTooBig",
    "ProtocolError",
    "TetherError",
]


# CloseCode.ABNORMAL_CLOSURE (sansio/codes.py), repeated here so that this module stays a leaf.
ABNORMAL_CLOSURE = 1006


class TetherError(Exception):
    """Base class of every exception tether raises on purpose."""


# --- opening handshake -------------------------------------------------------------------------


class InvalidHandshake(TetherError):
    """The opening handshake failed.

    ``status`` is the HTTP status a server answers with when it rejects a request for this
    reason; ``extra_headers`` are the headers that answer must carry (for example
    ``Sec-WebSocket-Version: 13`` with a 426).
    """

    status: int = 400

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return []


class InvalidHTTP(InvalidHandshake):
    """The HTTP request or response head could not be parsed.

    ``status`` is 400 for malformed input, 431 when a named limit is exceeded and 505 for an
    unsupported HTTP version.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return self.reason


class InvalidHeader(InvalidHandshake):
    """A header is missing, repeated, or has a value that is not acceptable.

    ``value`` is ``None`` when the header is missing; ``detail`` says what was wrong.
    """

    def __init__(self, name: str, value: str | None = None, detail: str = "") -> None:
        super().__init__(name, value, detail)
        self.name = name
        self.value = value
        self.detail = detail

    def __str__(self) -> str:
        if self.value is None:
            text = f"missing {self.name} header"
        elif self.value == "":
            text = f"empty {self.name} header"
        else:
            text = f"invalid {self.name} header: {self.value}"
        if self.detail:
            text += f" ({self.detail})"
        return text


class InvalidHeaderFormat(InvalidHeader):
    """A header value does not follow its grammar; ``pos`` is where parsing stopped."""

    def __init__(self, name: str, value: str, error: str, pos: int) -> None:
        super().__init__(name, value, f"{error} at {pos}")
        self.error = error
        self.pos = pos


class InvalidUpgrade(InvalidHeader):
    """``Upgrade`` lacks ``websocket`` or ``Connection`` lacks ``upgrade``."""


class InvalidVersion(InvalidHeader):
    """``Sec-WebSocket-Version`` is missing, repeated, malformed or unsupported.

    An unsupported but well-formed version is answered with 426, anything else with 400; both
    carry ``Sec-WebSocket-Version`` listing ``supported``.
    """

    def __init__(
        self,
        value: str | None,
        detail: str,
        *,
        supported: tuple[str, ...] = ("13",),
        unsupported: bool = False,
    ) -> None:
        super().__init__("Sec-WebSocket-Version", value, detail)
        self.supported = supported
        self.status = 426 if unsupported else 400

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Sec-WebSocket-Version", ", ".join(self.supported))]


class InvalidKey(InvalidHeader):
    """``Sec-WebSocket-Key`` is missing, repeated, or not the base64 encoding of 16 bytes."""


class InvalidAccept(InvalidHeader):
    """``Sec-WebSocket-Accept`` does not match the key the client sent."""


class InvalidOrigin(InvalidHeader):
    """The ``Origin`` header is missing or not in the server's allow-list (403)."""

    status = 403


class InvalidSubprotocol(InvalidHeader):
    """The subprotocol is one the client did not offer, or none was agreed but one is required."""


class InvalidExtension(InvalidHeader):
    """An accepted extension was not offered, or its parameters do not fit the offer."""


class InvalidRequest(InvalidHandshake):
    """The request is valid HTTP but cannot be upgraded (wrong method, no upgrade headers)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return self.reason


class InvalidStatus(InvalidHandshake):
    """The server answered the handshake with something other than 101.

    The whole response is kept: ``response.status``, ``response.headers``, ``response.body``.
    ``location`` is the redirect target of a 3xx, ``supported_versions`` the versions a 426 or
    400 listed in ``Sec-WebSocket-Version``.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(response)
        self.response = response

    @property
    def location(self) -> str | None:
        if 300 <= self.response.status < 400:
            return self.response.headers.get("Location")
        return None

    @property
    def supported_versions(self) -> list[str]:
        values = self.response.headers.get_all("Sec-WebSocket-Version")
        return [v.strip() for value in values for v in value.split(",") if v.strip()]

    def __str__(self) -> str:
        response = self.response
        text = f"server rejected WebSocket connection: HTTP {response.status}"
        if response.reason:
            text += f" {response.reason}"
        if self.location is not None:
            text += f", redirect to {self.location}"
        versions = self.supported_versions
        if versions:
            text += f", server supports version {', '.join(versions)}"
        body = response.body[:200].decode("utf-8", "replace").strip()
        if body:
            text += f": {body.splitlines()[0] if body.splitlines() else body}"
        return text


class InvalidRedirect(InvalidHandshake):
    """Too many redirects, or a redirect that would drop TLS (``wss://`` to ``ws://``).

    ``response`` is the redirect that was refused, or ``None`` when the limit was reached.
    """

    def __init__(self, response: Response | None, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class ConnectionLostDuringHandshake(InvalidHandshake):
    """The peer closed the connection before sending a complete HTTP request or response.

    ``peer`` is ``"client"`` or ``"server"``; ``received`` counts the bytes it sent before it
    went away. When the HTTP parser ran out of input, the :class:`EOFError` it raised is the
    ``__cause__``. Nothing can be answered: the connection is gone. Retry, or check that the
    peer speaks HTTP/1.1 WebSocket on this port (a TLS server reached with ``ws://`` does this).
    """

    def __init__(self, peer: str, received: int) -> None:
        super().__init__(peer, received)
        self.peer = peer
        self.received = received

    def __str__(self) -> str:
        what = "response" if self.peer == "server" else "request"
        unit = "byte" if self.received == 1 else "bytes"
        return (
            f"the {self.peer} closed the connection before sending a complete HTTP {what} "
            f"({self.received} {unit} received)"
        )


class NegotiationError(InvalidHandshake):
    """An extension factory declines an offer (server) or an answer (client)."""


class DuplicateParameter(NegotiationError):
    """A parameter appears twice in one extension offer or answer."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"duplicate parameter: {self.name}"


class InvalidParameterName(NegotiationError):
    """A parameter is unknown to the extension."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"invalid parameter name: {self.name}"


class InvalidParameterValue(NegotiationError):
    """A known parameter has a value that is not allowed."""

    def __init__(self, name: str, value: str | None) -> None:
        super().__init__(name, value)
        self.name = name
        self.value = value

    def __str__(self) -> str:
        if self.value is None:
            return f"missing value for parameter {self.name}"
        return f"invalid value for parameter {self.name}: {self.value}"


# --- URIs and HTTP parsing ----------------------------------------------------------------------


class InvalidURI(TetherError, ValueError):
    """The string is not a ``ws://`` or ``wss://`` URI; ``reason`` says what is wrong with it."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(uri, reason)
        self.uri = uri
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.uri} isn't a valid WebSocket URI: {self.reason}"


class MultipleValuesError(TetherError, KeyError):
    """``headers[name]`` was used for a header that appears more than once.

    Use ``headers.get_all(name)`` for a header that may be repeated.
    """

    def __str__(self) -> str:
        return f"multiple values for header {self.args[0]}" if self.args else "multiple values"


class LineTooLong(TetherError):
    """A line is longer than the limit given to ``StreamReader.read_line``.

    The HTTP parser turns it into :class:`InvalidHTTP` (431) naming the limit; it does not
    reach the user.
    """


# --- frames and connection ---------------------------------------------------------------------


class ProtocolError(TetherError):
    """The peer broke the protocol. Failing the connection sends close code 1002."""


class PayloadTooBig(TetherError):
    """A frame or a message is larger than a limit. Failing the connection sends 1009."""


class ConnectionFailed(TetherError, OSError):
    """``connect()`` could not open the connection (refused, unreachable, DNS, TLS...).

    An ``OSError`` too, with the ``errno`` of the failure, so ``except OSError`` keeps working;
    the original exception is the ``__cause__``.
    """


#: connection_failed()'s classes, one per OSError class met.
_failed_classes: dict[type[OSError], type[ConnectionFailed]] = {}


def connection_failed(exc: OSError, what: str) -> ConnectionFailed:
    """A :class:`ConnectionFailed` that is also an instance of ``exc``'s class, so that
    ``except ConnectionRefusedError`` (or ``ssl.SSLError``) keeps working; each I/O layer's
    ``connect()`` raises it ``from exc`` when opening the socket or TLS fails. ``what`` says
    what failed (``could not connect to host:port``)."""
    cls = _failed_classes.get(type(exc))
    if cls is None:
        try:
            cls = type("ConnectionFailed", (ConnectionFailed, type(exc)), {})
            cls.__module__ = ConnectionFailed.__module__
        except TypeError:  # an OSError subclass that cannot be combined
            cls = ConnectionFailed
        _failed_classes[type(exc)] = cls
    detail = f"{exc.strerror or exc} ({type(exc).__name__})"
    if exc.errno is None:
        return cls(f"{what}: {detail}")
    return cls(exc.errno, f"{what}: {detail}")


class OpenTimeout(TetherError, TimeoutError):
    """``connect()`` did not open the connection and finish the handshake within
    ``open_timeout`` (a ``TimeoutError`` too)."""


class InvalidState(TetherError, AssertionError):
    """An operation is not allowed in the connection's current state (API misuse)."""


class ConcurrencyError(TetherError, RuntimeError):
    """Two coroutines called ``recv()`` at once, or a similar misuse of the API."""


class ConnectionClosed(TetherError):
    """The connection is closed; ``rcvd`` and ``sent`` are the close frames, if any.

    ``rcvd_then_sent`` tells who closed first: ``True`` when the peer did, ``False`` when we
    did, ``None`` when not both frames were exchanged.
    """

    def __init__(
        self,
        rcvd: Close | None,
        sent: Close | None,
        rcvd_then_sent: bool | None = None,
    ) -> None:
        super().__init__(rcvd, sent, rcvd_then_sent)
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent

    @property
    def code(self) -> int:
        """The close code received, or 1006 (abnormal closure) when none was."""
        if self.rcvd is None:
            return ABNORMAL_CLOSURE
        return self.rcvd.code

    @property
    def reason(self) -> str:
        return "" if self.rcvd is None else self.rcvd.reason

    def __str__(self) -> str:
        if self.rcvd is None:
            if self.sent is None:
                return "no close frame received or sent"
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {self.rcvd}; then sent {self.sent}"
        return f"sent {self.sent}; then received {self.rcvd}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally: 1000, 1001 or 1005 (no code) both ways."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or without a close handshake."""


# --- client transports: proxies and Unix sockets --------------------------------------------


class InvalidProxy(TetherError):
    """A proxy refused to open the tunnel, or answered something that is not its protocol.

    ``proxy`` is the proxy URL without its password; ``reason`` says what happened (the HTTP
    status of a ``CONNECT``, or the SOCKS5 reply). ``retryable`` is true when the proxy
    reports that the target could not be reached (HTTP 500/502/503/504, SOCKS5 replies 1, 3, 4,
    5, 6), so that a reconnecting client tries again later; a refusal (HTTP 403, 407, SOCKS5
    authentication failure or "not allowed by ruleset") is not retried.
    """

    def __init__(self, proxy: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(proxy, reason)
        self.proxy = proxy
        self.reason = reason
        self.retryable = retryable

    def __str__(self) -> str:
        return f"proxy {self.proxy} failed: {self.reason}"


class InvalidUnixPath(TetherError, ValueError):
    """A Unix socket path cannot be used: too long for ``sun_path``, or not a socket."""


class ClientDisconnected(TetherError, OSError):
    """ASGI (:mod:`tether.asgi`): the application sent a message to a WebSocket whose client
    has closed it or gone away. It is an ``OSError`` because the ASGI spec asks servers to raise
    one; frameworks turn it into their own disconnect exception (Starlette's
    ``WebSocketDisconnect``). Stop sending: the application's next ``receive()`` returns the
    ``websocket.disconnect`` message with the close code."""


# --- publish/subscribe (tether.hub) ------------------------------------------------------------


class HubError(TetherError):
    """A publish/subscribe operation of :class:`tether.hub.Hub` failed."""


class HubUnavailable(HubError):
    """The hub's backend could not do what was asked: Redis is unreachable, or a command failed.

    ``command`` names the backend command that failed (``"XADD tether:{chat}:s on redis://..."``);
    ``reason`` is what the backend said. A publish that raises this was not confirmed: almost
    always it was not stored and nobody will receive it; only if the connection broke after
    Redis ran the command was it stored. A caller that retries gets at-least-once delivery (the
    hub reconnects by itself, with backoff).
    """

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(command, reason)
        self.command = command
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"hub backend failed on {self.command}: {self.reason}; the message was not "
            "confirmed as published (retry later: the hub reconnects by itself)"
        )


class InvalidChannel(HubError, ValueError):
    """A channel name is empty, too long, or has characters outside ``[A-Za-z0-9_.:-]``."""


class MessageTooBig(HubError, ValueError):
    """A message to publish is longer than the hub's ``max_message_size``."""
