"""The server role: read the request, decide, answer (RFC 6455 section 4.2).

::

    server = ServerProtocol(subprotocols=["chat"], extensions=[ServerPerMessageDeflateFactory()])
    server.receive_data(bytes_from_network)
    for event in server.events_received():      # a Request
        response = server.accept(event)         # 101, or a rejection with a reason in its body
        server.send_response(response)
    writes = server.data_to_send()

Every rejection is a whole HTTP response: a status, ``Content-Type: text/plain`` and a one-line
reason that names the header and what was wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence

from ..exceptions import (
    ConnectionLostDuringHandshake,
    InvalidHandshake,
    InvalidHeader,
    InvalidHTTP,
    InvalidOrigin,
    InvalidRequest,
    InvalidState,
    InvalidSubprotocol,
    InvalidUpgrade,
)
from ..extensions.base import Extension, ServerExtensionFactory
from ..limits import Limits
from ..typing import LoggerLike, Subprotocol
from ..version import __version__
from .handshake import (
    SUPPORTED_VERSIONS,
    Handshake,
    accept_key,
    check_key,
    check_upgrade,
    check_version,
    negotiate_extensions,
    parse_subprotocols,
    select_subprotocol,
    single_value,
)
from .headers import parse_extension_list
from .http11 import Headers, HeadersLike, Request, Response, normalize_headers, reason_phrase
from .protocol import Protocol, Side, State

__all__ = ["OriginRule", "SelectSubprotocol", "ServerProtocol"]

#: A hook that replaces the subprotocol policy: ``(protocol, client's offers) -> choice``; the
#: server's own list is ``protocol.subprotocols`` (websockets' argument order).
SelectSubprotocol = Callable[["ServerProtocol", Sequence[Subprotocol]], Subprotocol | None]

#: An allowed origin: an exact value, a compiled pattern that must match the whole value, or
#: ``None`` to allow requests without an ``Origin`` header (clients that are not browsers).
OriginRule = str | re.Pattern[str] | None

#: The content type of rejections and of ``reject()``'s default.
PLAIN_TEXT = "text/plain; charset=utf-8"

_HOST = re.compile(r"[^\s,/?#@]+")

# A request line starts with a method, a token (RFC 9110 5.6.2: tchar).
_METHOD_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class ServerProtocol(Protocol):
    """Sans-I/O WebSocket server connection.

    Args:
        subprotocols: the subprotocols the server supports, in its order of preference.
        select_subprotocol: ``(protocol, offered) -> choice`` replaces the default policy (the
            first of the client's list that the server supports); it must return one of the
            offered values or ``None``.
        require_subprotocol: reject with 400 when no subprotocol is agreed.
        extensions: extension factories, e.g. ``[ServerPerMessageDeflateFactory()]``.
        origins: an allow-list for ``Origin`` (``None``: any origin); a request whose origin
            is not allowed gets 403.
        versions: the versions the server speaks and advertises on a version error.
        server_header: value of the ``Server`` header, ``None`` to send none.
    """

    __slots__ = (
        "_first_byte_checked",
        "_pending_extensions",
        "_request_parser",
        "extension_factories",
        "origins",
        "require_subprotocol",
        "select_subprotocol_hook",
        "server_header",
        "subprotocols",
        "versions",
    )

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        require_subprotocol: bool = False,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        origins: Sequence[OriginRule] | None = None,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        server_header: str | None = f"tether/{__version__}",
        state: State = State.CONNECTING,
        limits: Limits | None = None,
        assemble: bool = True,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(Side.SERVER, state=state, limits=limits, assemble=assemble, logger=logger)
        self.subprotocols = [Subprotocol(s) for s in subprotocols or ()]
        self.select_subprotocol_hook = select_subprotocol
        self.require_subprotocol = require_subprotocol
        self.extension_factories = list(extensions or ())
        self.origins = None if origins is None else list(origins)
        self.versions = tuple(versions)
        self.server_header = server_header
        self._pending_extensions: list[Extension] = []
        self._first_byte_checked = False
        # The line-by-line parser, made only if the head does not come whole (parse_whole).
        self._request_parser: Generator[None, None, Request] | None = None

    # --- reading the request ------------------------------------------------------------------

    def _receive_handshake(self) -> None:
        parser = self._request_parser
        try:
            if parser is None:
                if self._first_byte_checked:
                    return  # the request is in; bytes after it wait for the decision
                buffer = self.reader.buffer
                if not buffer and not self.reader.eof:
                    return
                self._first_byte_checked = True
                if buffer:
                    first = buffer[0]
                    if first not in _METHOD_START:
                        # Not HTTP at all: most often TLS sent to a plain-text port (0x16
                        # starts a TLS handshake record). Answer now, not at the line limit.
                        hint = " (TLS sent to a plain-text port?)" if first == 0x16 else ""
                        raise InvalidHTTP(f"not HTTP{hint}", 400)
                    # The first bytes often hold the whole head: take it in one pass.
                    # Anything else (an incomplete head, an error) goes line by line.
                    whole = Request.parse_whole(buffer, self.limits)
                    if whole is not None:
                        self._request_received(whole)
                        return
                parser = self._request_parser = Request.parse(self.reader.read_line, self.limits)
            next(parser)
        except StopIteration as exc:
            self._request_received(exc.value)
        except InvalidHTTP as exc:
            self._request_parser = None
            self.handshake_exc = exc
            self.logger.info("! invalid HTTP request: %s", exc)
            self.send_response(self.reject(exc.status, f"Invalid HTTP request: {exc}."))
        except EOFError as exc:
            self._request_parser = None
            self.handshake_exc = ConnectionLostDuringHandshake("client", self.reader.received)
            self.handshake_exc.__cause__ = exc

    def _request_received(self, request: Request) -> None:
        self._request_parser = None
        self.request = request
        if self.debug:
            self.logger.debug("< %s %s HTTP/1.1", request.method, request.target)
            for name, value in request.headers.items():
                self.logger.debug("< %s: %s", name, value)
        self._events.append(request)

    # --- deciding -----------------------------------------------------------------------------

    def accept(self, request: Request) -> Response:
        """Check the request and build the response: 101 if it can upgrade, else a rejection.

        On rejection the reason is kept in ``handshake_exc`` and written in the body.
        """
        try:
            headers = self._check_request(request)
        except InvalidHandshake as exc:
            self.handshake_exc = exc
            if self.debug:
                self.logger.debug("! handshake refused: %s", exc)
            return self.reject(
                exc.status, f"Failed to open a WebSocket connection: {exc}.", exc.extra_headers
            )
        return Response(101, reason_phrase(101), headers)

    def _check_request(self, request: Request) -> Headers:
        headers = request.headers
        record = self.handshake = Handshake()

        # A request that does not ask for WebSocket at all: 426 tells it what to ask for.
        try:
            check_upgrade(headers)
        except InvalidUpgrade as exc:
            if exc.name == "Upgrade":
                raise _NotWebSocket(str(exc)) from None
            raise
        if request.method != "GET":
            raise _MethodNotAllowed(f"method {request.method} cannot upgrade; use GET")
        self._check_host(headers)
        if headers.get("Transfer-Encoding") is not None or headers.get(
            "Content-Length", "0"
        ) not in ("0",):
            raise InvalidRequest("a WebSocket upgrade request must not have a body")

        record.version = check_version(headers, self.versions)
        key = check_key(headers)
        self._check_origin(headers)

        # Extensions: a header that breaks the grammar is a bad request; an offer with bad
        # parameters is only declined.
        values = headers.get_all("Sec-WebSocket-Extensions")
        offers = parse_extension_list(values) if values else []
        record.offered_extensions = offers
        extensions_header, extensions = negotiate_extensions(
            offers, self.extension_factories, record
        )

        record.offered_subprotocols = parse_subprotocols(headers)
        subprotocol = self._select_subprotocol(record.offered_subprotocols)
        record.subprotocol = subprotocol

        response = Headers()
        response["Upgrade"] = "websocket"
        response["Connection"] = "Upgrade"
        response["Sec-WebSocket-Accept"] = accept_key(key)
        if subprotocol is not None:
            response["Sec-WebSocket-Protocol"] = subprotocol
        if extensions_header is not None:
            response["Sec-WebSocket-Extensions"] = extensions_header
        if self.server_header is not None:
            response["Server"] = self.server_header
        self._pending_extensions = extensions
        return response

    def _check_host(self, headers: Headers) -> None:
        host = single_value(headers, "Host")
        if not _HOST.fullmatch(host):
            raise InvalidHeader("Host", host, "not a host")

    def _check_origin(self, headers: Headers) -> None:
        values = headers.get_all("Origin")
        if len(values) > 1:
            raise InvalidHeader("Origin", ", ".join(values), "more than one header line")
        if self.origins is None:
            return
        origin = values[0] if values else None
        for rule in self.origins:
            if rule is None:
                if origin is None:
                    return
            elif origin is None:
                continue
            elif isinstance(rule, str):
                if origin == rule:
                    return
            elif rule.fullmatch(origin):
                return
        if origin is None:
            raise InvalidOrigin("Origin", None, "an Origin header is required")
        raise InvalidOrigin("Origin", origin, "origin not allowed")

    def _select_subprotocol(self, offered: list[Subprotocol]) -> Subprotocol | None:
        if self.select_subprotocol_hook is not None:
            choice = self.select_subprotocol_hook(self, offered)
            if choice is not None and choice not in offered:
                self.logger.error("! subprotocol hook chose %r, which was not offered", choice)
                raise _ServerError("internal server error")
        else:
            choice = select_subprotocol(offered, self.subprotocols)
        if choice is None and self.require_subprotocol:
            if offered:
                detail = f"none supported; supported: {', '.join(self.subprotocols) or 'none'}"
                value = ", ".join(offered)
            else:
                detail = "a subprotocol is required"
                value = None
            raise InvalidSubprotocol("Sec-WebSocket-Protocol", value, detail)
        return choice

    def reject(
        self,
        status: int,
        text: str | bytes,
        headers: HeadersLike | None = None,
        *,
        content_type: str = PLAIN_TEXT,
    ) -> Response:
        """A complete HTTP response (not an upgrade): ``status`` with its reason phrase,
        ``Content-Type`` and ``Content-Length``, the ``Server`` header, ``headers``, and
        ``Connection: close`` unless ``headers`` says otherwise.

        ``text`` is the body: a ``str`` is encoded in UTF-8, and as plain text (the default
        ``content_type``) it is one line that gets a final newline.
        """
        if isinstance(text, str):
            if content_type == PLAIN_TEXT:
                text = text.rstrip("\n") + "\n"
            body = text.encode()
        else:
            body = bytes(text)
        response_headers = Headers()
        if self.server_header is not None:
            response_headers["Server"] = self.server_header
        response_headers["Content-Type"] = content_type
        response_headers["Content-Length"] = str(len(body))
        for name, value in normalize_headers(headers):
            response_headers[name] = value
        if "Connection" not in response_headers:
            response_headers["Connection"] = "close"
        return Response(status, reason_phrase(status), response_headers, body)

    # --- answering ----------------------------------------------------------------------------

    def send_response(self, response: Response) -> None:
        """Write the response. A 101 opens the connection; anything else ends it."""
        if self._state is not State.CONNECTING:
            raise InvalidState(f"connection is {self._state.name}")
        self.response = response
        if self.debug:
            self.logger.debug("> HTTP/1.1 %d %s", response.status, response.reason)
            for name, value in response.headers.items():
                self.logger.debug("> %s: %s", name, value)
        self._writes.append(response.serialize())
        if response.status == 101:
            self.extensions = self._pending_extensions
            # Kept for the connection's life: as text until someone looks (see Headers).
            if self.request is not None:
                self.request.headers._compact()
            response.headers._compact()
            self._open()
        else:
            if self.handshake_exc is None and response.status >= 400:
                self.handshake_exc = InvalidRequest(
                    f"rejected with HTTP {response.status}", response.status
                )
            self._end_failed_handshake()


class _NotWebSocket(InvalidRequest):
    """A plain HTTP request: 426 with ``Upgrade: websocket`` (RFC 9110 15.5.22)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 426)

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Upgrade", "websocket"), ("Connection", "Upgrade, close")]


class _MethodNotAllowed(InvalidRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, 405)

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return [("Allow", "GET")]


class _ServerError(InvalidRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, 500)
