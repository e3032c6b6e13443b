"""Echo servers for ``bench/echo.py``: one process, one library, one port.

Usage: ``python bench/echo_servers.py {tether,websockets,aiohttp,picows} [--compression]
[--profile FILE]``

The server listens on 127.0.0.1 with an ephemeral port, prints ``PORT <n> PID <pid>`` on
stdout once it accepts connections, and stops when its standard input reaches EOF (so it never
outlives the benchmark that started it). Every server is configured the same way:

- keepalive pings off, so no timer traffic in the measurement;
- a maximum message and frame size of :data:`MAX_SIZE` (1 MiB messages fit with margin);
- permessage-deflate off, unless ``--compression`` is given (then each library's default
  deflate settings, which differ; see bench/README.md);
- the handler echoes every message as it came (binary as binary, text as text), one at a time.

``--profile FILE`` runs the server under cProfile and writes the stats to FILE at exit (the
profiler costs a lot per call, so figures measured with it are not comparable with others).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

# The tether under test: this checkout, unless echo.py --tether-src points elsewhere.
sys.path.insert(
    0, os.environ.get("TETHER_BENCH_SRC") or str(Path(__file__).resolve().parent.parent / "src")
)

#: Largest message and frame accepted by every server: 1 MiB plus a margin.
MAX_SIZE = 2 * 2**20

SERVERS = ("tether", "websockets", "aiohttp", "picows")


async def _wait_for_stdin_eof() -> None:
    # Watched by the event loop itself: no thread, nothing else in the process.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port} PID {os.getpid()}\n")
    sys.stdout.flush()


async def run_tether(compression: bool) -> None:
    from tether import Limits, serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    limits = Limits(max_frame_size=MAX_SIZE, max_message_size=MAX_SIZE)
    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression="deflate" if compression else None,
        ping_interval=None,
        limits=limits,
    ) as server:
        _announce(server.port_number)
        await _wait_for_stdin_eof()


async def run_websockets(compression: bool) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(
        echo,
        "127.0.0.1",
        0,
        compression="deflate" if compression else None,
        ping_interval=None,
        max_size=MAX_SIZE,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        _announce(port)
        await _wait_for_stdin_eof()


async def run_aiohttp(compression: bool) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            compress=compression, max_msg_size=MAX_SIZE, heartbeat=None, autoping=True
        )
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # the asyncio server: the only way to learn the ephemeral port
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    _announce(port)
    try:
        await _wait_for_stdin_eof()
    finally:
        await runner.cleanup()


async def run_picows(compression: bool) -> None:
    # picows has no permessage-deflate; its API is per frame (the clients send whole messages
    # as single frames, so echoing frames is echoing messages).
    if compression:
        raise SystemExit("picows has no permessage-deflate")
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            else:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())

    server = await ws_create_server(
        lambda _request: Echo(), "127.0.0.1", 0, max_frame_size=MAX_SIZE
    )
    _announce(server.sockets[0].getsockname()[1])
    try:
        await _wait_for_stdin_eof()
    finally:
        server.close()


RUNNERS = {
    "tether": run_tether,
    "websockets": run_websockets,
    "aiohttp": run_aiohttp,
    "picows": run_picows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=SERVERS)
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    coroutine = RUNNERS[args.server](args.compression)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(coroutine)
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
