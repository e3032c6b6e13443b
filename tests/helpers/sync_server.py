"""Helpers for the threading layer's tests: a server running in a thread, and what a leak
check counts (threads, sockets and file descriptors)."""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from tether.sync import Server, serve

__all__ = ["open_fds", "running", "running_on", "tls_contexts", "uri"]


def open_fds() -> dict[int, str]:
    """This process's file descriptors and what they point to (``socket:[inode]``, a path)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


@contextlib.contextmanager
def running_on(host: str, handler: Any = _echo, **kwargs: Any) -> Iterator[Server]:
    """:func:`running` on another loopback address (``"::1"``)."""
    with running(handler, host=host, **kwargs) as server:
        yield server


@contextlib.contextmanager
def running(handler: Any, host: str = "127.0.0.1", **kwargs: Any) -> Iterator[Server]:
    """``serve(handler, host, 0, **kwargs)`` with ``serve_forever`` in a thread; shut down (and
    every thread joined) on the way out."""
    server = serve(handler, host, 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, name="test-serve-forever")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        assert not thread.is_alive()


def uri(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port_number}{path}"


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context trusting it."""
    import trustme  # a test dependency: missing, the test fails rather than skips

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context
