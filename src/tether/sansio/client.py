"""The client role: build the request, check the response (RFC 6455 sections 4.1 and 4.2.2).

::

    client = ClientProtocol(parse_uri("ws://example.com/chat"), subprotocols=["soap", "wamp"])
    client.send_request(client.connect())
    writes = client.data_to_send()
    client.receive_data(bytes_from_network)
    events = client.events_received()   # the Response; client.handshake_exc says if it failed
"""

from __future__ import annotations

import base64
from collections.abc import Generator, Sequence

from ..exceptions import (
    ConnectionLostDuringHandshake,
    InvalidAccept,
    InvalidHandshake,
    InvalidHTTP,
    InvalidState,
    InvalidStatus,
    InvalidSubprotocol,
    InvalidUpgrade,
)
from ..extensions.base import ClientExtensionFactory
from ..limits import Limits
from ..typing import LoggerLike, Subprotocol
from ..version import __version__
from .handshake import (
    Handshake,
    accept_key,
    check_connection,
    generate_key,
    parse_subprotocols,
    process_extensions_response,
    single_value,
)
from .headers import (
    build_extension_list,
    build_token_list,
    parse_upgrade,
)
from .http11 import Headers, HeadersLike, Request, Response, normalize_headers
from .protocol import Protocol, Side, State
from .uri import WebSocketURI

__all__ = ["ClientProtocol", "HeadersLike", "check_additional_headers"]


def check_additional_headers(headers: HeadersLike | None) -> list[tuple[str, str]]:
    """The lines of a client's additional request headers, checked as
    :func:`~tether.sansio.http11.normalize_headers` does; ``Sec-WebSocket-*`` ones are refused
    too (the handshake sets them from options). ``ClientOptions`` calls it when built, so a bad
    header fails at the call rather than when connecting.

    Raises:
        TypeError: ``headers`` is not one of the accepted shapes.
        ValueError: a name or a value is invalid, or a name starts with ``Sec-WebSocket-``.
    """
    items = normalize_headers(headers)
    for name, _ in items:
        if name.lower().startswith("sec-websocket-"):
            raise ValueError(f"{name} is set by the handshake; pass it as an option")
    return items


class ClientProtocol(Protocol):
    """Sans-I/O WebSocket client connection.

    Args:
        uri: where to connect (``tether.sansio.uri.parse_uri``).
        origin: value of the ``Origin`` header, if any.
        subprotocols: subprotocols to offer, in order of preference.
        require_subprotocol: fail unless the server selects one (browsers behave so when the
            page asked for subprotocols).
        extensions: client extension factories, in order of preference.
        additional_headers: more request headers: a mapping, ``(name, value)`` pairs or
            ``Headers`` (``Sec-WebSocket-*`` ones are refused: they are options).
        user_agent: value of ``User-Agent``, ``None`` for none.
    """

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        require_subprotocol: bool = False,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = f"tether/{__version__}",
        state: State = State.CONNECTING,
        limits: Limits | None = None,
        assemble: bool = True,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(Side.CLIENT, state=state, limits=limits, assemble=assemble, logger=logger)
        self.uri = uri
        self.origin = origin
        self.subprotocols = [Subprotocol(s) for s in subprotocols or ()]
        self.require_subprotocol = require_subprotocol
        self.extension_factories = list(extensions or ())
        self.additional_headers = check_additional_headers(additional_headers)
        self.user_agent = user_agent
        self.key = generate_key()
        self.handshake = Handshake(
            offered_subprotocols=list(self.subprotocols),
            offered_extensions=[(f.name, f.get_request_params()) for f in self.extension_factories],
        )
        self._response_parser: Generator[None, None, Response] | None = None

    def connect(self) -> Request:
        """Build the opening handshake request (4.1), with a fresh key."""
        self.key = generate_key()
        headers = Headers()
        headers["Host"] = self.uri.host_header
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Key"] = self.key
        headers["Sec-WebSocket-Version"] = "13"
        if self.origin is not None:
            headers["Origin"] = self.origin
        if self.uri.user_info is not None:
            credentials = ":".join(self.uri.user_info).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        if self.handshake.offered_extensions:
            headers["Sec-WebSocket-Extensions"] = build_extension_list(
                self.handshake.offered_extensions
            )
        if self.subprotocols:
            headers["Sec-WebSocket-Protocol"] = build_token_list(self.subprotocols)
        if self.user_agent is not None and not any(
            name.lower() == "user-agent" for name, _ in self.additional_headers
        ):
            headers["User-Agent"] = self.user_agent
        for name, value in self.additional_headers:
            headers[name] = value
        return Request("GET", self.uri.resource_name, headers, path=self.uri.resource_name)

    def send_request(self, request: Request) -> None:
        """Write the request and start waiting for the response."""
        if self._state is not State.CONNECTING or self.request is not None:
            raise InvalidState("the request was already sent")
        self.request = request
        self.key = request.headers["Sec-WebSocket-Key"]
        if self.debug:
            self.logger.debug("> GET %s HTTP/1.1", request.target)
            for name, value in request.headers.items():
                self.logger.debug("> %s: %s", name, value)
        self._writes.append(request.serialize())
        self._response_parser = Response.parse(
            self.reader.read_line, self.reader.read_exact, self.reader.read_to_eof, self.limits
        )
        if self.reader.buffer or self.reader.eof:
            self._receive_handshake()

    def _receive_handshake(self) -> None:
        parser = self._response_parser
        if parser is None:
            return
        try:
            next(parser)
        except StopIteration as exc:
            self._response_parser = None
            self._process_response(exc.value)
        except InvalidHTTP as exc:
            self._response_parser = None
            self._handshake_failed(exc)
        except EOFError as exc:
            self._response_parser = None
            error = ConnectionLostDuringHandshake("server", self.reader.received)
            error.__cause__ = exc
            self._handshake_failed(error)

    def _handshake_failed(self, exc: Exception) -> None:
        self.handshake_exc = exc
        if self.debug:
            self.logger.debug("! handshake failed: %s", exc)
        self._end_failed_handshake()

    def _process_response(self, response: Response) -> None:
        self.response = response
        if self.debug:
            self.logger.debug("< HTTP/1.1 %d %s", response.status, response.reason)
            for name, value in response.headers.items():
                self.logger.debug("< %s: %s", name, value)
        try:
            self._check_response(response)
        except InvalidHandshake as exc:
            self._events.append(response)
            self._handshake_failed(exc)
            return
        self._events.append(response)
        self._open()

    def _check_response(self, response: Response) -> None:
        """4.2.2 item 5 and 4.1: "If the server's response does not conform ... the client
        MUST _Fail the WebSocket Connection_"."""
        if response.status != 101:
            raise InvalidStatus(response)
        headers = response.headers

        upgrade = parse_upgrade(headers.get_all("Upgrade"))
        if [p.lower() for p in upgrade] != ["websocket"]:
            value = ", ".join(headers.get_all("Upgrade")) or None
            raise InvalidUpgrade("Upgrade", value, "expected websocket")
        check_connection(headers)

        accept = single_value(headers, "Sec-WebSocket-Accept", InvalidAccept)
        expected = accept_key(self.key)
        if accept != expected:  # exact: base64 is case-sensitive
            raise InvalidAccept("Sec-WebSocket-Accept", accept, f"expected {expected}")

        self.extensions = process_extensions_response(
            headers, self.extension_factories, self.handshake
        )

        lines = headers.get_all("Sec-WebSocket-Protocol")
        selected = parse_subprotocols(headers)
        if len(lines) > 1 or len(selected) > 1:
            raise InvalidSubprotocol(
                "Sec-WebSocket-Protocol", ", ".join(lines), "more than one subprotocol"
            )
        if selected:
            subprotocol = selected[0]
            if subprotocol not in self.subprotocols:
                detail = (
                    f"not offered; offered: {', '.join(self.subprotocols)}"
                    if self.subprotocols
                    else "no subprotocol was offered"
                )
                raise InvalidSubprotocol("Sec-WebSocket-Protocol", subprotocol, detail)
            self.handshake.subprotocol = subprotocol
        elif lines:
            raise InvalidSubprotocol("Sec-WebSocket-Protocol", "", "empty")
        elif self.require_subprotocol:
            raise InvalidSubprotocol(
                "Sec-WebSocket-Protocol", None, "the server selected no subprotocol"
            )
