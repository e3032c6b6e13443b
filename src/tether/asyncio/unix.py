"""WebSocket over Unix domain sockets: :func:`unix_serve` and :func:`unix_connect`.

::

    async with unix_serve(handler, "/run/app/ws.sock", mode=0o660):
        ...

    async with unix_connect("/run/app/ws.sock", "ws://localhost/chat") as ws:
        ...

The WebSocket protocol is the same as over TCP (RFC 6455 does not care what carries the
bytes); the URI gives the ``Host`` header and the request path, and ``wss://`` runs TLS over
the Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from ..exceptions import InvalidUnixPath
from ..sansio.unixpath import check_unix_path
from ..sansio.uri import WebSocketURI
from .client import ClientConnection, connect
from .server import Handler, Server

__all__ = ["UnixServer", "unix_connect", "unix_serve"]


class UnixServer(Server):
    """A :class:`Server` listening on a Unix socket; the file is removed when it closes."""

    def __init__(
        self,
        handler: Handler,
        path: str | bytes | os.PathLike[str],
        *,
        mode: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, None, None, **kwargs)
        self.path = check_unix_path(path)
        self.mode = mode
        self._inode: tuple[int, int] | None = None

    def _abstract(self) -> bool:
        return os.fsencode(self.path).startswith(b"\0")

    def _bind(self) -> socket.socket:
        if not self._abstract():
            _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            if not self._abstract():
                if self.mode is not None:
                    # Before listen(): until then, connecting fails, so there is no window
                    # in which the umask's permissions let someone in.
                    os.chmod(self.path, self.mode)
                info = os.stat(self.path)
                self._inode = (info.st_dev, info.st_ino)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self) -> UnixServer:
        self.sock = self._bind()
        await super().start()
        return self

    def close(self, close_connections: bool = True) -> None:
        super().close(close_connections)
        self._unlink()

    def _unlink(self) -> None:
        # Remove the file only if it is still ours (a new server may have replaced it).
        if self._inode is None:
            return
        inode, self._inode = self._inode, None
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == inode:
                os.unlink(self.path)


def _remove_stale_socket(path: str | bytes) -> None:
    """Remove a socket file left by a server that is gone; refuse to replace anything else."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise InvalidUnixPath(
            f"{path!r} exists and is not a socket; remove it or choose another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: stale
        return
    except OSError:
        pass  # busy (backlog full) or other: someone is there
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on the Unix socket {path!r}")


def unix_serve(
    handler: Handler,
    path: str | bytes | os.PathLike[str],
    *,
    mode: int | None = None,
    **kwargs: Any,
) -> UnixServer:
    """Create a WebSocket server on a Unix socket; start it with ``async with`` or ``await``.

    Args:
        handler: as for :func:`~tether.asyncio.server.serve`.
        path: the socket file (or, on Linux, an abstract name starting with ``"\\0"``). A
            stale socket file left by a dead server is replaced; a live one, or a file that
            is not a socket, is an error.
        mode: permissions of the socket file (``0o660`` lets the group connect), set before
            the server listens; the umask decides when ``None``.
        kwargs: every other :func:`serve` option (``ssl`` serves wss:// on the socket).

    Raises:
        InvalidUnixPath: the path is too long for a Unix socket, or exists and is not a socket.
        OSError: another server listens on the path, or the directory is not writable.
    """
    return UnixServer(handler, path, mode=mode, **kwargs)


class unix_connect(connect):
    """Open a WebSocket connection over a Unix socket: ``async with unix_connect(path) as ws``.

    Args:
        path: the socket file (or a Linux abstract name).
        uri: gives the ``Host`` header and the request path; ``wss://`` runs TLS over the
            socket, checking the certificate against the URI's host (or ``server_hostname``).
        kwargs: every other :func:`connect` option but ``proxy`` (no proxy is used);
            ``async for`` reconnects.

    Raises:
        InvalidUnixPath: the path is too long for a Unix socket.
        OSError: nothing listens on the path (``FileNotFoundError``, ``ConnectionRefusedError``).
        InvalidHandshake: as for :func:`connect`.
    """

    def __init__(
        self,
        path: str | bytes | os.PathLike[str],
        uri: str = "ws://localhost/",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("proxy", True) is not True and kwargs["proxy"] is not None:
            raise ValueError("unix_connect() does not go through a proxy; remove proxy=")
        super().__init__(uri, **kwargs)
        self.path = check_unix_path(path)

    async def _open(
        self, factory: Callable[[], ClientConnection], uri: WebSocketURI, kwargs: dict[str, Any]
    ) -> ClientConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_unix_connection(factory, os.fsdecode(self.path), **kwargs)
        return connection
