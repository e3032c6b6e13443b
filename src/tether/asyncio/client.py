"""``connect()``: an asyncio WebSocket client.

::

    async with connect("ws://127.0.0.1:8765/chat", subprotocols=["chat"]) as ws:
        await ws.send("hello")
        reply = await ws.recv()
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import urllib.parse
from collections.abc import Generator, Sequence
from typing import Any, Never

from ..exceptions import (
    ConnectionFailed,
    InvalidHandshake,
    InvalidStatus,
    OpenTimeout,
    TetherError,
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
from ..sansio.client import ClientProtocol
from ..sansio.http11 import HeadersLike, Response
from ..sansio.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike
from .connection import Connection

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
                or EOFError("connection closed during the opening handshake")
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
        sock: an already connected socket to use instead of connecting to the URI's host.
        family, local_addr, happy_eyeballs_delay, interleave, ssl_handshake_timeout,
            ssl_shutdown_timeout: passed to :meth:`asyncio.loop.create_connection`.

    Any other keyword raises ``TypeError`` naming it; websockets' spellings (``max_size``,
    ``extra_headers``, ``user_agent_header``...) name tether's equivalent.

    Raises:
        ConnectionFailed: the TCP or TLS connection could not be opened (also an
            ``OSError``, with its ``errno``).
        OpenTimeout: ``open_timeout`` elapsed (also a ``TimeoutError``).
        InvalidStatus: the server answered with another status than 101 (``exc.response``
            holds it, e.g. a 401 and its body).
        InvalidRedirect: too many redirects, or one from wss:// to ws://.
        InvalidHandshake: any other handshake failure (the base class of the two above),
            such as a bad ``Sec-WebSocket-Accept``, an unexpected subprotocol or extension,
            or a connection closed during the handshake.
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
        self.create_connection_options: dict[str, Any] = {
            "family": family,
            "local_addr": local_addr,
            "happy_eyeballs_delay": happy_eyeballs_delay,
            "interleave": interleave,
            "ssl_handshake_timeout": ssl_handshake_timeout,
            "ssl_shutdown_timeout": ssl_shutdown_timeout,
        }
        self.connection: ClientConnection | None = None

    def _protocol(self, uri: WebSocketURI) -> ClientProtocol:
        return self.options.make_protocol(uri)

    async def _attempt(self, uri: WebSocketURI) -> ClientConnection:
        loop = asyncio.get_running_loop()
        ssl: ssl_module.SSLContext | None = None
        if uri.secure:
            ssl = self.ssl if self.ssl is not None else ssl_module.create_default_context()
        elif self.ssl is not None:
            raise ValueError("an ssl context was given for a ws:// URI; use wss://")
        kwargs = {k: v for k, v in self.create_connection_options.items() if v is not None}
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["server_hostname"] = self.server_hostname or uri.host
        else:
            kwargs.pop("ssl_handshake_timeout", None)
            kwargs.pop("ssl_shutdown_timeout", None)
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
            if self.sock is not None:
                kwargs.pop("family", None)
                kwargs.pop("local_addr", None)
                _, connection = await loop.create_connection(factory, sock=self.sock, **kwargs)
            else:
                _, connection = await loop.create_connection(factory, uri.host, uri.port, **kwargs)
        except TetherError:
            raise
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors too
            message = f"could not connect to {uri.host}:{uri.port}: {exc.strerror or exc}"
            if exc.errno is None:
                raise ConnectionFailed(message) from exc
            raise ConnectionFailed(exc.errno, message) from exc
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
        raise InvalidRedirect(None, f"more than {max_redirects} redirects")

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._connect()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            await self.connection.close()


class InvalidRedirect(InvalidHandshake):
    """Too many redirects, or a redirect that would drop TLS."""

    def __init__(self, response: Response | None, reason: str) -> None:
        super().__init__(reason)
        self.response = response
        self.reason = reason

    def __str__(self) -> str:
        return self.reason
