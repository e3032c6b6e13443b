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
import ssl as ssl_module
import urllib.parse
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, Literal

from ..exceptions import ConnectionLostDuringHandshake, InvalidRedirect, InvalidStatus
from ..extensions.base import ClientExtensionFactory
from ..limits import Limits
from ..sansio.backoff import Backoff
from ..sansio.client import ClientProtocol, HeadersLike
from ..sansio.http11 import Response
from ..sansio.proxy import Proxy, parse_proxy, proxy_from_environment
from ..sansio.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike
from .compression import Compression, client_extensions
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
        extensions: more client extension factories.
        additional_headers: extra request headers.
        user_agent: the ``User-Agent`` header (``None`` for none).
        open_timeout: seconds for the TCP/TLS connection and the handshake, per attempt.
        max_redirects: how many 3xx redirects to follow (a fresh key each time).
        ping_interval, ping_timeout: keepalive (``None`` turns it off).
        close_timeout: seconds to wait for the closing handshake.
        limits: a :class:`~tether.limits.Limits`.
        ssl: an ``ssl.SSLContext`` for wss:// (the default context when omitted).
        server_hostname: name to check the certificate against.
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

    ``async for ws in connect(uri):`` reconnects: each iteration yields an open connection;
    when the body ends, the connection is closed and the next iteration connects again;
    failed attempts are retried as ``process_exception`` says, each retry logged at INFO.

    Raises:
        InvalidHandshake: the server refused (``InvalidStatus`` carries the response) or
            answered wrongly; ``TimeoutError`` when ``open_timeout`` elapses.
        InvalidProxy: the proxy refused the tunnel (its HTTP status or SOCKS5 reply is in
            the message) or its URL is not usable.
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
        user_agent: str | None = None,
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
        **create_connection_kwargs: Any,
    ) -> None:
        self.uri = uri
        self.origin = origin
        self.subprotocols = subprotocols
        self.require_subprotocol = require_subprotocol
        self.extensions = [*(extensions or ()), *client_extensions(compression)]
        self.additional_headers = additional_headers
        self.user_agent = user_agent
        self.open_timeout = open_timeout
        self.max_redirects = max_redirects
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.limits = limits
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.client")
        )
        self.create_connection_kwargs = create_connection_kwargs
        self.backoff = backoff if backoff is not None else Backoff()
        self.process_exception = process_exception
        self.proxy = proxy
        self.connection: ClientConnection | None = None

    def _protocol(self, uri: WebSocketURI) -> ClientProtocol:
        kwargs: dict[str, Any] = {}
        if self.user_agent is not None:
            kwargs["user_agent"] = self.user_agent
        return ClientProtocol(
            uri,
            origin=self.origin,
            subprotocols=self.subprotocols,
            require_subprotocol=self.require_subprotocol,
            extensions=self.extensions,
            extra_headers=self.additional_headers,
            limits=self.limits,
            assemble=False,
            **kwargs,
        )

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
        _, connection = await loop.create_connection(factory, uri.host, uri.port, **kwargs)
        return connection

    def _proxy_for(self, uri: WebSocketURI) -> Proxy | None:
        if self.proxy is None:
            return None
        url = proxy_from_environment(uri, os.environ) if self.proxy is True else self.proxy
        return None if url is None else parse_proxy(url)

    async def _attempt(self, uri: WebSocketURI) -> ClientConnection:
        ssl: ssl_module.SSLContext | None = None
        if uri.secure:
            ssl = self.ssl if self.ssl is not None else ssl_module.create_default_context()
        elif self.ssl is not None:
            raise ValueError("an ssl context was given for a ws:// URI; use wss://")
        kwargs = dict(self.create_connection_kwargs)
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["server_hostname"] = self.server_hostname or uri.host

        def factory() -> ClientConnection:
            return ClientConnection(
                self._protocol(uri),
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                close_timeout=self.close_timeout,
                logger=self.logger,
            )

        connection = await self._open(factory, uri, kwargs)
        try:
            await connection.handshake_waiter
        except BaseException:
            if connection.transport is not None:
                connection.transport.abort()
            raise
        return connection

    async def _connect(self) -> ClientConnection:
        uri = parse_uri(self.uri)
        for _ in range(self.max_redirects + 1):
            try:
                async with asyncio.timeout(self.open_timeout):
                    connection = await self._attempt(uri)
            except InvalidStatus as exc:
                location = exc.location
                if location is None:
                    raise
                target = parse_uri(urllib.parse.urljoin(str(uri), location))
                if uri.secure and not target.secure:
                    raise InvalidRedirect(exc.response, "redirect from wss:// to ws://") from exc
                self.logger.info("redirected (%d) to %s", exc.response.status, target)
                uri = target
                continue
            connection.logger.info(
                "connected to %s: %s", uri, connection.protocol.handshake.describe()
            )
            connection.start_keepalive()
            self.connection = connection
            return connection
        raise InvalidRedirect(None, f"more than {self.max_redirects} redirects")

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
