"""``make soak``: the full-size adversarial experiments of issue 16, tether beside websockets.

Each experiment starts a fresh server (in a child process, so that its RSS is its own) with the
same echo handler and options, drives it with raw sockets from here, and prints one row per
library. Bounded: every wait has a timeout; ``--scale 0.1`` runs a tenth of each size.

    .venv/bin/python bench/soak.py [--scale 1.0] [--only idle,fuzz-frames,...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

SERVER = r"""
import asyncio, signal, sys
lib, budget = sys.argv[1], int(sys.argv[2]) or None
received = 0

async def handler(ws):
    global received
    async for message in ws:
        received += 1
        await ws.send(message)

async def main():
    loop = asyncio.get_running_loop()
    if lib == "tether":
        from tether import Limits, serve
        server = serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                       memory_budget=budget, backlog=4096,
                       limits=Limits(max_message_size=2**21, max_frame_size=2**21))
    else:
        from websockets.asyncio.server import serve
        server = serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                       max_size=2**21, backlog=4096)
    async with server as s:
        port = s.port_number if lib == "tether" else s.sockets[0].getsockname()[1]
        print(port, flush=True)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        await stop
        s.close()
        await s.wait_closed()
    print("received", received, flush=True)

asyncio.run(main())
"""

HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
LIBS = ("tether", "websockets")


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Server:
    def __init__(self, lib: str, budget: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, lib, str(budget)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=raise_nofile,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def rss(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        current, peak = rss(self.process.pid)
        return current / 1024, peak / 1024

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> tuple[str, str]:
        """Stop the server (SIGTERM, then kill after 20 s); (stdout, stderr)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return out, err


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else payload
    if n >= 4096:
        mask = b"\0\0\0\0"
    return head + mask + masked


async def connect(port: int, head: bytes | None = None) -> tuple[socket.socket, bytes]:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, head or HANDSHAKE % base64.b64encode(os.urandom(16)))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        response += chunk
    return sock, response


async def drain(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sends until it closes; ``None`` if it does not within ``seconds``."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return data


async def bounded(coros: list[Awaitable[object]], concurrency: int) -> list[object]:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(coro: Awaitable[object]) -> object:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


def tracebacks(err: str) -> int:
    return err.count("Traceback")


# --- the experiments ---------------------------------------------------------------------------


async def idle(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    base, _ = server.rss()
    socks = await bounded([connect(server.port) for _ in range(n)], 200)
    ok = [s for s in socks if isinstance(s, tuple) and s[1].startswith(b"HTTP/1.1 101")]
    await asyncio.sleep(1)
    rss, _ = server.rss()
    for s in socks:
        if isinstance(s, tuple):
            s[0].close()
    _, err = server.stop()
    per = (rss - base) * 1024 / max(len(ok), 1)
    return {"open": f"{len(ok)}/{n}", "KiB each": round(per, 1), "tracebacks": tracebacks(err)}


async def fuzz_frames(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    rng = random.Random(16)

    async def one(seed: int) -> bool:
        sock, _ = await connect(server.port)
        r = random.Random(seed)
        try:
            chunks = []
            for _ in range(r.randint(1, 6)):
                if r.random() < 0.5:
                    payload = r.randbytes(r.randint(0, 300))
                    chunks.append(
                        frame(r.choice([0, 1, 2, 3, 8, 9, 10, 11]), payload, r.random() < 0.7)
                    )
                else:
                    chunks.append(r.randbytes(r.randint(1, 64)))
            await asyncio.get_running_loop().sock_sendall(sock, b"".join(chunks))
            sock.shutdown(socket.SHUT_WR)
            return await drain(sock, 15) is not None
        except OSError:
            return True
        finally:
            sock.close()

    results = await bounded([one(rng.getrandbits(32)) for _ in range(n)], 100)
    alive = server.alive()
    _, err = server.stop()
    hangs = sum(r is False for r in results)
    return {"streams": n, "hangs": hangs, "crashed": not alive, "tracebacks": tracebacks(err)}


async def fuzz_heads(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    rng = random.Random(5)
    valid = HANDSHAKE % b"dGhlIHNhbXBsZSBub25jZQ=="

    def mutate(r: random.Random) -> bytes:
        head = bytearray(valid)
        for _ in range(r.randint(1, 8)):
            i = r.randrange(len(head))
            choice = r.random()
            if choice < 0.4:
                head[i] = r.randrange(256)
            elif choice < 0.7:
                head[i:i] = r.randbytes(r.randint(1, 40))
            else:
                del head[i : i + r.randint(1, 20)]
        return bytes(head) + b"\r\n\r\n"

    async def one(head: bytes) -> bool:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            await loop.sock_sendall(sock, head)
            sock.shutdown(socket.SHUT_WR)
            return await drain(sock, 15) is not None
        except OSError:
            return True
        finally:
            sock.close()

    results = await bounded([one(mutate(rng)) for _ in range(n)], 100)
    alive = server.alive()
    _, err = server.stop()
    hangs = sum(r is False for r in results)
    return {"heads": n, "hangs": hangs, "crashed": not alive, "tracebacks": tracebacks(err)}


async def partial_flood(lib: str, n: int, budget: int = 0) -> dict[str, object]:
    server = Server(lib, budget)
    socks = [s for s, _ in await asyncio.gather(*(connect(server.port) for _ in range(n)))]
    loop = asyncio.get_running_loop()
    data = frame(2, b"x" * 2**20)[: 900 * 1024]

    async def send(sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(10):
                await loop.sock_sendall(sock, data)
        except (OSError, TimeoutError):
            pass

    await asyncio.gather(*(send(s) for s in socks))
    await asyncio.sleep(1)
    rss, peak = server.rss()
    newcomers = [await connect(server.port) for _ in range(10)]
    refused = sum(h.startswith(b"HTTP/1.1 503") for _, h in newcomers)
    for s in [*socks, *(s for s, _ in newcomers)]:
        s.close()
    _, err = server.stop()
    return {
        "budget": f"{budget >> 20} MiB" if budget else "none",
        "RSS MiB": round(rss),
        "peak MiB": round(peak),
        "503": f"{refused}/10",
        "tracebacks": tracebacks(err),
    }


async def ping_flood(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    sock, _ = await connect(server.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    base, _ = server.rss()
    ping = frame(9, b"p" * 125)
    batch = ping * 1000
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        async with asyncio.timeout(60):
            for _ in range(n // 1000):
                await loop.sock_sendall(sock, batch)
                sent += 1000
    except TimeoutError:
        pass
    await asyncio.sleep(1)
    rss, _ = server.rss()
    sock.close()
    _, err = server.stop()
    return {
        "pings sent": sent,
        "RSS growth MiB": round(rss - base, 1),
        "tracebacks": tracebacks(err),
    }


async def resets(lib: str, n: int, rounds: int = 4) -> dict[str, object]:
    server = Server(lib)
    data = frame(2, b"x" * 2**20)[: 900 * 1024]
    loop = asyncio.get_running_loop()
    peaks = []
    for _ in range(rounds):
        socks = [s for s, _ in await asyncio.gather(*(connect(server.port) for _ in range(n)))]
        await asyncio.gather(*(loop.sock_sendall(s, data) for s in socks), return_exceptions=True)
        await asyncio.sleep(0.5)
        peaks.append(server.rss()[0])
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.close()
        await asyncio.sleep(1)
    rss, _ = server.rss()
    _, err = server.stop()
    return {
        "rounds": rounds,
        "RSS per round MiB": "/".join(str(round(p)) for p in peaks),
        "RSS after MiB": round(rss),
        "tracebacks": tracebacks(err),
    }


async def shutdown(lib: str, n: int, seconds: float = 3) -> dict[str, object]:
    server = Server(lib)
    loop = asyncio.get_running_loop()
    acked = 0
    sent = 0
    codes: dict[int, int] = {}
    running = True

    async def client() -> None:
        nonlocal acked, sent
        sock, _ = await connect(server.port)
        buffer = b""
        try:
            while True:
                if running:
                    await loop.sock_sendall(sock, frame(2, b"m" * 16))
                    sent += 1
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 15)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
                    size = 2 + (buffer[1] & 0x7F)
                    opcode, body = buffer[0] & 0x0F, buffer[2:size]
                    buffer = buffer[size:]
                    if opcode == 2:
                        acked += 1
                    elif opcode == 8:
                        code = int.from_bytes(body[:2], "big")
                        codes[code] = codes.get(code, 0) + 1
                        await loop.sock_sendall(sock, frame(8, body[:2]))
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()

    tasks = [asyncio.create_task(client()) for _ in range(n)]
    await asyncio.sleep(seconds)
    started = time.perf_counter()
    out, err = await asyncio.to_thread(server.stop)
    took = time.perf_counter() - started
    running = False
    await asyncio.gather(*tasks)
    received = int(out.split("received")[-1]) if "received" in out else -1
    return {
        "clients": n,
        "acked": acked,
        "server received": received,
        "lost": received - acked if received >= 0 else "?",
        "close codes": codes,
        "shutdown s": round(took, 2),
        "tracebacks": tracebacks(err),
    }


EXPERIMENTS: dict[str, Callable[[str, float], Awaitable[dict[str, object]]]] = {
    "idle": lambda lib, k: idle(lib, int(10_000 * k)),
    "fuzz-frames": lambda lib, k: fuzz_frames(lib, int(20_000 * k)),
    "fuzz-heads": lambda lib, k: fuzz_heads(lib, int(5_000 * k)),
    "partial-flood": lambda lib, k: partial_flood(lib, int(300 * k)),
    "ping-flood": lambda lib, k: ping_flood(lib, int(200_000 * k)),
    "resets": lambda lib, k: resets(lib, int(300 * k)),
    "shutdown": lambda lib, k: shutdown(lib, int(100 * k)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    args = parser.parse_args()
    raise_nofile()
    for name in args.only.split(","):
        print(f"\n## {name}")
        for lib in LIBS:
            row = asyncio.run(EXPERIMENTS[name](lib, args.scale))
            print(f"{lib:<10} " + "  ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
        if name == "partial-flood":
            row = asyncio.run(partial_flood("tether", int(300 * args.scale), 64 * 2**20))
            print("tether+budget " + "  ".join(f"{k}: {v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
