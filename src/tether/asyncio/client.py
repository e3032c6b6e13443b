"""``connect()``: an asyncio WebSocket client.

::

    async with connect("ws://127.0.0.1:8765/chat", subprotocols=["chat"]) as ws:
        await ws.send("hello")
        reply = await ws.recv()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, Literal, Never

from ..exceptions import (
    ConnectionLostDuringHandshake,
    InvalidStatus,
    OpenTimeout,
    TetherError,
    connection_failed,
)
from ..extensions.base import ClientExtensionFactory
from ..limits import Limits
from ..options import (
    DEFAULT_USER_AGENT,
    ClientOptions,
    Compression,
    check_unknown_keywords,
    pick,
)
from ..redirects import redirect_target, too_many_redirects
from ..sansio.backoff import Backoff
from ..sansio.client import ClientProtocol
from ..sansio.http11 import HeadersLike, Response
from ..sansio.proxy import Proxy, parse_proxy, proxy_from_environment
from ..sansio.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike
from .connection import Connection
from .proxy import open_through_proxy
from .reconnect import ProcessException, reconnect

__all__ = ["ClientConnection", "connect"]


class ClientConnection(Connection):
    """A client connection, returned by :func:`connect`."""

    protocol: ClientProtocol

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.handshake_waiter: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _handle_event(self, event: object) -> None:
        if isinstance(event, Response) and not self.handshake_waiter.done():
            exc = self.protocol.handshake_exc
            if exc is None:
                self.handshake_waiter.set_result(None)
            else:
                self.handshake_waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.handshake_waiter.done():
            error = (
                self.protocol.handshake_exc
                or exc
                or ConnectionLostDuringHandshake("server", self.protocol.reader.received)
            )
            self.handshake_waiter.set_exception(error)
            self.handshake_waiter.exception()  # retrieved by connect(); no warning if not


class connect:
    """Open a WebSocket connection: ``async with connect(uri) as ws`` or ``ws = await
    connect(uri)``.

    Args:
        uri: ``ws://`` or ``wss://`` URI.
        origin: the ``Origin`` header.
        subprotocols: subprotocols to offer, in order of preference.
        require_subprotocol: fail unless the server selects one.
        compression: ``"deflate"`` (default), a preset name, ``DeflateSettings`` or ``None``.
        extensions: more client extension factories (offered before ``compression``'s).
        additional_headers: more request headers: a mapping, ``(name, value)`` pairs or
            ``Headers``.
        user_agent: the ``User-Agent`` header (``None`` for none).
        open_timeout: seconds for the TCP/TLS connection and the handshake, per attempt.
        max_redirects: how many 3xx redirects to follow (a fresh key each time).
        ping_interval: seconds between keepalive pings (``None`` turns keepalive off).
        ping_timeout: seconds to wait for a pong; a missed pong closes with 1011.
        close_timeout: seconds to wait for the closing handshake.
        limits: a :class:`~tether.limits.Limits`.
        ssl: an ``ssl.SSLContext`` for wss:// (the default context when omitted).
        server_hostname: name to check the certificate against.
        logger: where to log (``logging.getLogger("tether.client")`` by default).
        backoff: the delays between attempts of ``async for ws in connect(uri)``, a
            :class:`~tether.sansio.backoff.Backoff` (exponential with jitter).
        process_exception: ``(exc) -> exc | None`` for ``async for``: ``None`` retries, an
            exception is raised. The default retries network errors, timeouts, a connection
            lost during the handshake and 500/502/503/504; it raises on any other refusal.
        proxy: ``True`` (default) takes the proxy from ``https_proxy`` (wss) or
            ``http_proxy`` (ws), then ``all_proxy``, unless ``no_proxy`` lists the host;
            ``None`` connects directly; or a URL: ``http://user:password@host:port`` (HTTP
            ``CONNECT``), ``socks5://...`` (the name is resolved here) or ``socks5h://...``
            (by the proxy). Credentials in the URL authenticate to the proxy.
        sock: an already connected socket to use instead of connecting to the URI's host.
        family, local_addr, happy_eyeballs_delay, interleave: passed to
            :meth:`asyncio.loop.create_connection`.
        ssl_handshake_timeout, ssl_shutdown_timeout: passed to it too.

    ``async for ws in connect(uri):`` reconnects: each iteration yields an open connection;
    when the body ends, the connection is closed and the next iteration connects again;
    failed attempts are retried as ``process_exception`` says, each retry logged at INFO.

    Any other keyword raises ``TypeError`` naming it; websockets' spellings (``max_size``,
    ``extra_headers``, ``user_agent_header``...) name tether's equivalent.

    Raises:
        ConnectionFailed: the TCP or TLS connection could not be opened; it is also the
            ``OSError`` subclass that failed (``ConnectionRefusedError``,
            ``ssl.SSLCertVerificationError``...), with its ``errno``.
        InvalidProxy: the proxy refused the tunnel (its HTTP status or SOCKS5 reply is in
            the message) or its URL is not usable.
        OpenTimeout: ``open_timeout`` elapsed (also a ``TimeoutError``).
        InvalidStatus: the server answered with another status than 101 (``exc.response``
            holds it, e.g. a 401 and its body).
        InvalidRedirect: too many redirects, or one from wss:// to ws://.
        ConnectionLostDuringHandshake: the server closed the connection before its answer
            was complete (typically while it restarts).
        InvalidHandshake: any other handshake failure (the base class of the three above),
            such as a bad ``Sec-WebSocket-Accept`` or an unexpected subprotocol or extension.
        InvalidURI: ``uri`` is not a ws:// or wss:// URI.
    """

    def __init__(
        self,
        uri: str,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        require_subprotocol: bool = False,
        compression: Compression = "deflate",
        extensions: Sequence[ClientExtensionFactory] | None = None,
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = DEFAULT_USER_AGENT,
        open_timeout: float | None = 10,
        max_redirects: int = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        limits: Limits | None = None,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        logger: LoggerLike | None = None,
        backoff: Backoff | None = None,
        process_exception: ProcessException | None = None,
        proxy: str | Literal[True] | None = True,
        sock: socket.socket | None = None,
        family: int = 0,
        local_addr: tuple[str, int] | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        **unknown: Never,
    ) -> None:
        check_unknown_keywords("connect", unknown)
        if not isinstance(uri, str):
            raise TypeError(f"uri must be a str such as 'ws://host/path', got {uri!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
        #: The WebSocket options, validated (shared with the other I/O layers).
        self.options: ClientOptions = pick(ClientOptions, locals())
        self.uri = uri
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.client")
        )
        self.sock = sock
        #: Options of :meth:`asyncio.loop.create_connection` for TCP.
        self.create_connection_options: dict[str, Any] = {
            "family": family or None,
            "local_addr": local_addr,
            "happy_eyeballs_delay": happy_eyeballs_delay,
            "interleave": interleave,
        }
        self.ssl_timeouts: dict[str, float | None] = {
            "ssl_handshake_timeout": ssl_handshake_timeout,
            "ssl_shutdown_timeout": ssl_shutdown_timeout,
        }
        self.backoff = backoff if backoff is not None else Backoff()
        self.process_exception = process_exception
        self.proxy = proxy
        self.connection: ClientConnection | None = None

    @property
    def user_agent(self) -> str | None:
        return self.options.user_agent

    def _protocol(self, uri: WebSocketURI) -> ClientProtocol:
        return self.options.make_protocol(uri)

    async def _open(
        self, factory: Callable[[], ClientConnection], uri: WebSocketURI, kwargs: dict[str, Any]
    ) -> ClientConnection:
        """Open the transport (``kwargs`` holds ``ssl`` and ``server_hostname`` for wss)."""
        loop = asyncio.get_running_loop()
        proxy = self._proxy_for(uri)
        if proxy is not None:
            self.logger.debug("connecting to %s through proxy %s", uri, proxy)
            opened = await open_through_proxy(
                proxy, factory, uri, user_agent=self.user_agent, **kwargs
            )
            assert isinstance(opened, ClientConnection)
            return opened
        if self.sock is not None:
            _, connection = await loop.create_connection(factory, sock=self.sock, **kwargs)
            return connection
        tcp = {k: v for k, v in self.create_connection_options.items() if v is not None}
        _, connection = await loop.create_connection(factory, uri.host, uri.port, **tcp, **kwargs)
        return connection

    def _proxy_for(self, uri: WebSocketURI) -> Proxy | None:
        if self.proxy is None or self.sock is not None:
            return None
        url = proxy_from_environment(uri, os.environ) if self.proxy is True else self.proxy
        return None if url is None else parse_proxy(url)

    async def _attempt(self, uri: WebSocketURI) -> ClientConnection:
        ssl: ssl_module.SSLContext | None = None
        if uri.secure:
            ssl = self.ssl if self.ssl is not None else ssl_module.create_default_context()
        elif self.ssl is not None:
            raise ValueError("an ssl context was given for a ws:// URI; use wss://")
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["server_hostname"] = self.server_hostname or uri.host
            kwargs.update((k, v) for k, v in self.ssl_timeouts.items() if v is not None)
        options = self.options

        def factory() -> ClientConnection:
            return ClientConnection(
                self._protocol(uri),
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                close_timeout=options.close_timeout,
                logger=self.logger,
            )

        try:
            connection = await self._open(factory, uri, kwargs)
        except TetherError:
            raise
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors too
            path = getattr(self, "path", None)  # unix_connect
            where = f"Unix socket {path!r}" if path is not None else f"{uri.host}:{uri.port}"
            raise connection_failed(exc, f"could not connect to {where}") from exc
        try:
            await connection.handshake_waiter
        except BaseException:
            if connection.transport is not None:
                connection.transport.abort()
            raise
        return connection

    async def _connect(self) -> ClientConnection:
        uri = parse_uri(self.uri)
        max_redirects = self.options.max_redirects
        for _ in range(max_redirects + 1):
            try:
                async with asyncio.timeout(self.options.open_timeout):
                    connection = await self._attempt(uri)
            except TimeoutError as exc:
                if isinstance(exc, TetherError):
                    raise
                raise OpenTimeout(
                    f"could not connect to {uri} and finish the opening handshake within "
                    f"open_timeout={self.options.open_timeout:g} s"
                ) from exc
            except InvalidStatus as exc:
                target = redirect_target(uri, exc)
                if target is None:
                    raise
                self.logger.info("redirected (%d) to %s", exc.response.status, target)
                uri = target
                continue
            connection.logger.info(
                "connected to %s: %s", uri, connection.protocol.handshake.describe()
            )
            connection.start_keepalive()
            self.connection = connection
            return connection
        raise too_many_redirects(max_redirects)

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._connect()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    def __aiter__(self) -> AsyncIterator[ClientConnection]:
        return reconnect(
            lambda: self,
            backoff=self.backoff,
            process_exception=self.process_exception,
            logger=self.logger,
            target=self.uri,
        )
