"""Run ASGI apps under uvicorn with tether's protocol class, in-process or as a subprocess.

uvicorn is a test dependency (the ``asgi-test`` extra), not tether's: :func:`require_module`
skips a test when it is missing, or fails it when ``TETHER_NO_SKIP`` is set (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

__all__ = ["UvicornProcess", "raw_handshake", "require_module", "uvicorn_server"]

WS = "tether.asgi:UvicornProtocol"


def require_module(name: str) -> ModuleType:
    """Import ``name``, or skip (fail with ``TETHER_NO_SKIP``) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        reason = f"{name} is not installed (pip install -e '.[asgi-test]')"
        if os.environ.get("TETHER_NO_SKIP"):
            pytest.fail(f"{reason} (TETHER_NO_SKIP is set)", pytrace=False)
        pytest.skip(reason)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def uvicorn_server(
    app: Any, unix_path: str | None = None, **options: Any
) -> AsyncIterator[tuple[Any, int]]:
    """uvicorn serving ``app`` on 127.0.0.1 (or on the Unix socket ``unix_path``, port 0) with
    tether's class: yields (server, port).

    ``options`` go to ``uvicorn.Config`` (``ws`` defaults to tether's class). Logging is left
    as it is (``log_config=None``), so ``caplog`` sees ``uvicorn.error``.
    """
    uvicorn = require_module("uvicorn")
    options.setdefault("ws", WS)
    options.setdefault("lifespan", "off")
    config = uvicorn.Config(app, log_config=None, **options)
    server = uvicorn.Server(config)
    if unix_path is None:
        sock = _listening_socket()
        port = sock.getsockname()[1]
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix_path)
        sock.listen(16)
        port = 0
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(15):
                await task
        finally:
            sock.close()


async def send_upgrade(
    port: int, path: str = "/", extra: Sequence[str] = (), rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection (with ``rcvbuf``: that small a receive buffer, set before
    connecting) and send an upgrade request; return (reader, writer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return reader, writer


async def raw_handshake(
    port: int, path: str = "/", extra: Sequence[str] = (), rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """:func:`send_upgrade`, then wait for the response head: (reader, writer, head)."""
    reader, writer = await send_upgrade(port, path, extra, rcvbuf)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


class UvicornProcess:
    """``uvicorn APP --ws tether.asgi:UvicornProtocol`` in a subprocess, on a socket bound here
    (``--fd``), so the port is known before it starts and no other process can take it."""

    def __init__(self, app: str, app_dir: Path, *args: str) -> None:
        require_module("uvicorn")
        self.sock = _listening_socket()
        self.port: int = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir)]
        command += ["--ws", WS, "--fd", str(fd), "--log-level", "warning", *args]
        self.process = subprocess.Popen(
            command,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(self.url("/"), timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> str:
        """Stop uvicorn (SIGTERM, then SIGKILL after 10 s); return what it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.sock.close()
        return self.process.stdout.read().decode() if self.process.stdout else ""

    @classmethod
    @contextlib.contextmanager
    def running(cls, app: str, app_dir: Path, *args: str) -> Iterator[UvicornProcess]:
        server = cls(app, app_dir, *args)
        try:
            server.wait_ready()
            yield server
        finally:
            server.close()
