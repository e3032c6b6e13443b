"""tether under uvicorn, beside uvicorn's own WebSocket classes: the same ASGI echo app.

uvicorn serves one raw ASGI echo application (no framework) with ``--ws websockets-sansio``,
``--ws wsproto`` or ``--ws tether.asgi:UvicornProtocol``; everything else is the same: the
asyncio loop, httptools for the HTTP request, a 2 MiB message limit, no keepalive pings, no
compression, no access log. The server process is pinned to CPU 0 and the load generators to
CPU 1 with ``taskset``, and the three classes are measured interleaved (for each round, each
cell, each class in turn, each with a fresh server process); the tables give the median of
the rounds.

Three measurements:

- **echo**: ``bench/echo_client.py``'s raw client (closed-loop round trips, see echo.py),
  messages per second and the server's CPU time per message (from /proc), at 16 B, 1 KiB,
  64 KiB and 1 MiB with 1 and 64 connections;
- **handshakes**: this file's client opens a connection, completes the opening handshake,
  sends a close frame and waits for the server to close, in 16 concurrent loops: handshakes
  per second and server CPU per handshake;
- **idle memory**: the growth of the server's resident memory (VmRSS) when 1,000 connections
  are opened and left idle (the application waiting in ``receive()``), per connection.

Usage::

    python bench/asgi.py                 # everything, about 4 minutes
    python bench/asgi.py --quick         # shorter cells, one round
    python bench/asgi.py --only echo --sizes 16,1k --connections 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The tether under test: this checkout.
sys.path.insert(0, os.environ.get("TETHER_BENCH_SRC") or str(HERE.parent / "src"))

import echo  # noqa: E402  (bench/echo.py: cells, CPU accounting, labels)

CLASSES = {
    "tether": "tether.asgi:UvicornProtocol",
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
}
MAX_SIZE = 2 * 2**20
SERVER_CPU = "0"
CLIENT_CPU = "1"


# --- the server --------------------------------------------------------------------------------


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        data = message.get("bytes")
        if data is not None:
            await send({"type": "websocket.send", "bytes": data})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


def serve(ws: str) -> None:
    """Run uvicorn until stdin closes; print ``PORT <n>`` first."""
    import uvicorn

    _raise_fd_limit()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    config = uvicorn.Config(
        echo_app,
        ws=CLASSES[ws],
        http="httptools",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws_max_size=MAX_SIZE,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        backlog=2048,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        sys.stdout.write(f"PORT {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.should_exit = True
        server.force_exit = True
        await task

    asyncio.run(main())


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 <= hard or (hard == resource.RLIM_INFINITY and soft < 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))


# --- handshake and idle clients ---------------------------------------------------------------


def _request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


#: A masked close frame with code 1000 (key 0: the payload is sent as is).
CLOSE_FRAME = bytes([0x88, 0x82, 0, 0, 0, 0]) + struct.pack("!H", 1000)


class _HandshakeProtocol(asyncio.Protocol):
    """One connection's life: request, 101, close frame, the server's close and EOF. A bare
    protocol rather than streams, to keep the client's cost per handshake low."""

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self.request = request
        self.done = done
        self.head = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return  # the server's close frame
        self.head += data
        if b"\r\n\r\n" in self.head:
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.done.set_exception(ConnectionError(self.head.split(b"\r\n", 1)[0].decode()))
                self.transport.close()
                return
            self.upgraded = True
            self.transport.write(CLOSE_FRAME)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.upgraded:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc or ConnectionError("closed before the 101"))


async def _one_handshake(port: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    await loop.create_connection(
        lambda: _HandshakeProtocol(_request(port), done), "127.0.0.1", port
    )
    await done


def handshake_client(port: int, seconds: float, warmup: float, concurrency: int) -> None:
    """Closed-loop handshakes; prints ``RESULT {"count", "time"}`` for the measured part."""

    async def main() -> None:
        count = 0
        counting = False

        async def loop_forever() -> None:
            nonlocal count
            while True:
                await _one_handshake(port)
                if counting:
                    count += 1

        tasks = [asyncio.create_task(loop_forever()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        counting = True
        sys.stdout.write("MARK\n")
        sys.stdout.flush()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        done = count
        sys.stdout.write("MARK\n")
        sys.stdout.flush()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sys.stdout.write("RESULT " + json.dumps({"count": done, "time": elapsed}) + "\n")
        sys.stdout.flush()

    asyncio.run(main())


def idle_client(port: int, count: int) -> None:
    """Open ``count`` connections, print ``READY``, hold them until stdin closes."""
    _raise_fd_limit()

    async def main() -> None:
        writers = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request(port))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
            writers.append(writer)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for writer in writers:
            writer.close()

    asyncio.run(main())


# --- orchestration ----------------------------------------------------------------------------


class Pinned(echo.Child):
    """A helper process on one CPU (``taskset -c``), spoken to over stdin/stdout."""

    def __init__(self, cpu: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*echo.pinned(cpu), sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )


def start_server(ws: str) -> tuple[Pinned, int]:
    server = Pinned(SERVER_CPU, [__file__, "serve", ws])
    return server, int(server.expect("PORT"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_echo(ws: str, size: int, conns: int, setup: echo.Setup) -> echo.Result:
    server, port = start_server(ws)
    client = Pinned(CLIENT_CPU, [str(HERE / "echo_client.py"), "--port", str(port)])
    try:
        return echo.run_cell(server, [client], size, conns, setup)
    finally:
        client.finish()
        server.finish()


def measure_handshakes(ws: str, seconds: float, warmup: float) -> tuple[float, float]:
    server, port = start_server(ws)
    client = Pinned(
        CLIENT_CPU,
        [__file__, "handshake-client", str(port), str(seconds), str(warmup), "16"],
    )
    try:
        client.expect("MARK")
        t0, c0 = time.perf_counter(), echo.process_cpu(server.pid)
        client.expect("MARK")
        t1, c1 = time.perf_counter(), echo.process_cpu(server.pid)
        result = json.loads(client.expect("RESULT"))
        rate = result["count"] / result["time"]
        cpu_per = (c1 - c0) / (rate * (t1 - t0)) if rate else float("nan")
        return rate, cpu_per
    finally:
        client.finish()
        server.finish()


def measure_idle(ws: str, count: int) -> float:
    server, port = start_server(ws)
    client = Pinned(CLIENT_CPU, [__file__, "idle-client", str(port), str(count)])
    try:
        # Warm the server up with a few connections first, so one-time allocations (imports,
        # the first task, the read buffer) are not charged to the idle connections.
        warm = Pinned(CLIENT_CPU, [__file__, "idle-client", str(port), "20"])
        warm.expect("READY")
        warm.finish()
        time.sleep(0.3)
        before = rss_kib(server.pid)
        client.expect("READY")
        time.sleep(0.3)
        after = rss_kib(server.pid)
        return (after - before) * 1024 / count
    finally:
        client.finish()
        server.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage::", 1)[1],
    )
    parser.add_argument(
        "--classes", default=",".join(CLASSES), help="tether,websockets-sansio,wsproto"
    )
    parser.add_argument("--only", choices=["echo", "handshakes", "idle"], help="one measurement")
    parser.add_argument("--sizes", default="16,1k,64k,1m")
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections")
    parser.add_argument("--quick", action="store_true", help="0.5 s cells, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rounds = 0.5, 0.2, 1
    classes = [c.strip() for c in args.classes.split(",")]
    sizes = [echo.parse_size(s) for s in args.sizes.split(",")]
    conns_list = [int(c) for c in args.connections.split(",")]
    cells = [(size, conns) for size in sizes for conns in conns_list]
    started = time.perf_counter()
    load_before = echo._load()

    rates: dict[tuple[str, int, int], list[float]] = {}
    costs: dict[tuple[str, int, int], list[float]] = {}
    shakes: dict[str, list[tuple[float, float]]] = {}
    idles: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        if args.only in (None, "echo"):
            for size, conns in cells:
                for ws in classes:
                    setup = echo.Setup(ws, "raw", False, False, 1, args.duration, args.warmup)
                    result = measure_echo(ws, size, conns, setup)
                    key = (ws, size, conns)
                    rates.setdefault(key, []).append(result.rate)
                    costs.setdefault(key, []).append(result.server_us)
                    _progress(
                        f"{ws:>18} {echo.label(size):>7} x{conns:<3} {result.rate:10,.0f} msg/s"
                        f" ({result.server_us:.1f} us/msg)"
                    )
        if args.only in (None, "handshakes"):
            for ws in classes:
                rate, cpu = measure_handshakes(ws, args.duration * 2, args.warmup)
                shakes.setdefault(ws, []).append((rate, cpu))
                _progress(f"{ws:>18} handshakes {rate:8,.0f}/s ({1e6 * cpu:.0f} us each)")
        if args.only in (None, "idle"):
            for ws in classes:
                per = measure_idle(ws, args.idle)
                idles.setdefault(ws, []).append(per)
                _progress(f"{ws:>18} idle {per / 1024:6.1f} KiB/connection")

    elapsed = time.perf_counter() - started
    best = {key: statistics.median(values) for key, values in rates.items()}
    cost = {key: statistics.median(values) for key, values in costs.items()}
    handshakes = {
        ws: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
        for ws, v in shakes.items()
    }
    idle = {ws: statistics.median(v) for ws, v in idles.items()}
    print()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server on CPU {SERVER_CPU}, "
        f"clients on CPU {CLIENT_CPU}; median of {args.rounds} interleaved round(s), "
        f"{args.duration:g} s cells; run took {elapsed:.0f} s"
    )
    peers = echo.versions("uvicorn", "websockets", "wsproto", "httptools")
    print(peers, f"; load average before {load_before}, after {echo._load()}")
    head = "".join(f" {c:>18}" for c in classes)
    ratio_cols = [c for c in classes if c != "tether"] if "tether" in classes else []
    ratio_head = "".join(f" {'tether/' + c[:10]:>18}" for c in ratio_cols)
    if best:
        print("\necho: messages per second (binary, closed loop)")
        print(f"{'size':>7} {'conns':>5}{head}{ratio_head}")
        for size, conns in cells:
            rate = {c: best[c, size, conns] for c in classes if (c, size, conns) in best}
            row = f"{echo.label(size):>7} {conns:>5}" + "".join(
                f" {rate[c]:18,.0f}" for c in classes
            )
            row += "".join(f" {rate['tether'] / rate[c]:18.2f}" for c in ratio_cols)
            print(row)
        print("\necho: server CPU time per message, microseconds (lower is better)")
        print(f"{'size':>7} {'conns':>5}{head}{ratio_head}")
        for size, conns in cells:
            us = {c: cost[c, size, conns] for c in classes if (c, size, conns) in cost}
            row = f"{echo.label(size):>7} {conns:>5}" + "".join(f" {us[c]:18,.1f}" for c in classes)
            row += "".join(f" {us['tether'] / us[c]:18.2f}" for c in ratio_cols)
            print(row)
    if handshakes:
        print("\nhandshakes (connect, 101, close; 16 concurrent loops)")
        print(f"{'':>13}{head}")
        print(f"{'per second':>13}" + "".join(f" {handshakes[c][0]:18,.0f}" for c in classes))
        print(f"{'server us':>13}" + "".join(f" {1e6 * handshakes[c][1]:18,.0f}" for c in classes))
    if idle:
        print(f"\nserver memory per idle connection ({args.idle} connections, VmRSS growth)")
        print(f"{'':>13}{head}")
        print(f"{'KiB':>13}" + "".join(f" {idle[c] / 1024:18.1f}" for c in classes))


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "handshake-client":
        port, seconds, warmup, concurrency = sys.argv[2:6]
        handshake_client(int(port), float(seconds), float(warmup), int(concurrency))
    elif len(sys.argv) > 1 and sys.argv[1] == "idle-client":
        idle_client(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
