"""tether's demo server (``tether serve``): in a subprocess as users run it, or in a thread of
the test process, with a record.

:class:`ServeProcess` runs ``tether serve --port 0`` and reads its URL from the banner;
:func:`tether` runs any other ``tether`` command to completion.

Browser and Node tests drive the page and the endpoints of :class:`tether.cli.demo.DemoServer`
through a real socket on 127.0.0.1 (port 0), while the test reads what the server saw: each
handshake (what was offered and agreed) and each binary message echoed. It can also push raw
text into the chat room and close every connection with a given code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from tether import Server, ServerConnection, broadcast, serve
from tether.cli.demo import DEFAULT_SUBPROTOCOLS, DemoServer

__all__ = ["DemoThread", "ServeProcess", "http_get", "tether"]

TETHER = [sys.executable, "-m", "tether"]
URL_LINE = re.compile(r"serving on (https?)://127\.0\.0\.1:(\d+)/")
# The child's environment: no colours, UTF-8 whatever the locale.
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}


class ServeProcess:
    """``tether serve --port 0 ...`` in a subprocess; ``port`` is read from its output."""

    def __init__(self, *args: str, start_timeout: float = 15.0) -> None:
        self.process = subprocess.Popen(
            [*TETHER, "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, sink, feed in (
            (self.process.stdout, self.stdout, lines),
            (self.process.stderr, self.stderr, None),
        ):
            threading.Thread(target=self._drain, args=(stream, sink, feed), daemon=True).start()
        self.scheme = ""
        self.port = 0
        while not self.port:
            try:
                line = lines.get(timeout=start_timeout)
            except queue.Empty:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"tether serve printed no URL:\n{self.logs()}") from None
            if line is None:
                raise RuntimeError(f"tether serve exited early:\n{self.logs()}")
            match = URL_LINE.search(line)
            if match:
                self.scheme, self.port = match.group(1), int(match.group(2))
        # The banner ends with this line; wait for it so that tests can read the whole banner.
        while not self.stdout or not self.stdout[-1].startswith("Press Ctrl-C"):
            if lines.get(timeout=start_timeout) is None:
                raise RuntimeError(f"tether serve exited early:\n{self.logs()}")

    @staticmethod
    def _drain(stream: Any, sink: list[str], feed: queue.Queue[str | None] | None) -> None:
        for line in stream:
            sink.append(line)
            if feed is not None:
                feed.put(line)
        if feed is not None:
            feed.put(None)

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        if self.scheme == "https":
            scheme = {"ws": "wss", "http": "https"}[scheme]
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own; return the exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"tether serve did not exit:\n{self.logs()}") from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send ``sig`` and return the exit code (killing the process if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(
                    f"tether serve did not stop on {sig}:\n{self.logs()}"
                ) from None
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()


def tether(*args: str, input: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run one ``tether`` command to completion."""
    return subprocess.run(
        [*TETHER, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _RecordingDemo(DemoServer):
    def __init__(self) -> None:
        super().__init__()
        self.handshakes: list[dict[str, Any]] = []
        self.binary_received: list[bytes] = []

    async def handler(self, ws: ServerConnection) -> None:
        request, response = ws.request, ws.response
        assert request is not None and response is not None
        self.handshakes.append(
            {
                "path": request.path,
                "offered_protocols": request.headers.get_all("Sec-WebSocket-Protocol"),
                "offered_extensions": request.headers.get_all("Sec-WebSocket-Extensions"),
                "protocol": ws.subprotocol,
                "extensions": response.headers.get("Sec-WebSocket-Extensions"),
            }
        )
        await super().handler(ws)

    async def echo(self, ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                self.binary_received.append(message)
            await ws.send(message)


class DemoThread:
    """``with DemoThread() as demo:`` serves the demo until the block ends."""

    def __init__(self) -> None:
        self.demo = _RecordingDemo()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-server", daemon=True)

    @property
    def handshakes(self) -> list[dict[str, Any]]:
        return self.demo.handshakes

    @property
    def binary_received(self) -> list[bytes]:
        return self.demo.binary_received

    def __enter__(self) -> DemoThread:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("demo server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def broadcast_raw(self, text: str) -> None:
        """Send ``text`` as is to everyone in the chat room."""
        room = list(self.demo.room)

        async def send() -> None:  # broadcast() is synchronous: run it in the loop's thread
            broadcast(room, text)

        self._call(send())

    def close_all(self, code: int, reason: str) -> None:
        """Close every WebSocket connection with ``code`` and ``reason``; keep serving."""
        assert self._server is not None
        connections = list(self._server.connections)

        async def close_them() -> None:
            await asyncio.gather(*(c.close(code, reason) for c in connections))

        self._call(close_them())

    def _call(self, coroutine: Any) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(10)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self.demo.handler,
            "127.0.0.1",
            0,
            subprotocols=list(DEFAULT_SUBPROTOCOLS),
            process_request=self.demo.process_request,
            # Chromium opens a spare TCP connection that never sends a request; shutdown waits
            # for it to time out, so keep that short.
            open_timeout=2,
        ) as server:
            self._loop = asyncio.get_running_loop()
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
