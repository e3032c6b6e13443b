"""``serve()``: an asyncio WebSocket server.

::

    async def handler(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 8765, subprotocols=["chat"]) as server:
        await server.serve_forever()
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

from ..exceptions import ConnectionClosed
from ..extensions.base import ServerExtensionFactory
from ..limits import Limits
from ..sansio.codes import CloseCode
from ..sansio.handshake import SUPPORTED_VERSIONS
from ..sansio.http11 import Request, Response
from ..sansio.protocol import State
from ..sansio.server import OriginRule, SelectSubprotocol, ServerProtocol
from ..typing import Data, LoggerLike
from .compression import Compression, server_extensions
from .connection import Connection

__all__ = ["Server", "ServerConnection", "broadcast", "serve"]

Handler = Callable[["ServerConnection"], Awaitable[None]]
ProcessRequest = Callable[
    ["ServerConnection", Request], Response | Awaitable[Response | None] | None
]
ProcessResponse = Callable[
    ["ServerConnection", Request, Response], Response | Awaitable[Response | None] | None
]


class ServerConnection(Connection):
    """One client's connection, as the handler sees it."""

    protocol: ServerProtocol

    def __init__(self, server: Server, protocol: ServerProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.server = server
        self._handshake_task: asyncio.Task[None] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.handler_task: asyncio.Task[None] | None = None

    def respond(self, status: int, text: str) -> Response:
        """A plain-text HTTP response, for ``process_request`` hooks (``/healthz``)."""
        return self.protocol.reject(status, text)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._register(self)
        timeout = self.server.open_timeout
        if timeout is not None:
            self._handshake_timer = self.loop.call_later(timeout, self._handshake_timed_out)

    def _handshake_timed_out(self) -> None:
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.logger.info("! opening handshake timed out")
            self.transport.abort()

    def _handle_event(self, event: object) -> None:
        if isinstance(event, Request):
            # Hold further input until the decision is made; it waits in the kernel.
            if self.transport is not None:
                self.transport.pause_reading()
            self._handshake_task = self.loop.create_task(self._handshake(event))

    async def _handshake(self, request: Request) -> None:
        server = self.server
        response: Response | None = None
        try:
            if server.process_request is not None:
                result = server.process_request(self, request)
                if inspect.isawaitable(result):
                    result = await result
                response = result
            if response is None:
                response = self.protocol.accept(request)
            if server.process_response is not None:
                result = server.process_response(self, request, response)
                if inspect.isawaitable(result):
                    result = await result
                if result is not None:
                    response = result
        except Exception:
            self.logger.error("! error in the opening handshake hooks", exc_info=True)
            response = self.protocol.reject(500, "Internal server error.")
        if self.protocol.state is not State.CONNECTING:
            return  # the connection was lost meanwhile
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.protocol.send_response(response)
        if response.status == 101:
            self.logger.info(
                "%s %s: %s", request.method, request.path, self.protocol.handshake.describe()
            )
        else:
            self.logger.info("%s %s: HTTP %d", request.method, request.path, response.status)
        self._process_events()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if response.status == 101:
            self.start_keepalive()
            self.handler_task = self.loop.create_task(self._run_handler())

    async def _run_handler(self) -> None:
        try:
            await self.server.handler(self)
        except ConnectionClosed:
            pass
        except Exception:
            self.logger.error("! connection handler failed", exc_info=True)
            if self.protocol.state is State.OPEN:
                self.fail(CloseCode.INTERNAL_ERROR, "")
        try:
            await self.close()
        except ConnectionClosed:
            pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        super().connection_lost(exc)
        self.server._unregister(self)


class Server:
    """A running WebSocket server; see :func:`serve` for the options."""

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        require_subprotocol: bool = False,
        compression: Compression = "deflate",
        extensions: Sequence[ServerExtensionFactory] | None = None,
        origins: Sequence[OriginRule] | None = None,
        versions: Sequence[str] = SUPPORTED_VERSIONS,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = None,
        limits: Limits | None = None,
        open_timeout: float | None = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        ssl: ssl_module.SSLContext | None = None,
        logger: LoggerLike | None = None,
        sock: Any = None,
        **create_server_kwargs: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.subprotocols = list(subprotocols or ())
        self.select_subprotocol = select_subprotocol
        self.require_subprotocol = require_subprotocol
        factories = list(extensions) if extensions is not None else []
        factories += server_extensions(compression)
        self.extensions = factories
        self.origins = origins
        self.versions = tuple(versions)
        self.process_request = process_request
        self.process_response = process_response
        self.server_header = server_header
        self.limits = limits if limits is not None else Limits()
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.ssl = ssl
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.server")
        )
        self.sock = sock
        self.create_server_kwargs = create_server_kwargs
        #: The open connections (handshake done or under way).
        self.connections: set[ServerConnection] = set()
        self._server: asyncio.Server | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def _make_connection(self) -> ServerConnection:
        protocol_kwargs: dict[str, Any] = {}
        if self.server_header is not None:
            protocol_kwargs["server_header"] = self.server_header
        protocol = ServerProtocol(
            subprotocols=self.subprotocols,
            select_subprotocol=self.select_subprotocol,
            require_subprotocol=self.require_subprotocol,
            extensions=self.extensions,
            origins=self.origins,
            versions=self.versions,
            limits=self.limits,
            assemble=False,
            **protocol_kwargs,
        )
        return ServerConnection(
            self,
            protocol,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            logger=self.logger,
        )

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._server = await loop.create_server(
            self._make_connection,
            self.host if self.sock is None else None,
            self.port if self.sock is None else None,
            ssl=self.ssl,
            sock=self.sock,
            **self.create_server_kwargs,
        )
        for sock in self._server.sockets:
            name = sock.getsockname()
            scheme = "wss" if self.ssl is not None else "ws"
            if isinstance(name, tuple):
                self.logger.info("server listening on %s://%s:%s", scheme, name[0], name[1])
            else:  # AF_UNIX: the path (bytes for a Linux abstract name)
                self.logger.info("server listening on %s over Unix socket %r", scheme, name)
        return self

    def __await__(self) -> Generator[Any, None, Server]:
        return self.start().__await__()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    @property
    def sockets(self) -> list[Any]:
        return [] if self._server is None else list(self._server.sockets)

    @property
    def port_number(self) -> int:
        """The port the first socket listens on (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    def _register(self, connection: ServerConnection) -> None:
        self.connections.add(connection)

    def _unregister(self, connection: ServerConnection) -> None:
        self.connections.discard(connection)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (or the task is cancelled)."""
        assert self._closed is not None, "start the server first"
        await asyncio.shield(self._closed)

    def close(self, close_connections: bool = True) -> None:
        """Stop accepting connections; close every open one with 1001 (going away)."""
        if self._closing:
            return
        self._closing = True
        self._close_task = asyncio.get_running_loop().create_task(self._close(close_connections))

    async def _close(self, close_connections: bool) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self.connections)
        if close_connections:
            for connection in connections:
                if connection.state is State.OPEN:
                    connection.start_closing(CloseCode.GOING_AWAY, "server shutting down")
                elif connection.state is State.CONNECTING and connection.transport is not None:
                    connection.transport.close()
        waits = [c.wait_closed() for c in connections]
        handlers = [c.handler_task for c in connections if c.handler_task is not None]
        if waits or handlers:
            timeout = (self.close_timeout or 10) + 1
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in [*waits, *handlers]], timeout=timeout
            )
        if self._server is not None:
            await self._server.wait_closed()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the server and every connection are closed."""
        if self._closed is not None:
            await asyncio.shield(self._closed)


def serve(
    handler: Handler, host: str | None = None, port: int | None = None, **kwargs: Any
) -> Server:
    """Create a WebSocket server; start it with ``async with`` or ``await``.

    Args:
        handler: ``async def handler(ws)``, run for each connection after the handshake; the
            connection closes with 1000 when it returns, 1011 when it raises.
        host, port: where to listen (``port=0`` picks a free port: ``server.port_number``).
        subprotocols: the server's subprotocols in preference order; the first of the
            client's list that the server supports is selected.
        select_subprotocol: ``(offered, supported) -> choice``, replacing that policy.
        require_subprotocol: refuse (400) clients that agree no subprotocol.
        compression: ``"deflate"`` (default, the "balanced" preset), a preset name, a
            ``DeflateSettings``, or ``None``.
        extensions: more server extension factories.
        origins: allowed ``Origin`` values (str, compiled patterns, ``None`` for no header).
        versions: protocol versions accepted and advertised.
        process_request: ``(connection, request) -> Response | None`` (may be async):
            answer plain HTTP requests (``/healthz``) or refuse; ``None`` goes on.
        process_response: ``(connection, request, response) -> Response | None``.
        limits: a :class:`~tether.limits.Limits`.
        open_timeout: seconds for the opening handshake.
        ping_interval, ping_timeout: keepalive (``None`` turns it off); a missed pong
            closes with 1011.
        close_timeout: seconds to wait for the closing handshake.
        ssl: an ``ssl.SSLContext`` to serve wss://.
    """
    return Server(handler, host, port, **kwargs)


async def broadcast(
    connections: Iterable[Connection],
    message: Data,
    *,
    slow: str = "skip",
) -> int:
    """Send ``message`` to every open connection; return how many it was written to.

    The frame is encoded once for all connections that share the same encoding (no
    extension, or permessage-deflate without context takeover on our side and the same
    parameters), so compression runs once per group rather than once per connection.

    ``slow`` is the slow-consumer policy, for a connection whose write buffer is above its
    high-water mark: ``"skip"`` leaves it out of this message (it stays open), ``"drop"``
    closes it with 1008 (policy violation), ``"wait"`` waits until it drains (so one slow
    peer delays the broadcast). A connection in the middle of sending a fragmented message
    is skipped, since frames of two messages must not interleave.
    """
    if slow not in ("skip", "drop", "wait"):
        raise ValueError("slow must be 'skip', 'drop' or 'wait'")
    from .compression import encode_for_broadcast

    sent = 0
    waits: list[Awaitable[None]] = []
    cache: dict[object, bytes] = {}
    for connection in connections:
        protocol = connection.protocol
        transport = connection.transport
        if protocol.state is not State.OPEN or transport is None or transport.is_closing():
            continue
        if connection._send_lock.locked() or protocol._out_opcode is not None:
            continue
        if connection._writing_paused:
            if slow == "skip":
                continue
            if slow == "drop":
                connection.fail(CloseCode.POLICY_VIOLATION, "too slow to receive broadcasts")
                continue
            waits.append(connection._drain())
        data = encode_for_broadcast(protocol, message, cache)
        if data is None:
            protocol.send_message(message)
            connection._flush()
        else:
            transport.write(data)
        sent += 1
    if waits:
        await asyncio.gather(*waits, return_exceptions=True)
    return sent
