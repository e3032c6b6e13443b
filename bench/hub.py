"""Fan-out benchmarks: tether's hub against the stacks a user would otherwise assemble.

1. ``fanout``: one publisher, N subscribers spread over 2 server processes, through one real
   redis-server (started here on a free port, shared by every stack). Stacks:

   - ``tether``: ``tether.hub.Hub`` on ``RedisBackend`` (streams, offsets), ``tether.serve``;
   - ``broadcaster``: encode/broadcaster's Redis (pub/sub) backend, one
     ``broadcast.subscribe()`` per connection, as its README shows, on ``websockets.serve``;
   - ``socketio``: python-socketio's ``AsyncServer`` with ``AsyncRedisManager`` on aiohttp,
     one room; the publisher is a write-only ``AsyncRedisManager`` (as its docs show for
     emitting from an external process);
   - ``channels`` (only with ``--stacks``: slow at this scale): Django Channels'
     ``AsyncWebsocketConsumer`` with channels_redis' ``RedisPubSubChannelLayer``, one group,
     under uvicorn (the default ``RedisChannelLayer`` stalled at 1,000 consumers).

   Reported: delivered messages per second (burst phase: the publisher as fast as it can),
   publish-to-receive latency p50/p99 (paced phase), and the servers' CPU time per delivered
   message; medians over several rounds, stacks interleaved.

2. ``broadcast``: one process, M connections, one message broadcast to all of them: tether's
   ``broadcast()`` against websockets' ``broadcast()``: CPU time per broadcast in the server
   (and per connection), and time until every client has it.

Clients are a minimal WebSocket reader (no extensions, no JSON; for socketio it also speaks
the engine.io/socket.io handshake and answers pings) in a separate process, the same for every
stack. Every server runs on the stdlib asyncio loop. Run: ``python bench/hub.py`` (needs
``pip install -e '.[bench]'`` and redis-server). Figures depend on the machine; compare within
one run only.
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
STACKS = ("tether", "broadcaster", "socketio", "channels")
#: Run by default (channels is slow enough at this scale to be run on its own: --stacks).
DEFAULT_STACKS = ("tether", "broadcaster", "socketio")
LABELS = {
    "tether": "tether hub",
    "broadcaster": "broadcaster+websockets",
    "socketio": "socketio AsyncRedisMgr",
    "channels": "channels_redis+uvicorn",
}
#: The WebSocket path each stack serves, and the client's dialect.
PATHS = {"socketio": "/socket.io/?EIO=4&transport=websocket"}


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure_django(url: str) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={
                "default": {
                    "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    # redis-py's pools hold at most 100 connections and channels_redis keeps
                    # 100 messages per consumer by default: at 500 consumers per process
                    # that fails ("Too many connections") and drops bursts; raised here.
                    "CONFIG": {
                        "hosts": [{"address": url, "max_connections": 1000}],
                        "capacity": 1000,
                    },
                }
            },
        )
        django.setup()


# --- servers (subprocesses) -------------------------------------------------------------------


async def fanout_server(stack: str, port: int, redis_url: str) -> None:
    if stack == "tether":
        from tether import ServerConnection, serve
        from tether.hub import Codec, Hub, Message, RedisBackend, Signal

        class Raw(Codec):  # the clients read raw payloads, as for broadcaster
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
            print("ready", flush=True)
            await asyncio.Future()
    elif stack == "broadcaster":
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
    elif stack == "socketio":
        import socketio
        from aiohttp import web

        sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=socketio.AsyncRedisManager(redis_url),
            http_compression=False,
        )

        @sio.event  # type: ignore[misc]
        async def connect(sid: str, environ: Any, auth: Any = None) -> None:
            await sio.enter_room(sid, CHANNEL)

        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print("ready", flush=True)
        await asyncio.Future()
    elif stack == "channels":
        configure_django(redis_url)
        import uvicorn
        from channels.generic.websocket import AsyncWebsocketConsumer

        class Consumer(AsyncWebsocketConsumer):  # type: ignore[misc]
            async def connect(self) -> None:
                await self.channel_layer.group_add(CHANNEL, self.channel_name)
                await self.accept()

            async def disconnect(self, code: int) -> None:
                await self.channel_layer.group_discard(CHANNEL, self.channel_name)

            async def bench_message(self, event: dict[str, Any]) -> None:
                await self.send(text_data=event["text"])

        config = uvicorn.Config(
            Consumer.as_asgi(), host="127.0.0.1", port=port, loop="asyncio", ws="websockets-sansio",
            lifespan="off", log_level="critical", backlog=1024, ws_per_message_deflate=False,
        )  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await task
    else:
        raise SystemExit(f"unknown stack {stack!r}")


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
            broadcast(connections, message)
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
            message = f"{i}m {time.time_ns()} ".ljust(int(size), "x")
            started = time.process_time()
            await send_all(message)
            cpu.append(time.process_time() - started)
            await asyncio.sleep(0.05)  # let the writes drain between broadcasts
        print(json.dumps({"connections": len(connections), "cpu": cpu}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)


# --- clients (subprocess) ---------------------------------------------------------------------


def masked_text(payload: bytes) -> bytes:
    """A client's (masked) text frame, payload under 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


class Reader(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then record the latency of each benchmark
    message (``"<index> <time_ns> ..."`` anywhere in a text frame). For socket.io it also
    joins the default namespace (``40``) and answers engine.io pings."""

    def __init__(self, stats: Stats, path: str) -> None:
        self.stats = stats
        self.path = path
        self.socketio = path.startswith("/socket.io/")
        self.buffer = bytearray()
        self.open = False
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before it opened"))

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
            if not self.socketio:
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
            if buffer[position] & 0x0F == 1:
                start = position + header
                payload = bytes(buffer[start : start + min(length, 48)])
                if self.socketio and not payload.startswith(b"42"):
                    if payload == b"2":  # engine.io ping
                        self.transport.write(masked_text(b"3"))
                    elif payload.startswith(b"0{"):  # engine.io open: join namespace /
                        self.transport.write(masked_text(b"40"))
                    elif payload.startswith(b"40") and not self.opened.done():
                        self.opened.set_result(None)
                else:
                    self.stats.record(payload, now)
            position += header + length
        del buffer[:position]


class Stats:
    """Latencies of the current phase's messages: each phase tags its indexes with a letter,
    so that late messages of an earlier phase are not counted in the next one."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.first = 0
        self.last = 0
        self.tag = b"m"
        self.other = 0

    def record(self, payload: bytes, now: int) -> None:
        index, sent, _ = payload.split(b" ", 2)
        if not index.endswith(self.tag):
            self.other += 1
            return
        clock = time.monotonic_ns()
        if not self.first:
            self.first = clock
        self.last = clock
        self.latencies.append(now - int(sent))

    def reset(self, tag: bytes) -> None:
        self.latencies = []
        self.first = self.last = 0
        self.tag = tag
        self.other = 0


async def clients(ports: list[int], path: str, count: int, idle: float) -> None:
    """Open ``count`` connections over ``ports``; then for each ``expect N`` line on stdin,
    wait for N messages per connection (or ``idle`` seconds without any) and print the
    figures."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    readers: list[Reader] = []
    for i in range(count):
        port = ports[i % len(ports)]
        _, reader = await loop.create_connection(lambda: Reader(stats, path), "127.0.0.1", port)
        readers.append(reader)
        if i % 100 == 99:
            await asyncio.gather(*(r.opened for r in readers[-100:]))
    await asyncio.gather(*(r.opened for r in readers))
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.startswith("expect"):
            break
        expect = int(line.split()[1])
        stats.reset(line.split()[2].encode())
        print("armed", flush=True)
        total = count * expect
        last_seen, last_change = 0, time.monotonic()
        while len(stats.latencies) < total and time.monotonic() - last_change < idle:
            await asyncio.sleep(0.02)
            if len(stats.latencies) != last_seen:
                last_seen, last_change = len(stats.latencies), time.monotonic()
        latencies = sorted(stats.latencies)
        result = {
            "delivered": len(latencies),
            "late_from_earlier_phase": stats.other,
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


def tell(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


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


async def publish(
    stack: str, url: str, count: int, rate: float | None, size: int, tag: str
) -> float:
    """Publish ``count`` messages of ``size`` bytes (``rate`` per second, or as fast as
    possible) as each stack's documented publisher does; return the publisher's wall time."""
    interval = 1 / rate if rate else 0
    send: Any
    close: Any = None
    if stack == "tether":
        from tether.hub import Hub, RedisBackend

        hub = await Hub(RedisBackend(url)).start()
        send, close = (lambda data: hub.publish(CHANNEL, data)), hub.close
    elif stack == "broadcaster":
        from broadcaster import Broadcast

        broadcast = Broadcast(url)
        await broadcast.connect()
        send, close = (lambda data: broadcast.publish(CHANNEL, data)), broadcast.disconnect
    elif stack == "socketio":
        import socketio

        manager = socketio.AsyncRedisManager(url, write_only=True)

        def send(data: str) -> Any:
            return manager.emit("m", data, room=CHANNEL, namespace="/")
    else:
        configure_django(url)
        from channels.layers import get_channel_layer

        layer = get_channel_layer()

        def send(data: str) -> Any:
            return layer.group_send(CHANNEL, {"type": "bench.message", "text": data})

        close = layer.flush if False else None  # flush would drop the group: keep it
    started = time.monotonic()
    try:
        for i in range(count):
            await send(f"{i}{tag} {time.time_ns()} ".ljust(size, "x"))
            if interval:
                await asyncio.sleep(max(0, started + (i + 1) * interval - time.monotonic()))
    finally:
        if close is not None:
            await close()
    return time.monotonic() - started


def fanout_round(stack: str, url: str, redis_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start 2 servers and one client process for ``stack``; warm up, then a paced phase
    (latency) and a burst (throughput)."""
    results: dict[str, Any] = {}
    ports = [free_port(), free_port()]
    servers = [spawn("--fanout-server", stack, "--port", str(p), "--redis", url) for p in ports]
    client = None
    try:
        for server in servers:
            wait_line(server, "ready")
        client = spawn(
            "--clients", ",".join(map(str, ports)), "--path", PATHS.get(stack, "/"),
            "--count", str(args.subscribers),
        )  # fmt: skip
        wait_line(client, "ready")
        time.sleep(0.5)  # let every subscription reach Redis
        phases = (
            ("warmup", args.warmup, args.rate),
            ("paced", args.paced, args.rate),
            ("burst", args.burst, None),
        )
        for phase, count, rate in phases:
            tag = phase[0]  # w, p, b
            tell(client, f"expect {count} {tag}")
            wait_line(client, "armed")
            pids = [s.pid for s in servers] + [redis_pid]
            cpu_before = [process_cpu(pid) for pid in pids]
            asyncio.run(publish(stack, url, count, rate, args.size, tag))
            result = json.loads(wait_line(client))
            cpu_after = [process_cpu(pid) for pid in pids]
            servers_cpu = sum(cpu_after[i] - cpu_before[i] for i in range(2))
            delivered = result["delivered"]
            result["msgs_per_s"] = delivered / result["seconds"] if result["seconds"] else 0
            result["server_cpu_us_per_msg"] = servers_cpu / max(delivered, 1) * 1e6
            result["redis_cpu_us_per_msg"] = (cpu_after[2] - cpu_before[2]) / max(count, 1) * 1e6
            results[phase] = result
            time.sleep(0.3)
        tell(client, "quit")
        client.wait(10)
    finally:
        for process in [*servers, *([client] if client else [])]:
            if process.poll() is None:
                process.kill()
            process.wait()
    return results


def median(values: list[Any]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def run_broadcast(library: str, connections: int, count: int, size: int) -> dict[str, Any]:
    port = free_port()
    server = spawn("--broadcast-server", library, "--port", str(port))
    client = None
    try:
        wait_line(server, "ready")
        client = spawn("--clients", str(port), "--count", str(connections))
        wait_line(client, "ready")
        tell(client, f"expect {count} m")
        wait_line(client, "armed")
        tell(server, f"go {count} {size}")
        report = json.loads(wait_line(server))
        result = json.loads(wait_line(client))
        tell(client, "quit")
        client.wait(30)
        cpu = report["cpu"]
        result.update(
            library=library,
            server_connections=report["connections"],
            cpu_ms_per_broadcast=statistics.median(cpu) * 1e3,
            cpu_us_per_connection=statistics.median(cpu) / max(report["connections"], 1) * 1e6,
        )
        tell(server, "quit")
        return result
    finally:
        for process in [server, *([client] if client else [])]:
            if process.poll() is None:
                process.kill()
            process.wait()


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def print_fanout(rounds: dict[str, list[dict[str, Any]]]) -> None:
    """The fan-out table: medians over rounds."""
    print(
        f"\n{'':24} {'':>9} {'burst':>8} {'paced':>7} {'paced':>7} {'burst':>7} "
        f"{'paced':>6} {'burst':>6} {'burst':>7}\n"
        f"{'stack':24} {'delivered':>9} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99 ms':>7} {'cpu us/msg':>13} {'redis':>7}"
    )
    for stack, rs in rounds.items():
        phases = ("paced", "burst")
        delivered = sum(r[ph]["delivered"] for r in rs for ph in phases)
        expected = sum(r[ph]["expected"] for r in rs for ph in phases)
        print(
            f"{LABELS[stack]:24} {delivered / expected:>9.1%} "
            f"{median([r['burst']['msgs_per_s'] for r in rs]):>8.0f} "
            f"{median([r['paced']['p50_ms'] for r in rs]):>7.1f} "
            f"{median([r['paced']['p99_ms'] for r in rs]):>7.1f} "
            f"{median([r['burst']['p99_ms'] for r in rs]):>7.0f} "
            f"{median([r['paced']['server_cpu_us_per_msg'] for r in rs]):>6.1f} "
            f"{median([r['burst']['server_cpu_us_per_msg'] for r in rs]):>6.1f} "
            f"{median([r['burst']['redis_cpu_us_per_msg'] for r in rs]):>7.1f}",
            flush=True,
        )
    print("(cpu: the two servers' CPU per delivered message; redis: Redis CPU us per publish)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured messages first")
    parser.add_argument("--paced", type=int, default=100, help="messages in the paced phase")
    parser.add_argument("--rate", type=float, default=20, help="paced messages per second")
    parser.add_argument("--burst", type=int, default=200, help="messages in the burst phase")
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds per stack")
    parser.add_argument(
        "--stacks",
        default=",".join(DEFAULT_STACKS),
        help=f"fan-out stacks, in order, among {', '.join(STACKS)}",
    )
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--only", choices=["fanout", "broadcast"])
    parser.add_argument("--json", help="also write every round's figures to this file")
    parser.add_argument("--table", help="print the fan-out table of a --json file, and exit")
    # Internal modes: the subprocesses.
    parser.add_argument("--fanout-server", help=argparse.SUPPRESS)
    parser.add_argument("--broadcast-server", help=argparse.SUPPRESS)
    parser.add_argument("--clients", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print_fanout(json.loads(Path(args.table).read_text())["fanout"])
        return
    raise_nofile()
    if args.fanout_server:
        asyncio.run(fanout_server(args.fanout_server, args.port, args.redis))
        return
    if args.broadcast_server:
        asyncio.run(broadcast_server(args.broadcast_server, args.port))
        return
    if args.clients:
        ports = [int(p) for p in args.clients.split(",")]
        runner: Any = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the clients only: the same for every stack, and lighter

            runner = uvloop.run
        runner(clients(ports, args.path, args.count, idle=10.0))
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {loadavg()}")
    everything: dict[str, Any] = {"fanout": {}, "broadcast": {}}
    if args.only in (None, "fanout"):
        stacks = args.stacks.split(",")
        print(
            f"\nfan-out: 1 publisher -> {args.subscribers} subscribers on 2 server processes, "
            f"one redis-server; {args.size}-byte messages; {args.warmup} warm-up, then "
            f"{args.paced} paced at {args.rate:g}/s (latency), then a burst of {args.burst} "
            f"(throughput); median of {args.rounds} rounds, stacks interleaved"
        )
        rounds: dict[str, list[dict[str, Any]]] = {stack: [] for stack in stacks}
        with redis_server() as (url, redis_pid):
            for number in range(args.rounds):
                for stack in stacks:
                    result = fanout_round(stack, url, redis_pid, args)
                    rounds[stack].append(result)
                    p, b = result["paced"], result["burst"]
                    print(
                        f"  round {number + 1} {stack:12} paced {p['delivered']}/{p['expected']} "
                        f"p50 {p['p50_ms'] or 0:.1f} p99 {p['p99_ms'] or 0:.1f} ms; burst "
                        f"{b['delivered']}/{b['expected']} {b['msgs_per_s']:.0f} msgs/s "
                        f"{b['server_cpu_us_per_msg']:.1f} us/msg; load {loadavg()}",
                        flush=True,
                    )
        everything["fanout"] = rounds
        print_fanout(rounds)
        print(f"load average after: {loadavg()}")
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
            everything["broadcast"][library] = r
            print(
                f"{library:12} {r['delivered']:>8}/{r['expected']:<8} "
                f"{r['cpu_ms_per_broadcast']:>17.2f} {r['cpu_us_per_connection']:>12.2f} "
                f"{r['p50_ms'] or 0:>8.1f} {r['p99_ms'] or 0:>8.1f}",
                flush=True,
            )
        print(f"load average after: {loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
