"""``connect()``: a threading WebSocket client.

::

    from tether.sync import connect

    with connect("ws://127.0.0.1:8765/chat", subprotocols=["chat"]) as ws:
        ws.send("hello")
        reply = ws.recv(timeout=10)
"""

from __future__ import annotations

import logging
import os
import socket
import ssl as ssl_module
import time
from collections.abc import Sequence
from typing import Literal, Never

from ..exceptions import (
    ConnectionLostDuringHandshake,
    InvalidProxy,
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
from ..sansio.client import ClientProtocol, HeadersLike
from ..sansio.protocol import State
from ..sansio.proxy import (
    HTTPConnectTunnel,
    Proxy,
    SOCKS5Tunnel,
    Tunnel,
    parse_proxy,
    proxy_from_environment,
)
from ..sansio.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike
from .connection import READ_SIZE, Connection, TLSTransport, Transport

__all__ = ["ClientConnection", "connect"]


class ClientConnection(Connection):
    """A client connection, returned by :func:`connect`."""

    protocol: ClientProtocol


def connect(
    uri: str,
    *,
    # Handshake.
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    require_subprotocol: bool = False,
    compression: Compression = "deflate",
    extensions: Sequence[ClientExtensionFactory] | None = None,
    additional_headers: HeadersLike | None = None,
    user_agent: str | None = DEFAULT_USER_AGENT,
    max_redirects: int = 10,
    # TLS.
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    # Timeouts.
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    # Limits and logging.
    limits: Limits | None = None,
    logger: LoggerLike | None = None,
    # The socket.
    proxy: str | Literal[True] | None = True,
    sock: socket.socket | None = None,
    **unknown: Never,
) -> ClientConnection:
    """Open a WebSocket connection: ``with connect(uri) as ws: ...`` or ``ws = connect(uri)``.

    Args:
        uri: ``ws://`` or ``wss://`` URI.
        origin: the ``Origin`` header.
        subprotocols: subprotocols to offer, in order of preference.
        require_subprotocol: fail unless the server selects one.
        compression: ``"deflate"`` (default), a preset name, ``DeflateSettings`` or ``None``.
        extensions: more client extension factories.
        additional_headers: extra request headers.
        user_agent: the ``User-Agent`` header (``None``: none).
        max_redirects: how many 3xx redirects to follow (a fresh key each time).
        ssl: an ``ssl.SSLContext`` for wss:// (the default context when omitted).
        server_hostname: name to check the certificate against.
        open_timeout: seconds for the TCP/TLS connection and the handshake, redirects included.
        ping_interval: seconds between keepalive pings (``None`` turns keepalive off).
        ping_timeout: seconds to wait for a pong; a missed pong fails the connection with 1011.
        close_timeout: seconds to wait for the closing handshake.
        limits: a :class:`~tether.limits.Limits`.
        logger: where to log (``logging.getLogger("tether.client")`` by default).
        proxy: ``True`` (default) takes the proxy from ``https_proxy`` (wss) or
            ``http_proxy`` (ws), then ``all_proxy``, unless ``no_proxy`` lists the host;
            ``None`` connects directly; or a proxy URL: ``http://`` (CONNECT), ``socks5://``
            (the name resolved here) or ``socks5h://`` (by the proxy). Credentials in the URL
            authenticate to the proxy.
        sock: a connected socket to use instead of opening one (no redirects then).

    Any other keyword raises ``TypeError`` naming it; websockets' spellings (``max_size``,
    ``extra_headers``...) name tether's equivalent, as in :func:`tether.asyncio.connect`.

    Raises:
        InvalidHandshake: the server refused (``InvalidStatus`` carries the response) or
            answered wrongly; ``InvalidRedirect`` for too many redirects or one from wss://
            to ws://.
        InvalidProxy: the proxy cannot be reached (``retryable``) or refused the tunnel (its
            HTTP status or SOCKS5 reply is in the message).
        OpenTimeout: ``open_timeout`` elapsed (also a ``TimeoutError``).
        ConnectionFailed: the TCP or TLS connection could not be opened (also an ``OSError``
            and an instance of the original error's class, its ``__cause__``).
    """
    check_unknown_keywords("connect", unknown)
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str such as 'ws://host/path', got {uri!r}")
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
    options: ClientOptions = pick(ClientOptions, locals())
    log: LoggerLike = logger if logger is not None else logging.getLogger("tether.client")
    deadline = None if open_timeout is None else time.monotonic() + open_timeout
    target = parse_uri(uri)
    if ssl is not None and not target.secure:
        raise ValueError("an ssl context was given for a ws:// URI; use wss://")
    for _ in range(max_redirects + 1):
        protocol = options.make_protocol(target)
        try:
            connection = _attempt(
                target,
                protocol,
                deadline,
                sock=sock,
                proxy=proxy,
                user_agent=user_agent,
                ssl=ssl,
                server_hostname=server_hostname,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                logger=log,
            )
        except TimeoutError as exc:
            if isinstance(exc, TetherError) or open_timeout is None:
                raise  # or the kernel's connect timeout (ETIMEDOUT)
            raise OpenTimeout(
                f"could not connect to {target} and finish the opening handshake within "
                f"open_timeout={open_timeout:g} s"
            ) from exc
        except InvalidStatus as exc:
            following = None if sock is not None else redirect_target(target, exc)
            if following is None:
                raise
            log.info("redirected (%d) to %s", exc.response.status, following)
            target = following
            continue
        connection.logger.info(
            "connected to %s: %s", target, connection.protocol.handshake.describe()
        )
        connection.start()
        return connection
    raise too_many_redirects(max_redirects)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out during the opening handshake")
    return remaining


def _connect_failed(exc: OSError, uri: WebSocketURI, deadline: float | None) -> Never:
    """Opening the TCP or TLS connection failed with ``exc``: raise a ``ConnectionFailed``
    from it, as the asyncio layer does, but let the deadline's ``TimeoutError`` (connect()
    makes it an ``OpenTimeout``) and tether's own errors through as they are."""
    if isinstance(exc, TetherError) or (isinstance(exc, TimeoutError) and deadline is not None):
        raise exc
    raise connection_failed(exc, f"could not connect to {uri.host}:{uri.port}") from exc


def _open_tunnel(
    proxy: Proxy, uri: WebSocketURI, deadline: float | None, user_agent: str | None
) -> socket.socket:
    """A socket to ``uri``'s host and port through ``proxy`` (HTTP CONNECT or SOCKS5)."""
    tunnel: Tunnel
    if proxy.scheme == "http":
        tunnel = HTTPConnectTunnel(proxy, uri.host, uri.port, user_agent=user_agent)
    else:
        host = uri.host
        if proxy.scheme == "socks5":  # resolve here; socks5h lets the proxy do it
            infos = socket.getaddrinfo(host, uri.port, type=socket.SOCK_STREAM)
            host = str(infos[0][4][0])
        tunnel = SOCKS5Tunnel(proxy, host, uri.port)
    try:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=_remaining(deadline))
    except OSError as exc:
        raise InvalidProxy(
            str(proxy), f"cannot connect to the proxy: {exc}", retryable=True
        ) from exc
    try:
        sock.sendall(tunnel.data_to_send())
        while not tunnel.established:
            sock.settimeout(_remaining(deadline))
            try:
                data = sock.recv(READ_SIZE)
            except (ConnectionError, ssl_module.SSLError) as exc:
                raise InvalidProxy(
                    str(proxy),
                    f"connection to the proxy lost during its handshake: {exc}",
                    retryable=True,
                ) from exc
            if data:
                tunnel.receive_data(data)
            else:
                tunnel.receive_eof()
            output = tunnel.data_to_send()
            if output:
                sock.sendall(output)
        if tunnel.leftover:
            # The target speaks after the client (TLS ClientHello, WebSocket request).
            raise InvalidProxy(str(proxy), "the tunnel sent data before the client spoke")
    except BaseException:
        sock.close()
        raise
    return sock


def _attempt(
    uri: WebSocketURI,
    protocol: ClientProtocol,
    deadline: float | None,
    *,
    sock: socket.socket | None,
    proxy: str | Literal[True] | None,
    user_agent: str | None,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    logger: LoggerLike,
) -> ClientConnection:
    if sock is None:
        through = None
        if proxy is not None:
            url = proxy_from_environment(uri, os.environ) if proxy is True else proxy
            through = None if url is None else parse_proxy(url)
        if through is None:
            try:
                sock = socket.create_connection((uri.host, uri.port), timeout=_remaining(deadline))
            except OSError as exc:
                _connect_failed(exc, uri, deadline)
        else:
            logger.debug("connecting to %s through proxy %s", uri, through)
            sock = _open_tunnel(through, uri, deadline, user_agent)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a Unix socket)
    try:
        transport: Transport
        if uri.secure:
            context = ssl if ssl is not None else ssl_module.create_default_context()
            try:
                transport = TLSTransport(
                    sock,
                    context,
                    server_side=False,
                    server_hostname=server_hostname or uri.host,
                    deadline=deadline,
                )
            except OSError as exc:
                _connect_failed(exc, uri, deadline)
        else:
            transport = Transport(sock)
        connection = ClientConnection(
            transport,
            protocol,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            logger=logger,
        )
        protocol.send_request(protocol.connect())
        for data in protocol.data_to_send():
            transport.sendall(data)
        while protocol.response is None and protocol.state is State.CONNECTING:
            data = transport.recv(READ_SIZE, _remaining(deadline))
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if protocol.response is None:
            raise ConnectionLostDuringHandshake("server", protocol.reader.received)
        # Open, or already closing or closed by what came with the response: either way the
        # handshake succeeded, and the application reads the rest.
        return connection
    except BaseException:
        sock.close()
        raise
