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
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Never

from ..exceptions import ConnectionClosed
from ..extensions.base import ServerExtensionFactory
from ..limits import Limits
from ..options import (
    DEFAULT_SERVER_HEADER,
    Compression,
    ServerOptions,
    check_process_request,
    check_unknown_keywords,
    pick,
)
from ..responses import ServerResponses
from ..sansio.codes import CloseCode
from ..sansio.handshake import SUPPORTED_VERSIONS
from ..sansio.http11 import Request, Response
from ..sansio.protocol import State
from ..sansio.server import OriginRule, ServerProtocol
from ..typing import LoggerLike, Subprotocol
from .budget import MemoryBudget
from .connection import Connection
from .fanout import broadcast, broadcast_and_wait

__all__ = ["Server", "ServerConnection", "broadcast", "broadcast_and_wait", "serve"]

Handler = Callable[["ServerConnection"], Awaitable[None]]
ProcessRequest = Callable[
    ["ServerConnection", Request], Response | Awaitable[Response | None] | None
]
ProcessResponse = Callable[
    ["ServerConnection", Request, Response], Response | Awaitable[Response | None] | None
]
#: ``(connection, subprotocols) -> subprotocol | None``, as in websockets: ``subprotocols`` is
#: what the client offered; the server's list is ``connection.protocol.subprotocols``.
SelectSubprotocol = Callable[["ServerConnection", Sequence[Subprotocol]], Subprotocol | None]


class ServerConnection(Connection, ServerResponses):
    """One client's connection, as the handler sees it; ``respond()``, ``respond_json()`` and
    ``respond_html()`` build the answers of ``process_request`` hooks."""

    protocol: ServerProtocol

    def __init__(self, server: Server, protocol: ServerProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.server = server
        self._handshake_task: asyncio.Task[None] | None = None
        self.handler_task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._register(self)
        self.server._opening_started(self)

    def _handshake_timed_out(self) -> None:
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.logger.info("! opening handshake timed out")
            self.transport.abort()

    def _handle_event(self, event: object) -> None:
        if isinstance(event, Request):
            server = self.server
            if server.process_request is None and server.process_response is None:
                # No hook to wait for: answer at once, without a task or pausing reading.
                self._answer(event, self._decide_now(event))
                return
            # Hold further input until the decision is made; it waits in the kernel.
            if self.transport is not None:
                self.transport.pause_reading()
            self._handshake_task = self.loop.create_task(self._handshake(event))

    def _decide_now(self, request: Request) -> Response:
        """The response when there are no hooks: 503 over the memory budget, else accept."""
        try:
            return self._refusal() or self.protocol.accept(request)
        except Exception:
            return self._hook_failed()

    def _refusal(self) -> Response | None:
        budget = self.server.budget
        if budget is not None and budget.refusing():
            return self.protocol.reject(
                503,
                "The server is over its memory budget; retry later.",
                [("Retry-After", str(budget.retry_after))],
            )
        return None

    def _hook_failed(self) -> Response:
        self.logger.error("! error in the opening handshake hooks", exc_info=True)
        return self.protocol.reject(500, "Internal server error.")

    async def _handshake(self, request: Request) -> None:
        try:
            response = await self._decide(request)
            self._answer(request, response)
        finally:
            # Not kept once done: an idle connection holds no finished task.
            self._handshake_task = None

    async def _decide(self, request: Request) -> Response:
        server = self.server
        try:
            response = self._refusal()
            if response is None and server.process_request is not None:
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
            response = self._hook_failed()
        return response

    def _answer(self, request: Request, response: Response) -> None:
        if self.protocol.state is not State.CONNECTING:
            return  # the connection was lost meanwhile
        self.server._opening_done(self)
        self.protocol.send_response(response)
        if self.logger.isEnabledFor(logging.INFO):  # describe() costs, even when not logged
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
        self.server._opening_done(self)
        super().connection_lost(exc)
        self.server._unregister(self)


class Server:
    """A WebSocket server: ``async with serve(handler, host, port, ...) as server`` (or
    ``server = await serve(...)``). :func:`serve` is this class.

    Args:
        handler: ``async def handler(ws)``, run for each connection after the handshake; the
            connection closes with 1000 when it returns, 1011 when it raises.
        host: the interface(s) to listen on (``None``: all).
        port: the TCP port (``0`` picks a free one: :attr:`port_number`).
        subprotocols: the server's subprotocols; the first of the client's list that the
            server supports is selected, unless ``select_subprotocol`` decides.
        select_subprotocol: ``(connection, subprotocols) -> subprotocol | None`` (websockets'
            shape: ``subprotocols`` is the client's offer); the old ``(offered, supported)``
            shape is refused with ``TypeError``.
        require_subprotocol: refuse (400) clients that agree no subprotocol.
        compression: ``"deflate"`` (default, the "balanced" preset), a preset name, a
            ``DeflateSettings``, or ``None``.
        extensions: more extension *factories* (negotiated before ``compression``'s); the
            server keeps them in :attr:`extension_factories`, and each connection's
            ``extensions`` lists what it agreed.
        origins: allowed ``Origin`` values (str, compiled patterns, ``None`` for no header).
        versions: protocol versions accepted and advertised.
        process_request: ``(connection, request) -> Response | None`` (may be async): answer
            plain HTTP requests (``/healthz``) or refuse (``connection.respond(401, ...)``);
            ``None`` goes on with the handshake.
        process_response: ``(connection, request, response) -> Response | None`` (may be
            async): change or replace the response (add headers to ``response.headers``).
        server_header: the ``Server`` header (``None``: none).
        limits: a :class:`~tether.limits.Limits` (message size, queue, write buffer...).
        memory_budget: bytes all connections together may hold of unfinished and unread
            messages (``None``: no bound), summed every 0.1 s; past it, new handshakes get 503
            with ``Retry-After`` and the connections holding the most are closed with 1013
            (see :mod:`tether.asyncio.budget`).
        open_timeout: seconds for the opening handshake.
        ping_interval: seconds between keepalive pings (``None`` turns keepalive off).
        ping_timeout: seconds to wait for a pong; a missed pong closes with 1011.
        close_timeout: seconds to wait for the closing handshake.
        ssl: an ``ssl.SSLContext`` to serve wss://.
        logger: where to log (``logging.getLogger("tether.server")`` by default).
        sock: an already bound socket to serve on instead of ``host``/``port``.
        family, flags, backlog, reuse_address, reuse_port: passed to
            :meth:`asyncio.loop.create_server`.
        ssl_handshake_timeout, ssl_shutdown_timeout: passed to it too.

    Any other keyword raises ``TypeError`` naming it; websockets' spellings (``max_size``,
    ``max_queue``, ``write_limit``, ``extra_headers``, ``create_connection``...) name tether's
    equivalent (see ``docs/from-websockets.md``).
    """

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
        server_header: str | None = DEFAULT_SERVER_HEADER,
        limits: Limits | None = None,
        memory_budget: int | None = None,
        open_timeout: float | None = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        ssl: ssl_module.SSLContext | None = None,
        logger: LoggerLike | None = None,
        sock: socket.socket | None = None,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        backlog: int = 100,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        **unknown: Never,
    ) -> None:
        check_unknown_keywords("serve", unknown)
        if not callable(handler):
            raise TypeError(f"handler must be an async function of the connection, got {handler!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
        if ssl is None and (ssl_handshake_timeout, ssl_shutdown_timeout) != (None, None):
            raise ValueError("ssl_handshake_timeout and ssl_shutdown_timeout need ssl=")
        check_process_request(process_request)
        if process_response is not None and not callable(process_response):
            raise TypeError(f"process_response must be callable, got {process_response!r}")
        #: The WebSocket options, validated (shared with the other I/O layers).
        self.options: ServerOptions = pick(ServerOptions, locals())
        self.handler = handler
        self.host = host
        self.port = port
        self.process_request = process_request
        self.process_response = process_response
        self.ssl = ssl
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.server")
        )
        self.sock = sock
        self.create_server_options: dict[str, Any] = {
            "family": family,
            "flags": flags,
            "backlog": backlog,
            "reuse_address": reuse_address,
            "reuse_port": reuse_port,
            "ssl_handshake_timeout": ssl_handshake_timeout,
            "ssl_shutdown_timeout": ssl_shutdown_timeout,
        }
        #: The open connections (handshake done or under way).
        self.connections: set[ServerConnection] = set()
        # Connections in their opening handshake -> when it times out (open_timeout), oldest
        # first, and the one timer that enforces the oldest deadline (one timer per server,
        # not one per connection: see _opening_started).
        self._opening: dict[ServerConnection, float] = {}
        self._opening_timer: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        #: The server-wide memory budget, if ``memory_budget`` was given.
        self.budget: MemoryBudget | None = None
        if self.options.memory_budget is not None:
            self.budget = MemoryBudget(
                self.options.memory_budget, lambda: self.connections, self.logger
            )

    @property
    def extension_factories(self) -> list[ServerExtensionFactory]:
        """The extension factories offered to clients (``extensions`` then ``compression``'s).
        A connection's ``extensions`` are the extensions it agreed."""
        return self.options.extension_factories

    @property
    def limits(self) -> Limits:
        return self.options.limits if self.options.limits is not None else Limits()

    @property
    def close_timeout(self) -> float | None:
        return self.options.close_timeout

    # --- lifecycle ----------------------------------------------------------------------------

    def _make_connection(self) -> ServerConnection:
        options = self.options
        connection: ServerConnection
        protocol = options.make_protocol(lambda: connection)
        connection = ServerConnection(
            self,
            protocol,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            close_timeout=options.close_timeout,
            logger=self.logger,
        )
        connection.budget = self.budget
        return connection

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        kwargs = {k: v for k, v in self.create_server_options.items() if v is not None}
        if self.sock is not None:
            for name in ("family", "flags"):
                kwargs.pop(name)
        if self.sock is None:
            kwargs["host"], kwargs["port"] = self.host, self.port
        else:
            kwargs["sock"] = self.sock
        self._server = await loop.create_server(self._make_connection, ssl=self.ssl, **kwargs)
        if self.budget is not None:
            self.budget.start(loop)
        scheme = "wss" if self.ssl is not None else "ws"
        for address in self.addresses:
            self.logger.info("server listening on %s", _describe(scheme, address))
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
    def addresses(self) -> list[Any]:
        """What each listening socket is bound to: ``(host, port, ...)`` for TCP, the path
        (``str``, or ``bytes`` for a Linux abstract name) for a Unix socket."""
        return [sock.getsockname() for sock in self.sockets]

    @property
    def port_number(self) -> int:
        """The TCP port the server listens on (useful with ``port=0``).

        Raises:
            InvalidState: the server is not started yet, or listens on no TCP socket (a Unix
                socket has a path, not a port: read :attr:`addresses` instead).
        """
        from ..exceptions import InvalidState

        if self._server is None:
            raise InvalidState("the server is not started: use async with serve(...) first")
        for address in self.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        raise InvalidState(
            f"the server listens on no TCP port ({self.addresses!r}); read server.addresses"
        )

    def _register(self, connection: ServerConnection) -> None:
        self.connections.add(connection)

    def _unregister(self, connection: ServerConnection) -> None:
        self.connections.discard(connection)

    def _opening_started(self, connection: ServerConnection) -> None:
        """Start ``open_timeout`` for a new connection. Deadlines come in order (one timeout,
        a monotonic clock), so one timer armed for the oldest enforces them all, at the same
        moments as a timer per connection would, without a timer handle to make, push on the
        event loop's heap and cancel for each connection."""
        timeout = self.options.open_timeout
        if timeout is None:
            return
        loop = connection.loop
        self._opening[connection] = loop.time() + timeout
        if self._opening_timer is None:
            self._opening_timer = loop.call_later(timeout, self._opening_expired)

    def _opening_done(self, connection: ServerConnection) -> None:
        """The connection's opening handshake is over (answered, or the connection lost). The
        timer stays: when it fires it finds nothing due and is armed again only if another
        connection is opening (cancelling it here would mean one timer per connection again
        when connections open one at a time)."""
        self._opening.pop(connection, None)

    def _opening_expired(self) -> None:
        self._opening_timer = None
        opening = self._opening
        while opening:
            connection, deadline = next(iter(opening.items()))
            loop = connection.loop
            now = loop.time()
            if deadline > now:
                self._opening_timer = loop.call_at(deadline, self._opening_expired)
                return
            del opening[connection]
            connection._handshake_timed_out()

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
        if self.budget is not None:
            self.budget.stop()
        if self._opening_timer is not None:
            self._opening_timer.cancel()
            self._opening_timer = None
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
            timeout = (self.options.close_timeout or 10) + 1
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


def _describe(scheme: str, address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{scheme}://{host}:{address[1]}"
    return f"{scheme} over Unix socket {address!r}"


#: ``serve(handler, host, port, **options)``: create a :class:`Server` (the same class, so one
#: signature and one docstring); start it with ``async with`` or ``await``.
serve = Server
