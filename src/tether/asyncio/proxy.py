"""Opening a client connection through an HTTP ``CONNECT`` or a SOCKS5 proxy (asyncio).

The proxy protocols are sans-I/O (:mod:`tether.sansio.proxy`); this module connects to the
proxy, shuttles the handshake bytes, then hands the transport to the WebSocket connection,
after a TLS handshake with the target over the tunnel for ``wss://`` (``loop.start_tls``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any, cast

from ..exceptions import InvalidProxy
from ..sansio.proxy import HTTPConnectTunnel, Proxy, SOCKS5Tunnel, Tunnel
from ..sansio.uri import WebSocketURI

__all__ = ["open_through_proxy"]


class _TunnelProtocol(asyncio.Protocol):
    """Drives a :class:`~tether.sansio.proxy.Tunnel` until it is established or fails."""

    def __init__(self, tunnel: Tunnel, done: asyncio.Future[None]) -> None:
        self.tunnel = tunnel
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.tunnel.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            self.tunnel.receive_data(data)
        except InvalidProxy as exc:
            self.done.set_exception(exc)
            return
        assert self.transport is not None
        output = self.tunnel.data_to_send()
        if output:
            self.transport.write(output)
        if self.tunnel.established:
            self.transport.pause_reading()
            self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            try:
                self.tunnel.receive_eof()
            except InvalidProxy as exc:
                self.done.set_exception(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(
                InvalidProxy(
                    str(self.tunnel.proxy),
                    f"connection to the proxy lost during its handshake: {exc}"
                    if exc is not None
                    else "the proxy closed the connection during its handshake",
                    retryable=True,
                )
            )


async def open_through_proxy(
    proxy: Proxy,
    factory: Callable[[], asyncio.BufferedProtocol],
    uri: WebSocketURI,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    user_agent: str | None = None,
    **kwargs: Any,
) -> asyncio.BufferedProtocol:
    """Connect to ``uri``'s host and port through ``proxy``; return ``factory()``, connected.

    ``kwargs`` go to ``loop.create_connection`` for the connection to the proxy.

    Raises:
        InvalidProxy: the proxy cannot be reached (``retryable``), or refused (its HTTP
            status or SOCKS5 reply is in the message).
        OSError: (``socks5://``) the target's name cannot be resolved here.
        ssl.SSLError: the TLS handshake with the target failed.
    """
    loop = asyncio.get_running_loop()
    tunnel: Tunnel
    if proxy.scheme == "http":
        tunnel = HTTPConnectTunnel(proxy, uri.host, uri.port, user_agent=user_agent)
    else:
        host = uri.host
        if proxy.scheme == "socks5":  # resolve here; socks5h lets the proxy do it
            infos = await loop.getaddrinfo(host, uri.port, type=socket.SOCK_STREAM)
            host = str(infos[0][4][0])
        tunnel = SOCKS5Tunnel(proxy, host, uri.port)
    done: asyncio.Future[None] = loop.create_future()
    try:
        transport, _ = await loop.create_connection(
            lambda: _TunnelProtocol(tunnel, done), proxy.host, proxy.port, **kwargs
        )
    except OSError as exc:
        raise InvalidProxy(
            str(proxy), f"cannot connect to the proxy: {exc}", retryable=True
        ) from exc
    try:
        await done
        leftover = tunnel.leftover
        if leftover:
            # The target speaks after the client (TLS ClientHello, WebSocket request).
            raise InvalidProxy(str(proxy), "the tunnel sent data before the client spoke")
        connection = factory()
        if ssl is not None:
            tls = await loop.start_tls(
                transport, connection, ssl, server_hostname=server_hostname or uri.host
            )
            if tls is None:  # pragma: no cover - only when the loop closes meanwhile
                raise ConnectionError("the event loop closed during the TLS handshake")
            transport = tls
        else:
            transport.set_protocol(connection)
        connection.connection_made(transport)
        transport.resume_reading()
    except BaseException:
        transport.abort()
        raise
    return connection
