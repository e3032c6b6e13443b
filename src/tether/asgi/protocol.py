"""``UvicornProtocol``: uvicorn's WebSocket protocol class, on tether's sans-I/O server.

How uvicorn uses it: its HTTP protocol (h11 or httptools) parses a request that asks to upgrade,
builds this class with ``(config, server_state, app_state)``, calls ``connection_made`` with
its transport, hands the transport over (``set_protocol``) and calls ``data_received`` with the
request head re-serialized. From there this class owns the connection (the transport reads
through ``get_buffer``/``buffer_updated``: into one buffer per thread, and the rest of a large
frame straight into its payload):

- the request goes through :class:`~tether.sansio.server.ServerProtocol`, so a request tether
  refuses gets tether's answer (400/426/431 with a reason in the body) without the application
  being called; otherwise the application runs with the ``websocket`` scope (ASGI spec 2.4);
- ``websocket.accept`` sends the 101 (subprotocol, extra headers, uvicorn's ``Server`` and
  ``Date`` headers); ``websocket.close`` before it sends 403; ``websocket.http.response.*``
  sends the application's own denial response;
- messages flow through the sans-I/O protocol: UTF-8, sizes (``ws_max_size``: 1009),
  permessage-deflate (``ws_per_message_deflate``), the close handshake, keepalive pings
  (``ws_ping_interval``/``ws_ping_timeout``: 1011 "keepalive ping timeout").

What uvicorn's test suite fixes as the contract, and this class follows: an application that
fails or returns after accepting loses its TCP connection without a close frame (the client
sees 1006); a server shutdown sends 1012 to open connections and 500 to handshakes the
application has not answered; the application's close waits for the client's close frame up
to ``close_timeout`` seconds.

Flow control. Reading: at most ``ws_max_queue`` messages wait for ``receive()`` (a message
handed straight to a waiting ``receive()`` does not count). The transport stops reading while
any message waits (uvicorn's contract: its test suite checks it after one message), and the
sans-I/O parser stops once the queue is full (its message budget, see
:meth:`~tether.sansio.protocol.Protocol.set_message_budget`), keeping the rest of that read
unparsed. Each ``receive()`` parses on (one more message, from what was read), and reading
resumes once the queue is empty. What waits is thus at most ``ws_max_queue`` messages of at
most ``ws_max_size`` bytes each, plus the unparsed rest of one read. Writing: ``send()``
waits while the transport is above its high water mark (``pause_writing``/``resume_writing``),
and meanwhile only the latest ping is answered (when writing resumes), so pings cannot grow
the write buffer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias
from urllib.parse import unquote

from ..exceptions import ClientDisconnected
from ..extensions.base import ServerExtensionFactory
from ..limits import Limits
from ..options import server_extensions
from ..pings import answered_pings, ping_payload
from ..reads import read_buffer, take_read
from ..sansio.events import BinaryMessage, CloseReceived, Pong, TextMessage
from ..sansio.http11 import Headers, Request, Response, reason_phrase
from ..sansio.protocol import Event, State
from ..sansio.server import ServerProtocol
from ..typing import Subprotocol

__all__ = ["UvicornProtocol"]

Message: TypeAlias = dict[str, Any]
ASGIApp: TypeAlias = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[Any],
]

#: uvicorn's TRACE level (below DEBUG), for "connection made/lost" lines.
TRACE = 5

_INTERNAL_ERROR = b"Internal Server Error"

#: A large payload's first bytes, written with its frame header (see ``_send_data``).
_FIRST_WRITE = 65536


class _Config(Protocol):
    """What this class reads from ``uvicorn.config.Config`` (uvicorn is never imported)."""

    loaded: bool
    root_path: str
    asgi_version: str
    ws_max_size: int
    ws_max_queue: int | None
    ws_ping_interval: float | None
    ws_ping_timeout: float | None
    ws_per_message_deflate: bool

    @property
    def loaded_app(self) -> Any: ...

    def load(self) -> None: ...


class _ServerState(Protocol):
    """What this class reads from ``uvicorn.server.ServerState``."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]
    default_headers: list[tuple[bytes, bytes]]


class _Options:
    """The sans-I/O options derived from one uvicorn ``Config``, shared by its connections."""

    __slots__ = ("extensions", "limits")

    def __init__(self, limits: Limits, extensions: list[ServerExtensionFactory]) -> None:
        self.limits = limits
        self.extensions = extensions


_options_cache: weakref.WeakKeyDictionary[Any, _Options] = weakref.WeakKeyDictionary()


def _server_protocol(config: _Config, logger: logging.Logger) -> ServerProtocol:
    """The sans-I/O server for one connection, built from uvicorn's settings.

    The one place where uvicorn's options become tether's: ``ws_max_size`` is the message and
    frame limit, ``ws_per_message_deflate`` is ``compression="deflate"`` (tether's "balanced"
    preset: 12-bit windows, memLevel 5, the values uvicorn uses with websockets). The ``Server``
    header comes from uvicorn's default headers instead of tether's.
    """
    options = _options_cache.get(config)
    if options is None:
        size = config.ws_max_size
        limits = Limits(max_message_size=size, max_frame_size=size)
        compression = "deflate" if config.ws_per_message_deflate else None
        options = _options_cache[config] = _Options(limits, server_extensions(compression))
    protocol = ServerProtocol(
        extensions=options.extensions,
        server_header=None,
        limits=options.limits,
        logger=logger,
    )
    return protocol


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


# The phases of the ASGI conversation (the WebSocket state itself is the sans-I/O protocol's).
_REQUEST = 0  # waiting for the request head
_HANDSHAKE = 1  # the application has the request and must accept, close or deny
_DENYING = 2  # websocket.http.response.start received, body being collected
_ACCEPTED = 3  # 101 sent
_DONE = 4  # the application closed, or the handshake ended without a WebSocket


class UvicornProtocol(asyncio.BufferedProtocol):
    """A uvicorn WebSocket protocol class (``--ws tether.asgi:UvicornProtocol``).

    Args:
        config: uvicorn's ``Config``: the app, ``root_path``, ``ws_max_size``,
            ``ws_max_queue`` (see :attr:`queue_size`), ``ws_ping_interval``,
            ``ws_ping_timeout``, ``ws_per_message_deflate``.
        server_state: uvicorn's ``ServerState``: the connection registers itself in
            ``connections`` and its application task in ``tasks``; ``default_headers``
            (``Server``, ``Date``) go on every response.
        app_state: the lifespan state, copied into each scope's ``state``.
    """

    #: Seconds to wait for the client's close frame after the application (or a shutdown)
    #: closed, before closing the TCP connection anyway.
    close_timeout: float = 10.0
    #: Seconds the application has to answer the handshake (accept, close or deny) before
    #: the client gets a 500 and the application ``websocket.disconnect``; ``None``: no limit.
    #: uvicorn has no setting for it: subclass to change it.
    open_timeout: float | None = 10.0

    def __init__(
        self,
        config: _Config,
        server_state: _ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app: ASGIApp = config.loaded_app
        self.loop = _loop if _loop is not None else asyncio.get_running_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks

        self.protocol = _server_protocol(config, self.logger)
        #: Messages that may wait for ``receive()`` (uvicorn's ``ws_max_queue``; at least 1).
        #: ``None``: no bound on the count; what waits is then what one read brought.
        self.max_queue: int | None = None
        max_queue = config.ws_max_queue
        if max_queue is not None:
            self.max_queue = max(1, int(max_queue))
            self.protocol.set_message_budget(self.max_queue)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"
        self.scope: dict[str, Any] = {}
        self.request: Request | None = None
        self._phase = _REQUEST
        self._response: Response | None = None  # the 101 waiting for websocket.accept
        self._denial: tuple[int, list[tuple[str, str]], list[bytes]] | None = None
        self.task: asyncio.Task[None] | None = None

        # Messages for receive(): a queue and at most one waiting receive().
        self._queue: collections.deque[Message] = collections.deque()
        self._pending = 0  # websocket.receive messages in the queue
        self._waiter: asyncio.Future[Message] | None = None
        self._disconnect: Message | None = None  # set once; repeated after it is received
        self._app_closed = False  # the application sent websocket.close after accepting
        self._ended_by_server = False  # the handshake was ended by a timeout or a shutdown
        self._open_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        # Where the rest of a large frame's payload is read in place (see get_buffer).
        self._payload_view: memoryview | None = None

        # Writing.
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.disconnected = False  # the transport is gone

        #: Timer for the client's close frame after our close (``None`` when not waiting).
        self.close_timer: asyncio.TimerHandle | None = None

        # Keepalive.
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        # Keepalive pings waiting for their pong (tether.pings' bookkeeping; no waiter).
        self._pings: dict[bytes, tuple[None, float]] = {}
        #: ``loop.time()`` when the last keepalive ping left, and its measured round trip.
        self.ping_sent_at = 0.0
        self.latency = 0.0

    @property
    def queue_size(self) -> int:
        """Messages waiting for the application's ``receive()``: at most :attr:`max_queue`
        ``websocket.receive`` messages, plus ``websocket.connect`` or ``websocket.disconnect``.
        """
        return len(self._queue)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, str):  # a Unix socket
            self.server = (sockname, None)
        else:
            self.server = _address(sockname)
        self.client = _address(transport.get_extra_info("peername"))
        self.scheme = "wss" if transport.get_extra_info("sslcontext") else "ws"
        if self.logger.isEnabledFor(TRACE):
            self.logger.log(TRACE, "%sWebSocket connection made", self._prefix())

    def data_received(self, data: bytes) -> None:
        """The request head (uvicorn hands it over as bytes), or bytes from a caller that has
        them (tests); the transport itself reads through ``get_buffer``/``buffer_updated``."""
        protocol = self.protocol
        protocol.receive_data(data)
        self._payload_view = protocol.payload_buffer()
        self._process()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._payload_view
        return read_buffer() if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        self._payload_view = take_read(self.protocol, read_buffer(), self._payload_view, nbytes)
        self._process()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost follows

    def pause_writing(self) -> None:
        self._writing_paused = True
        # A client that sends pings and reads nothing must not grow our write buffer: while
        # paused, only the latest ping is answered, once writing resumes.
        self.protocol.pause_output()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.protocol.resume_output():
            self._flush()
        self._wake_writers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self._handshake_answered()
        self.connections.discard(self)
        self._stop_keepalive()
        self._cancel_close_timer()
        protocol = self.protocol
        accepted = self._phase == _ACCEPTED
        lost_open = accepted and protocol.state is State.OPEN
        # Anything the parser held back counts now (a close frame included).
        protocol.receive_eof()
        self._process(flush=False)
        if lost_open and protocol.close_rcvd is None:
            self.logger.info(
                '%s - "WebSocket %s" connection lost without a closing handshake (1006)',
                self._client_text(),
                self._path_text(),
            )
        code = 1006
        if accepted and protocol.close_rcvd is not None:
            code = protocol.close_rcvd.code
        self._set_disconnect({"type": "websocket.disconnect", "code": code})
        self._wake_writers()
        if self._phase < _ACCEPTED:
            self._phase = _DONE
        if self.logger.isEnabledFor(TRACE):
            self.logger.log(TRACE, "%sWebSocket connection lost", self._prefix())
        if exc is None:
            self.transport.close()

    # --- uvicorn's server -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server is shutting down: 1012 to an open connection, 500 to a handshake."""
        self._stop_keepalive()
        protocol = self.protocol
        if self.transport.is_closing():
            return
        if self.close_timer is not None:
            # Our close frame is out already; stop waiting for the answer.
            self._cancel_close_timer()
        elif self._phase == _ACCEPTED and protocol.state is State.OPEN:
            self._set_disconnect({"type": "websocket.disconnect", "code": 1012})
            protocol.send_close(1012)
            self._flush()  # arms the close timer
            # Parse on, past the queue's bound, to find the client's close frame.
            protocol.set_message_budget(None)
            self._process()
            return
        elif self._phase in (_HANDSHAKE, _DENYING):
            self._ended_by_server = True
            self._send_internal_error()
        self.transport.close()

    # --- input --------------------------------------------------------------------------------

    def _process(self, flush: bool = True) -> None:
        """Handle the protocol's events, then write and adjust reading."""
        protocol = self.protocol
        events = protocol.events_received()
        while True:
            for event in events:
                if isinstance(event, TextMessage):
                    self._deliver({"type": "websocket.receive", "text": event.data})
                elif isinstance(event, BinaryMessage):
                    self._deliver({"type": "websocket.receive", "bytes": event.data})
                elif isinstance(event, Pong):
                    self._pong_received(event)
                elif isinstance(event, CloseReceived):
                    self._close_received(event)
                elif isinstance(event, Request):
                    self._request_received(event)
                # Ping: the pong is already queued by the protocol.
            if not protocol.parsing_stopped:
                break
            events = self._refill()
            if not events:
                break
        if self._phase == _REQUEST and protocol.state is State.CLOSED:
            self._request_refused()
        elif protocol.parser_exc is not None and self._disconnect is None:
            self._peer_failed()
        if flush:
            self._flush()
            self._update_reading()

    def _refill(self) -> list[Event]:
        """The parser spent its message budget: set it to the room left in the queue (messages
        handed straight to ``receive()`` spent budget but took no room; the budget never
        exceeds the room, so the queue's bound holds); the events that lets it parse."""
        assert self.max_queue is not None  # the budget is only set with a bound
        room = self.max_queue - self._pending
        if room <= 0:
            return []  # full: receive() makes room
        protocol = self.protocol
        protocol.set_message_budget(room)
        return protocol.events_received()

    def _deliver(self, message: Message) -> None:
        if self._disconnect is not None:
            return  # we are closing: data is read (to find the close frame) and dropped
        waiter = self._waiter
        if waiter is not None and not self._queue and not waiter.done():
            self._waiter = None
            waiter.set_result(message)
        else:
            self._queue.append(message)
            self._pending += 1

    def _set_disconnect(self, message: Message) -> None:
        """Queue the one ``websocket.disconnect`` the application gets (repeated afterwards)."""
        if self._disconnect is not None:
            return
        self._disconnect = message
        waiter = self._waiter
        if waiter is not None and not self._queue and not waiter.done():
            self._waiter = None
            waiter.set_result(message)
        else:
            self._queue.append(message)

    def _update_reading(self) -> None:
        """Read while the application keeps up: pause while messages wait for ``receive()``,
        never while closing; before the 101, pause only if the client sends too much ahead."""
        transport = self.transport
        if transport is None or self.disconnected or transport.is_closing():
            return
        protocol = self.protocol
        if self._phase == _ACCEPTED:
            closing = self.close_timer is not None or protocol.state is not State.OPEN
            want_pause = not closing and self._pending > 0
        else:
            # Before the 101, keep reading (a client that leaves is noticed) while what it
            # sends ahead stays small.
            want_pause = protocol.buffered > protocol.limits.max_head_size
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _request_received(self, request: Request) -> None:
        self.request = request
        response = self.protocol.accept(request)
        if response.status != 101:
            self._send_response(response)
            self.logger.info(
                '%s - "WebSocket %s" %d %s',
                self._client_text(),
                request.path,
                response.status,
                self.protocol.handshake_exc,
            )
            self._phase = _DONE
            return
        self._response = response
        self._phase = _HANDSHAKE
        if self.open_timeout is not None:
            self._open_timer = self.loop.call_later(self.open_timeout, self._open_timed_out)
        self.scope = self._build_scope(request)
        self._queue.append({"type": "websocket.connect"})
        task = self.loop.create_task(self._run_app())
        self.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _open_timed_out(self) -> None:
        self._open_timer = None
        if self._phase not in (_HANDSHAKE, _DENYING) or self.transport.is_closing():
            return
        self.logger.warning(
            '%s - "WebSocket %s" the application did not answer the handshake within %s s',
            self._client_text(),
            self._path_text(),
            self.open_timeout,
        )
        self._ended_by_server = True
        self._send_internal_error()
        self._set_disconnect({"type": "websocket.disconnect", "code": 1006})
        self.transport.close()

    def _handshake_answered(self) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None

    def _request_refused(self) -> None:
        """The request head itself was refused by the sans-I/O protocol (400, 431, 505)."""
        self._phase = _DONE
        self.logger.info(
            '%s - "WebSocket" invalid request: %s', self._client_text(), self.protocol.handshake_exc
        )

    def _build_scope(self, request: Request) -> dict[str, Any]:
        raw_path, _, query = request.path.partition("?")
        root_path = self.config.root_path
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ]
        return {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root_path,
            "path": root_path + unquote(raw_path),
            "raw_path": root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": headers,
            "subprotocols": list(self.protocol.handshake.offered_subprotocols),
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }

    def _close_received(self, event: CloseReceived) -> None:
        if self.close_timer is not None:
            # The answer to our close: the protocol has also queued the end of the connection.
            self._cancel_close_timer()
            return
        close = event.close
        self._set_disconnect(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )

    def _peer_failed(self) -> None:
        """The client broke the protocol or a limit: the sans-I/O protocol has sent the close
        frame (1002, 1007, 1009) and the end of the connection."""
        sent = self.protocol.close_sent
        code = sent.code if sent is not None else 1006
        reason = sent.reason if sent is not None else ""
        self.logger.info(
            '%s - "WebSocket %s" closing with %d: %s',
            self._client_text(),
            self._path_text(),
            code,
            self.protocol.parser_exc,
        )
        self._cancel_close_timer()
        self._set_disconnect({"type": "websocket.disconnect", "code": code, "reason": reason})

    # --- output -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the protocol produced; ``b""`` (end of connection) closes the transport.
        Arm the close timer when the client should now close (``close_expected()``: we sent
        a close frame and wait for the client's)."""
        transport = self.transport
        protocol = self.protocol
        for data in protocol.data_to_send():
            if transport.is_closing():
                return
            if data:
                transport.write(data)
            else:
                self._cancel_close_timer()
                transport.close()
                return
        if (
            self.close_timer is None
            and self._disconnect is not None  # closing (close_expected() is False before)
            and protocol.close_expected()
            and not transport.is_closing()
        ):
            self.close_timer = self.loop.call_later(self.close_timeout, self._close_timed_out)

    def _send_response(self, response: Response) -> None:
        for name, value in self.server_state.default_headers:
            name_text = name.decode("latin-1")
            if name_text not in response.headers:
                response.headers[name_text] = value.decode("latin-1")
        self.protocol.send_response(response)
        self._flush()

    def _send_internal_error(self) -> None:
        """500 to a handshake that the application cannot finish; nothing sent yet."""
        if self.protocol.state is not State.CONNECTING or self.transport.is_closing():
            return
        response = self.protocol.reject(
            500, _INTERNAL_ERROR, content_type="text/plain; charset=utf-8"
        )
        self._phase = _DONE
        self._denial = None
        self._handshake_answered()
        self._send_response(response)
        self.logger.info('%s - "WebSocket %s" 500', self._client_text(), self._path_text())

    async def _drain(self) -> None:
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _cancel_close_timer(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    def _close_timed_out(self) -> None:
        self.close_timer = None
        self.logger.info(
            '%s - "WebSocket %s" no close frame from the client within %s s; closing',
            self._client_text(),
            self._path_text(),
            self.close_timeout,
        )
        self.transport.close()

    # --- keepalive ----------------------------------------------------------------------------

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            self.ping_timer = self.loop.call_later(self.ping_interval, self._send_keepalive_ping)

    def _stop_keepalive(self) -> None:
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        self._pings.clear()

    def _send_keepalive_ping(self) -> None:
        self.ping_timer = None
        if self.protocol.state is not State.OPEN or self.transport.is_closing():
            return
        payload = ping_payload(self._pings, None)
        self.protocol.send_ping(payload)
        self.ping_sent_at = self.loop.time()
        self._pings[payload] = (None, self.ping_sent_at)
        self._flush()
        if self.ping_timeout is not None:
            self.pong_timer = self.loop.call_later(self.ping_timeout, self._keepalive_timed_out)
        else:
            self._start_keepalive()

    def _pong_received(self, event: Pong) -> None:
        answered = answered_pings(self._pings, event.acked, self.loop.time())
        if not answered:
            return  # unsolicited
        self.latency = answered[-1][1]
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self._start_keepalive()

    def _keepalive_timed_out(self) -> None:
        self.pong_timer = None
        self._pings.clear()
        if self.protocol.state is not State.OPEN or self.transport.is_closing():
            return
        self.logger.info(
            '%s - "WebSocket %s" no pong within %s s; closing with 1011',
            self._client_text(),
            self._path_text(),
            self.ping_timeout,
        )
        reason = "keepalive ping timeout"
        self.protocol.fail(1011, reason)
        self._set_disconnect({"type": "websocket.disconnect", "code": 1011, "reason": reason})
        self._flush()

    # --- the application ----------------------------------------------------------------------

    async def _run_app(self) -> None:
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            self._app_ended()
        except asyncio.CancelledError:
            self._app_ended()
            raise
        except Exception:
            self.logger.exception(
                '%s - "WebSocket %s" exception in ASGI application',
                self._client_text(),
                self._path_text(),
            )
            self._app_ended()
        else:
            if self._phase == _HANDSHAKE:
                self.logger.error("ASGI callable returned without completing handshake.")
            elif self._phase == _DENYING:
                self.logger.error("ASGI callable returned without completing its denial response.")
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned %r.", result)
            self._app_ended()

    def _app_ended(self) -> None:
        """The application is done (or failed): finish what it left."""
        self._stop_keepalive()
        if self.disconnected:
            return
        if self._phase == _DENYING and self._denial_complete():
            try:
                self._finish_denial()
            except RuntimeError:
                self.logger.exception("invalid denial response")
        if self._phase in (_HANDSHAKE, _DENYING):
            self._send_internal_error()
        if self.close_timer is None and not self.transport.is_closing():
            # Accepted and not closed by the application: uvicorn's contract is to drop the
            # TCP connection (the client sees 1006).
            self.transport.close()

    # --- ASGI receive and send ----------------------------------------------------------------

    async def receive(self) -> Message:
        """The next ASGI message; ``websocket.disconnect`` again and again once it came."""
        queue = self._queue
        if queue:
            message = queue.popleft()
            if message["type"] == "websocket.receive":
                self._pending -= 1
                if self._reading_paused or self.protocol.parsing_stopped:
                    self._process()
            return message
        disconnect = self._disconnect
        if disconnect is not None:
            return disconnect
        if self._waiter is not None:
            raise RuntimeError("receive() is already waiting for a message")
        waiter: asyncio.Future[Message] = self.loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    async def send(self, message: Message) -> None:
        while self._writing_paused and not self.disconnected:
            await self._drain()
        if self.disconnected:
            raise ClientDisconnected("the client is gone")
        kind = message["type"]
        phase = self._phase
        if phase == _ACCEPTED:
            if kind == "websocket.send":
                self._send_data(message)
            elif kind == "websocket.close":
                self._app_close(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got '{kind}'."
                )
        elif phase == _HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._refuse()
            elif kind == "websocket.http.response.start":
                self._start_denial(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got '{kind}'."
                )
        elif phase == _DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
                )
            self._denial_body(message)
        elif self._ended_by_server:
            raise ClientDisconnected("the server ended the handshake (timeout or shutdown)")
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    def _send_data(self, message: Message) -> None:
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            if self._app_closed:
                raise RuntimeError(
                    "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'."
                )
            raise ClientDisconnected("the WebSocket is closed")
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
            if data is None:
                raise RuntimeError("websocket.send needs 'bytes' or 'text'")
        protocol.send_message(data)
        chunks = protocol.data_to_send()
        if len(chunks) == 1:
            self.transport.write(chunks[0])
        else:
            # A payload of SPLIT_WRITE_SIZE or more comes apart from its frame header. The
            # header goes with the payload's first _FIRST_WRITE bytes (a lone header would be
            # a tiny TCP segment of its own with TCP_NODELAY: +60% CPU at 64 KiB x64), the rest
            # as a memoryview (no copy; writelines() would join all of it on 3.11: a third of
            # the server's time per 1 MiB message).
            header, payload = chunks
            if len(payload) <= _FIRST_WRITE:
                self.transport.write(header + payload)
            else:
                view = memoryview(payload)
                self.transport.write(header + view[:_FIRST_WRITE])
                self.transport.write(view[_FIRST_WRITE:])

    def _app_close(self, message: Message) -> None:
        protocol = self.protocol
        if self._app_closed:
            raise RuntimeError(
                "Unexpected ASGI message 'websocket.close', after sending 'websocket.close'."
            )
        self._app_closed = True
        if protocol.state is not State.OPEN:
            return  # closed already (by the client, a failure or a shutdown)
        code = message.get("code")
        code = 1000 if code is None else int(code)
        reason = message.get("reason") or ""
        protocol.send_close(code, reason)
        self._set_disconnect({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._stop_keepalive()
        self._flush()  # arms the close timer
        # Parse on, past the queue's bound, to find the client's answer (read, as closing).
        protocol.set_message_budget(None)
        self._process()

    def _accept(self, message: Message) -> None:
        response = self._response
        assert response is not None and self.request is not None
        protocol = self.protocol
        headers = response.headers
        for name, value in self.server_state.default_headers:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        for name, value in message.get("headers") or ():
            headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            offered = protocol.handshake.offered_subprotocols
            if subprotocol not in offered:
                raise RuntimeError(
                    f"websocket.accept chose subprotocol {subprotocol!r}, which the client did "
                    f"not offer (offered: {', '.join(offered) or 'none'})"
                )
            headers["Sec-WebSocket-Protocol"] = subprotocol
            protocol.handshake.subprotocol = Subprotocol(subprotocol)
        if self.transport.is_closing():
            raise ClientDisconnected("the client is gone")
        try:
            protocol.send_response(response)  # serializes it first: nothing changes if invalid
        except ValueError as exc:
            raise RuntimeError(f"websocket.accept: {exc}") from None
        self._phase = _ACCEPTED
        self._response = None
        self._handshake_answered()
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                '%s - "WebSocket %s" [accepted] %s',
                self._client_text(),
                self._path_text(),
                protocol.handshake.describe(),
            )
        self._start_keepalive()
        # Frames that arrived with or after the request are parsed now.
        self._process()

    def _refuse(self) -> None:
        """``websocket.close`` before ``websocket.accept``: 403 (ASGI spec)."""
        self._phase = _DONE
        self._handshake_answered()
        response = self.protocol.reject(403, "The application refused the WebSocket connection.")
        self._set_disconnect({"type": "websocket.disconnect", "code": 1006})
        self._send_response(response)
        self.logger.info('%s - "WebSocket %s" 403', self._client_text(), self._path_text())

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
        headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in message.get("headers") or ()
        ]
        self._denial = (status, headers, [])
        self._phase = _DENYING

    def _denial_body(self, message: Message) -> None:
        assert self._denial is not None
        self._denial[2].append(bytes(message.get("body", b"")))
        if message.get("more_body", False):
            return
        declared = self._declared_length()
        size = sum(len(chunk) for chunk in self._denial[2])
        if declared is not None and declared != size:
            raise RuntimeError(
                f"websocket.http.response: Content-Length is {declared} but the body has "
                f"{size} bytes"
            )
        self._finish_denial()

    def _declared_length(self) -> int | None:
        assert self._denial is not None
        for name, value in self._denial[1]:
            if name.lower() == "content-length":
                try:
                    return int(value)
                except ValueError:
                    raise RuntimeError(f"invalid Content-Length: {value!r}") from None
        return None

    def _denial_complete(self) -> bool:
        """An unfinished denial whose body already matches its ``Content-Length``."""
        assert self._denial is not None
        try:
            declared = self._declared_length()
        except RuntimeError:
            return False
        return declared is not None and declared == sum(len(c) for c in self._denial[2])

    def _finish_denial(self) -> None:
        assert self._denial is not None
        status, app_headers, chunks = self._denial
        body = b"".join(chunks)
        names = {name.lower() for name, _ in app_headers}
        headers = Headers()
        for name, value in self.server_state.default_headers:
            if name.decode("latin-1") not in names:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        headers.extend(app_headers)
        if "content-length" not in names:
            headers["Content-Length"] = str(len(body))
        if "connection" not in names:
            headers["Connection"] = "close"
        response = Response(status, reason_phrase(status), headers, body)
        try:
            response.serialize()
        except ValueError as exc:
            raise RuntimeError(f"websocket.http.response.start: {exc}") from None
        self._phase = _DONE
        self._denial = None
        self._handshake_answered()
        self._set_disconnect({"type": "websocket.disconnect", "code": 1006})
        self.protocol.send_response(response)
        self._flush()
        self.logger.info('%s - "WebSocket %s" %d', self._client_text(), self._path_text(), status)

    # --- log helpers --------------------------------------------------------------------------

    def _prefix(self) -> str:
        return f"{self.client[0]}:{self.client[1]} - " if self.client else ""

    def _client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else ""

    def _path_text(self) -> str:
        path = self.request.path if self.request is not None else ""
        return path.replace('"', "%22")
