"""Fan-out benchmarks: tether's hub against the stacks a user would otherwise assemble.

1. ``fanout``: one publisher, N subscribers spread over 2 server processes, through a real
   redis-server (started here on a free port). Stacks:

   - ``tether``: ``tether.hub.Hub`` on ``RedisBackend`` (streams, offsets), ``tether.serve``;
   - ``broadcaster+websockets``: encode/broadcaster's Redis (pub/sub) backend, one
     ``broadcast.subscribe()`` per connection, as its README shows, on ``websockets.serve``.

   Reported: delivered messages per second, publish-to-receive latency p50/p99 (paced phase),
   burst throughput, and the servers' CPU time per delivered message.

2. ``broadcast``: one process, M connections, one message broadcast to all of them: tether's
   ``broadcast()`` against websockets' ``broadcast()``: CPU time per broadcast in the server,
   and time until every client has it.

Clients are a minimal WebSocket reader (no extensions, no JSON) in a separate process, the same
for every stack. Run: ``python bench/hub.py`` (needs ``pip install -e '.[bench]'`` and
redis-server). Figures depend on the machine; compare within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from echo import process_cpu

HERE = Path(__file__).resolve()
CHANNEL = "bench"


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- servers (subprocesses) -------------------------------------------------------------------


async def fanout_server(stack: str, port: int, redis_url: str) -> None:
    ready = asyncio.Event()
    if stack == "tether":
        from tether import ServerConnection, serve
        from tether.hub import Codec, Hub, Message, RedisBackend, Signal

        class Raw(Codec):  # the clients read raw payloads, as for the other stack
            def message(self, message: Message) -> str | bytes:
                return message.data

            def signal(self, signal: Signal) -> None:
                return None

        hub = Hub(RedisBackend(redis_url), codec=Raw())

        async def handler(ws: ServerConnection) -> None:
            await hub.subscribe(ws, CHANNEL)
            try:
                async for _ in ws:
                    pass
            finally:
                hub.unsubscribe(ws)

        async with hub, serve(handler, "127.0.0.1", port, compression=None, open_timeout=60):
            ready.set()
            print("ready", flush=True)
            await asyncio.Future()
    else:
        import websockets
        from broadcaster import Broadcast

        broadcast = Broadcast(redis_url)

        async def wshandler(ws: Any) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async with broadcast.subscribe(channel=CHANNEL) as subscriber:
                    async for event in subscriber:
                        await ws.send(event.message)

        await broadcast.connect()
        # broadcaster 0.3.1's Redis listener stops for good when it starts listening before the
        # first SUBSCRIBE completes (redis-py's listen() returns at once while nothing is
        # subscribed): a quiet dead listener. Hold one subscription from the start and re-arm
        # the listener after it, so that the benchmark measures a working stack.
        keep = broadcast.subscribe(channel=CHANNEL)
        await keep.__aenter__()
        await asyncio.sleep(0.1)
        broadcast._backend._ready.set()  # type: ignore[attr-defined]
        async with websockets.serve(
            wshandler, "127.0.0.1", port, compression=None, open_timeout=60, max_queue=None
        ):
            print("ready", flush=True)
            await asyncio.Future()


async def broadcast_server(library: str, port: int) -> None:
    """Serve until stdin says ``go COUNT SIZE``: broadcast COUNT messages, report CPU times."""
    connections: set[Any] = set()
    loop = asyncio.get_running_loop()
    if library == "tether":
        from tether import ServerConnection, broadcast, serve

        async def handler(ws: ServerConnection) -> None:
            connections.add(ws)
            try:
                await ws.wait_closed()
            finally:
                connections.discard(ws)

        server_cm: Any = serve(
            handler, "127.0.0.1", port, compression=None, open_timeout=120, ping_interval=None
        )

        async def send_all(message: str) -> None:
            result = broadcast(connections, message)
            if asyncio.iscoroutine(result):
                await result
    else:
        import websockets

        async def handler(ws: Any) -> None:
            connections.add(ws)
            try:
                await ws.wait_closed()
            finally:
                connections.discard(ws)

        server_cm = websockets.serve(
            handler, "127.0.0.1", port, compression=None, open_timeout=120, ping_interval=None
        )

        async def send_all(message: str) -> None:
            websockets.broadcast(connections, message)

    async with server_cm:
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        _, count, size = line.split()
        cpu = []
        for i in range(int(count)):
            message = f"{i} {time.time_ns()} ".ljust(int(size), "x")
            started = time.process_time()
            await send_all(message)
            cpu.append(time.process_time() - started)
            await asyncio.sleep(0.05)  # let the writes drain between broadcasts
        print(json.dumps({"connections": len(connections), "cpu": cpu}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)


# --- clients (subprocess) ---------------------------------------------------------------------


class Reader(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then count unmasked server frames."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = bytearray()
        self.open = False
        self.opened = asyncio.get_running_loop().create_future()
        self.count = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(bytes(self.buffer[:80]).decode()))
                return
            del self.buffer[: end + 4]
            self.open = True
            self.opened.set_result(None)
        buffer = self.buffer
        now = time.time_ns()
        position = 0
        while len(buffer) - position >= 2:
            length = buffer[position + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if len(buffer) - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if len(buffer) - position < header + length:
                break
            opcode = buffer[position] & 0x0F
            if opcode == 1:
                payload = buffer[position + header : position + header + 40]
                sent = int(payload.split(b" ", 2)[1])
                self.stats.record(now - sent)
                self.count += 1
            position += header + length
        del buffer[:position]


class Stats:
    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.first = 0
        self.last = 0

    def record(self, latency: int) -> None:
        now = time.monotonic_ns()
        if not self.first:
            self.first = now
        self.last = now
        self.latencies.append(latency)


async def clients(ports: list[int], count: int, expect: int, idle: float) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    readers: list[Reader] = []
    for i in range(count):
        port = ports[i % len(ports)]
        _, reader = await loop.create_connection(lambda: Reader(stats), "127.0.0.1", port)
        readers.append(reader)
        if i % 200 == 199:
            await asyncio.gather(*(r.opened for r in readers[-200:]))
    await asyncio.gather(*(r.opened for r in readers))
    print("ready", flush=True)
    total = count * expect
    last_seen, last_change = 0, time.monotonic()
    while len(stats.latencies) < total and time.monotonic() - last_change < idle:
        await asyncio.sleep(0.05)
        if len(stats.latencies) != last_seen:
            last_seen, last_change = len(stats.latencies), time.monotonic()
    latencies = sorted(stats.latencies)
    result = {
        "delivered": len(latencies),
        "expected": total,
        "seconds": (stats.last - stats.first) / 1e9,
        "p50_ms": latencies[len(latencies) // 2] / 1e6 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1e6 if latencies else None,
        "max_ms": latencies[-1] / 1e6 if latencies else None,
    }
    print(json.dumps(result), flush=True)
    for reader in readers:
        reader.transport.close()


# --- orchestration ----------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_line(process: subprocess.Popen[str], expected: str | None = None) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{process.args} exited with {process.wait()}")
    if expected is not None and line.strip() != expected:
        raise RuntimeError(f"expected {expected!r}, got {line!r}")
    return line


@contextlib.contextmanager
def redis_server() -> Any:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder, "--save", "",
             "--appendonly", "no", "--logfile", str(Path(folder) / "redis.log")]
        )  # fmt: skip
        try:
            for _ in range(200):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 1) as sock,
                ):
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0", process.pid
        finally:
            process.kill()
            process.wait()


async def publish(stack: str, url: str, count: int, rate: float | None) -> float:
    """Publish ``count`` messages (``rate`` per second, or as fast as possible); return the
    publisher's wall time."""
    interval = 1 / rate if rate else 0
    started = time.monotonic()
    if stack == "tether":
        from tether.hub import Hub, RedisBackend

        async with Hub(RedisBackend(url)) as hub:
            for i in range(count):
                await hub.publish(CHANNEL, f"{i} {time.time_ns()} payload")
                if interval:
                    await asyncio.sleep(max(0, started + (i + 1) * interval - time.monotonic()))
    else:
        from broadcaster import Broadcast

        async with Broadcast(url) as broadcast:
            for i in range(count):
                await broadcast.publish(CHANNEL, f"{i} {time.time_ns()} payload")
                if interval:
                    await asyncio.sleep(max(0, started + (i + 1) * interval - time.monotonic()))
    return time.monotonic() - started


def run_fanout(stack: str, subscribers: int, paced: int, rate: float, burst: int) -> dict[str, Any]:
    results: dict[str, Any] = {"stack": stack}
    with redis_server() as (url, redis_pid):
        ports = [free_port(), free_port()]
        servers = [spawn("--fanout-server", stack, "--port", str(p), "--redis", url) for p in ports]
        try:
            for server in servers:
                wait_line(server, "ready")
            for phase, count, phase_rate in (("paced", paced, rate), ("burst", burst, None)):
                client = spawn(
                    "--clients", ",".join(map(str, ports)), "--count", str(subscribers),
                    "--expect", str(count),
                )  # fmt: skip
                wait_line(client, "ready")
                time.sleep(0.5)  # let every subscription reach Redis
                pids = [s.pid for s in servers] + [redis_pid]
                cpu_before = [process_cpu(pid) for pid in pids]
                asyncio.run(publish(stack, url, count, phase_rate))
                result = json.loads(wait_line(client))
                cpu_after = [process_cpu(pid) for pid in pids]
                client.wait()
                servers_cpu = sum(cpu_after[i] - cpu_before[i] for i in range(2))
                redis_cpu = cpu_after[2] - cpu_before[2]
                delivered = result["delivered"]
                result["msgs_per_s"] = delivered / result["seconds"] if result["seconds"] else 0
                result["server_cpu_us_per_msg"] = servers_cpu / max(delivered, 1) * 1e6
                result["redis_cpu_s"] = redis_cpu
                results[phase] = result
        finally:
            for server in servers:
                server.kill()
                server.wait()
    return results


def run_broadcast(library: str, connections: int, count: int, size: int) -> dict[str, Any]:
    port = free_port()
    server = spawn("--broadcast-server", library, "--port", str(port))
    try:
        wait_line(server, "ready")
        client = spawn("--clients", str(port), "--count", str(connections), "--expect", str(count))
        wait_line(client, "ready")
        assert server.stdin is not None
        server.stdin.write(f"go {count} {size}\n")
        server.stdin.flush()
        report = json.loads(wait_line(server))
        result = json.loads(wait_line(client))
        client.wait()
        cpu = report["cpu"]
        result.update(
            library=library,
            server_connections=report["connections"],
            cpu_ms_per_broadcast=statistics.median(cpu) * 1e3,
            cpu_us_per_connection=statistics.median(cpu) / max(report["connections"], 1) * 1e6,
        )
        server.stdin.write("quit\n")
        server.stdin.flush()
        return result
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--paced", type=int, default=100, help="messages in the paced phase")
    parser.add_argument("--rate", type=float, default=50, help="paced messages per second")
    parser.add_argument("--burst", type=int, default=200, help="messages in the burst phase")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--only", choices=["fanout", "broadcast"])
    # Internal modes: the subprocesses.
    parser.add_argument("--fanout-server", help=argparse.SUPPRESS)
    parser.add_argument("--broadcast-server", help=argparse.SUPPRESS)
    parser.add_argument("--clients", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile()
    if args.fanout_server:
        asyncio.run(fanout_server(args.fanout_server, args.port, args.redis))
        return
    if args.broadcast_server:
        asyncio.run(broadcast_server(args.broadcast_server, args.port))
        return
    if args.clients:
        ports = [int(p) for p in args.clients.split(",")]
        asyncio.run(clients(ports, args.count, args.expect, idle=5.0))
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if args.only in (None, "fanout"):
        print(
            f"\nfan-out: 1 publisher -> {args.subscribers} subscribers on 2 server processes, "
            f"Redis; paced {args.paced} msgs at {args.rate:g}/s, then a burst of {args.burst}"
        )
        header = (
            f"{'stack':24} {'phase':6} {'delivered':>15} {'msgs/s':>9} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'cpu us/msg':>10}"
        )
        print(header)
        for stack in ("tether", "broadcaster+websockets"):
            results = run_fanout(stack, args.subscribers, args.paced, args.rate, args.burst)
            for phase in ("paced", "burst"):
                r = results[phase]
                print(
                    f"{stack:24} {phase:6} {r['delivered']:>7}/{r['expected']:<7} "
                    f"{r['msgs_per_s']:>9.0f} {r['p50_ms'] or 0:>8.1f} {r['p99_ms'] or 0:>8.1f} "
                    f"{r['server_cpu_us_per_msg']:>10.1f}",
                    flush=True,
                )
    if args.only in (None, "broadcast"):
        print(
            f"\nbroadcast: one process, {args.connections} connections, "
            f"{args.broadcasts} messages of {args.size} bytes"
        )
        print(
            f"{'library':12} {'delivered':>17} {'cpu ms/broadcast':>17} {'cpu us/conn':>12} "
            f"{'p50 ms':>8} {'p99 ms':>8}"
        )
        for library in ("tether", "websockets"):
            r = run_broadcast(library, args.connections, args.broadcasts, args.size)
            print(
                f"{library:12} {r['delivered']:>8}/{r['expected']:<8} "
                f"{r['cpu_ms_per_broadcast']:>17.2f} {r['cpu_us_per_connection']:>12.2f} "
                f"{r['p50_ms'] or 0:>8.1f} {r['p99_ms'] or 0:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
