"""``serve()``: a threading WebSocket server, one thread per connection.

::

    from tether.sync import serve

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 8765) as server:
        server.serve_forever()          # Ctrl-C: every connection closes with 1001

A thread accepts connections (the one that calls :meth:`Server.serve_forever`); each connection
gets a thread that runs the opening handshake and then the handler, plus the connection's
background thread (keepalive, close timeout, reading while the handler does not).
``max_connections`` bounds them: past it, the accepting thread answers ``503 Service
Unavailable`` with a reason and ``Retry-After`` itself, without starting a thread (over TLS,
whose handshake must come first, a short-lived thread answers, at most
:data:`MAX_TLS_REFUSALS` at a time).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Never

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
from .connection import READ_SIZE, Connection, TLSTransport, Transport

__all__ = ["Server", "ServerConnection", "serve"]

Handler = Callable[["ServerConnection"], None]
ProcessRequest = Callable[["ServerConnection", Request], Response | None]
ProcessResponse = Callable[["ServerConnection", Request, Response], Response | None]
#: ``(connection, subprotocols) -> subprotocol | None``, as in asyncio: ``subprotocols`` is what
#: the client offered; the server's list is ``connection.protocol.subprotocols``.
SelectSubprotocol = Callable[["ServerConnection", Sequence[Subprotocol]], Subprotocol | None]

#: Refused connections (over ``max_connections``) whose request is drained before closing, at
#: most; past it they are closed at once.
MAX_LINGERING = 256

#: Refusals over TLS (which need a thread for the TLS handshake) at a time, at most.
MAX_TLS_REFUSALS = 8

#: Seconds a refusal over TLS may take, handshake and answer included.
TLS_REFUSAL_TIMEOUT = 5.0

#: The reason of the 503 answered to connections that arrive during :meth:`Server.shutdown`.
SHUTTING_DOWN = "The server is shutting down; try again later."


class ServerConnection(Connection, ServerResponses):
    """One client's connection, as the handler sees it; ``respond()``, ``respond_json()`` and
    ``respond_html()`` build the answers of ``process_request`` hooks, as in asyncio."""

    protocol: ServerProtocol

    def __init__(self, server: Server, transport: Transport, protocol: ServerProtocol) -> None:
        super().__init__(
            transport,
            protocol,
            ping_interval=server.ping_interval,
            ping_timeout=server.ping_timeout,
            close_timeout=server.close_timeout,
            logger=server.logger,
        )
        self.server = server


class Server:
    """A WebSocket server: ``serve(handler, host, port, ...)`` listens at once; serve the
    connections with :meth:`serve_forever`, stop with :meth:`shutdown` (or ``with``).

    Args:
        handler: ``def handler(ws)``, run in a thread of its own for each connection after the
            handshake; the connection closes with 1000 when it returns, 1011 when it raises.
        host, port: where to listen (``port=0`` picks a free port: ``server.port_number``).
        subprotocols: the server's subprotocols in preference order; the first of the
            client's list that the server supports is selected.
        select_subprotocol: ``(connection, subprotocols) -> subprotocol | None``, replacing
            that policy (``subprotocols`` is the client's offer).
        require_subprotocol: refuse (400) clients that agree no subprotocol.
        compression: ``"deflate"`` (default, the "balanced" preset), a preset name, a
            ``DeflateSettings``, or ``None``.
        extensions: more server extension factories.
        origins: allowed ``Origin`` values (str, compiled patterns, ``None`` for no header).
        versions: protocol versions accepted and advertised.
        process_request: ``(connection, request) -> Response | None``: answer plain HTTP
            requests (``/healthz``) or refuse; ``None`` goes on with the handshake.
        process_response: ``(connection, request, response) -> Response | None``.
        server_header: the ``Server`` header (tether's by default).
        limits: a :class:`~tether.limits.Limits`, per connection.
        memory_budget: not supported by ``tether.sync`` (bound it with ``max_connections``
            times ``limits``); anything but ``None`` raises ``ValueError``. ``tether.serve``
            (asyncio) supports it.
        max_connections: most connections at once (handshakes included); past it, clients get
            503 with a reason and ``Retry-After: retry_after``.
        open_timeout: seconds for the TLS and opening handshakes.
        ping_interval: seconds between keepalive pings (``None`` turns keepalive off).
        ping_timeout: seconds to wait for a pong; a missed pong fails the connection with 1011.
        close_timeout: seconds to wait for a closing handshake (and, in ``shutdown()``, for
            all of them).
        ssl: an ``ssl.SSLContext`` to serve wss://.
        logger: where to log (``logging.getLogger("tether.server")`` by default).
        sock: a listening socket to use instead of ``host`` and ``port``.
        backlog, reuse_port: for the listening socket.

    Any other keyword raises ``TypeError`` naming it; websockets' spellings (``max_size``,
    ``extra_headers``...) name tether's equivalent, as in :func:`tether.asyncio.serve`.
    """

    def __init__(
        self,
        handler: Handler,
        host: str | None = None,
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
        max_connections: int | None = None,
        retry_after: int = 5,
        open_timeout: float | None = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        ssl: ssl_module.SSLContext | None = None,
        logger: LoggerLike | None = None,
        sock: socket.socket | None = None,
        backlog: int = 128,
        reuse_port: bool = False,
        **unknown: Never,
    ) -> None:
        check_unknown_keywords("serve", unknown)
        if not callable(handler):
            raise TypeError(f"handler must be a function of the connection, got {handler!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
        check_process_request(process_request)
        if process_response is not None and not callable(process_response):
            raise TypeError(f"process_response must be callable, got {process_response!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None for no bound)")
        if memory_budget is not None:
            raise ValueError(
                "memory_budget is not supported by tether.sync; bound memory with "
                "max_connections and limits, or use tether.serve (asyncio)"
            )
        #: The WebSocket options, validated (shared with the other I/O layers).
        self.options: ServerOptions = pick(ServerOptions, locals())
        self.handler = handler
        self.process_request = process_request
        self.process_response = process_response
        self.server_header = self.options.server_header
        self.limits = self.options.limits if self.options.limits is not None else Limits()
        self.max_connections = max_connections
        self.retry_after = retry_after
        self.open_timeout = self.options.open_timeout
        self.ping_interval = self.options.ping_interval
        self.ping_timeout = self.options.ping_timeout
        self.close_timeout = self.options.close_timeout
        self.ssl = ssl
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.server")
        )
        if sock is None:
            family = socket.AF_INET
            if host:  # the family of the address to bind: IPv6 for "::1", a name's first
                infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
                family = infos[0][0]
            sock = socket.create_server(
                (host or "", port or 0), family=family, backlog=backlog, reuse_port=reuse_port
            )
        self.socket = sock
        #: The connections, from the accepted socket to the end of the handler.
        self.connections: set[ServerConnection] = set()
        self._threads: set[threading.Thread] = set()
        self._refusal_threads: set[threading.Thread] = set()
        self._tls_refusals = threading.BoundedSemaphore(MAX_TLS_REFUSALS)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._serving = False
        self._serving_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stopped.set()
        self._shut_down = threading.Event()
        name = sock.getsockname()
        scheme = "wss" if ssl is not None else "ws"
        if isinstance(name, tuple):
            self.logger.info("server listening on %s://%s:%s", scheme, name[0], name[1])

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    @property
    def port_number(self) -> int:
        """The port the server listens on (useful with ``port=0``)."""
        return int(self.socket.getsockname()[1])

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` is called (from another thread, a handler
        or a signal handler). On ``KeyboardInterrupt`` (Ctrl-C), shut down first, then let it
        propagate."""
        with self._lock:
            if self._closing:
                return
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            self._serving = True
            self._serving_thread = threading.current_thread()
            self._stopped.clear()
        try:
            self._accept_loop()
        except KeyboardInterrupt:
            self._stopped.set()
            self.shutdown()
            raise
        finally:
            self._stopped.set()
            if self._closing:
                self._close_sockets()

    def _accept_loop(self) -> None:
        selector = selectors.DefaultSelector()
        lingering: dict[socket.socket, float] = {}
        listener = self.socket
        listener.setblocking(False)
        try:
            selector.register(listener, selectors.EVENT_READ, "accept")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._closing:
                timeout = None
                if lingering:
                    timeout = max(0.0, min(lingering.values()) - time.monotonic())
                for key, _ in selector.select(timeout):
                    if key.data == "accept":
                        self._accept(selector, lingering)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        try:
                            data = sock.recv(4096)
                        except OSError:
                            data = b""
                        if not data:
                            selector.unregister(sock)
                            lingering.pop(sock, None)
                            sock.close()
                now = time.monotonic()
                for sock, until in list(lingering.items()):
                    if until <= now:
                        selector.unregister(sock)
                        del lingering[sock]
                        sock.close()
        finally:
            for sock in lingering:
                sock.close()
            selector.close()

    def _accept(
        self, selector: selectors.BaseSelector, lingering: dict[socket.socket, float]
    ) -> None:
        for _ in range(64):  # then let the selector see the other sockets
            try:
                sock, _address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: log, and do not spin
                self.logger.error("! accept failed: %s", exc)
                time.sleep(0.1)
                return
            with self._lock:
                full = (
                    self.max_connections is not None and len(self._threads) >= self.max_connections
                )
                if not full and not self._closing:
                    thread = threading.Thread(
                        target=self._run_connection, args=(sock,), daemon=True
                    )
                    thread.name = f"tether-server-{thread.name}"
                    self._threads.add(thread)
                    thread.start()
                    continue
            self._refuse(sock, selector, lingering)

    def _refuse(
        self,
        sock: socket.socket,
        selector: selectors.BaseSelector,
        lingering: dict[socket.socket, float],
    ) -> None:
        """Answer 503 at once from the accepting thread, then drain the request until the
        client closes (so that closing does not reset the connection before the client has
        read the answer)."""
        if self._closing:
            text = SHUTTING_DOWN
        else:
            text = (
                f"The server is at its limit of {self.max_connections} connections; "
                f"try again in {self.retry_after} s."
            )
        self.logger.info("! refused a connection: %s", text)
        response = self._unavailable(ServerProtocol(server_header=self.server_header), text)
        if self.ssl is not None:
            # The answer needs a TLS handshake first: a short-lived thread does it, at most
            # MAX_TLS_REFUSALS at a time (past that, extras are closed without an answer).
            if not self._tls_refusals.acquire(blocking=False):
                sock.close()
                return
            thread = threading.Thread(target=self._refuse_tls, args=(sock, response), daemon=True)
            thread.name = f"tether-refusal-{thread.name}"
            with self._lock:
                self._refusal_threads.add(thread)
            thread.start()
            return
        try:
            sock.setblocking(False)
            sock.send(response.serialize())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(lingering) >= MAX_LINGERING:
            sock.close()
            return
        lingering[sock] = time.monotonic() + (self.close_timeout or 10)
        selector.register(sock, selectors.EVENT_READ, "linger")

    def _refuse_tls(self, sock: socket.socket, response: Response) -> None:
        deadline = time.monotonic() + min(
            self.open_timeout or TLS_REFUSAL_TIMEOUT, TLS_REFUSAL_TIMEOUT
        )
        try:
            assert self.ssl is not None
            transport = TLSTransport(sock, self.ssl, server_side=True, deadline=deadline)
            transport.sendall(response.serialize())
            transport.shutdown_write()
            while transport.recv(READ_SIZE, max(0.0, deadline - time.monotonic())):
                pass
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()
            self._tls_refusals.release()
            with self._lock:
                self._refusal_threads.discard(threading.current_thread())

    def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        """Stop accepting connections, close every open one with ``code`` (1001 by default),
        and wait for their threads: at most ``close_timeout`` for the closing handshakes, after
        which the remaining TCP connections are dropped. Safe to call from any thread (a
        handler's included) and more than once."""
        with self._lock:
            first = not self._closing
            self._closing = True
        if not first:
            self._shut_down.wait(None if self.close_timeout is None else self.close_timeout + 5)
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        in_loop = threading.current_thread() is self._serving_thread and not self._stopped.is_set()
        if not in_loop:
            self._stopped.wait()
            self._close_sockets()
        # else: a signal handler interrupted serve_forever() in this thread; the loop ends,
        # and closes the sockets, once the handler returns (it was woken above).
        current = threading.current_thread()
        with self._lock:
            connections = list(self.connections)
            threads = [t for t in (*self._threads, *self._refusal_threads) if t is not current]
        for connection in connections:
            if connection.state is State.OPEN:
                try:
                    connection.start_closing(code, reason)
                except ConnectionClosed:
                    pass
            elif connection.state is State.CONNECTING:
                connection.transport.abort()
        timeout = self.close_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        stragglers = [t for t in threads if t.is_alive()]
        if stragglers:
            with self._lock:
                connections = list(self.connections)
            for connection in connections:
                connection.transport.abort()
            for thread in stragglers:
                thread.join(1)
            alive = [t.name for t in stragglers if t.is_alive()]
            if alive:
                self.logger.warning("! handler threads still running after shutdown: %s", alive)
        self._shut_down.set()

    def _close_sockets(self) -> None:
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- one connection -----------------------------------------------------------------------

    def _run_connection(self, sock: socket.socket) -> None:
        connection: ServerConnection | None = None
        try:
            connection = self._open(sock)
            if connection is not None and connection._thread is not None:  # it opened
                self._run_handler(connection)
        except Exception:
            self.logger.error("! connection thread failed", exc_info=True)
        finally:
            if connection is not None:
                connection.wait_closed()
            else:
                sock.close()
            with self._lock:
                if connection is not None:
                    self.connections.discard(connection)
                self._threads.discard(threading.current_thread())

    def _open(self, sock: socket.socket) -> ServerConnection | None:
        """The opening handshake. Returns the connection, started if the handshake succeeded,
        else closed after writing the refusal; ``None`` when the TLS handshake failed."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timeout = self.open_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        transport: Transport
        try:
            if self.ssl is not None:
                transport = TLSTransport(sock, self.ssl, server_side=True, deadline=deadline)
            else:
                transport = Transport(sock)
        except (OSError, TimeoutError) as exc:
            self.logger.info("! TLS handshake failed: %s", exc)
            return None
        connection: ServerConnection
        protocol = self.options.make_protocol(lambda: connection)
        connection = ServerConnection(self, transport, protocol)
        with self._lock:
            self.connections.add(connection)
        try:
            while protocol.request is None and protocol.state is State.CONNECTING:
                if protocol.handshake_exc is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                data = transport.recv(READ_SIZE, remaining)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
        except TimeoutError:
            connection.logger.info("! opening handshake timed out")
            transport.abort()
            connection.wait_closed()
            return connection
        request = protocol.request
        if request is not None and protocol.state is State.CONNECTING:
            response = self._decide(connection, request)
            protocol.send_response(response)
            if response.status == 101:
                connection.logger.info(
                    "%s %s: %s", request.method, request.path, protocol.handshake.describe()
                )
            else:
                connection.logger.info(
                    "%s %s: HTTP %d", request.method, request.path, response.status
                )
        try:
            for output in protocol.data_to_send():
                if output:
                    transport.sendall(output)
                else:
                    transport.shutdown_write()
        except OSError:
            connection.wait_closed()
            return connection
        if protocol.state is State.OPEN:
            connection.start()
            return connection
        # Refused: drain what the client still sends until it closes, then close.
        linger = self.close_timeout if self.close_timeout is not None else 10
        until = time.monotonic() + linger
        with contextlib.suppress(TimeoutError, OSError):
            while transport.recv(READ_SIZE, max(0.0, until - time.monotonic())):
                pass
        connection.wait_closed()
        return connection

    def _decide(self, connection: ServerConnection, request: Request) -> Response:
        protocol = connection.protocol
        response: Response | None = None
        try:
            if self.process_request is not None:
                response = self.process_request(connection, request)
            if response is None:
                response = protocol.accept(request)
            if self.process_response is not None:
                replaced = self.process_response(connection, request, response)
                if replaced is not None:
                    response = replaced
        except Exception:
            connection.logger.error("! error in the opening handshake hooks", exc_info=True)
            response = protocol.reject(500, "Internal server error.")
        if response.status == 101 and self._closing:
            response = self._unavailable(protocol, SHUTTING_DOWN)
        return response

    def _unavailable(self, protocol: ServerProtocol, text: str) -> Response:
        """503 with ``text`` and ``Retry-After``: the server cannot take the connection now."""
        return protocol.reject(503, text, [("Retry-After", str(self.retry_after))])

    def _run_handler(self, connection: ServerConnection) -> None:
        try:
            self.handler(connection)
        except ConnectionClosed:
            pass
        except Exception:
            connection.logger.error("! connection handler failed", exc_info=True)
            if connection.state is State.OPEN:
                connection.fail(CloseCode.INTERNAL_ERROR, "")
        connection.close()


#: ``serve(handler, host, port, ...)``: listen for WebSocket connections (see :class:`Server`).
serve = Server
