"""tether's demo server (``tether serve``) in a thread of the test process, with a record.

Browser and Node tests drive the page and the endpoints of :class:`tether.cli.demo.DemoServer`
through a real socket on 127.0.0.1 (port 0), while the test reads what the server saw: each
handshake (what was offered and agreed) and each binary message echoed. It can also push raw
text into the chat room and close every connection with a given code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from tether import Server, ServerConnection, broadcast, serve
from tether.cli.demo import DEFAULT_SUBPROTOCOLS, DemoServer

__all__ = ["DemoThread"]


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
