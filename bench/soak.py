"""``make soak``: the full-size adversarial experiments of issue 16, tether beside websockets.

Each experiment starts a fresh server (in a child process, so that its RSS is its own) with the
same echo handler and options, drives it with raw sockets from here, and prints one table:
each experiment's figures for tether, for websockets and (partial-flood) for tether under a
64 MiB ``memory_budget``. Tether's figures are then checked (no traceback, crash, hang, loss,
unbounded growth...; see :func:`failures`): the exit status is 1 if any check fails.
Bounded: every wait has a timeout; ``--scale 0.1`` runs a tenth of each size. docs/soak.md
has the method and the figures of a full run.

    .venv/bin/python bench/soak.py [--scale 1.0] [--only idle,fuzz-frames,...] [--logs DIR]
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
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

SERVER = r"""
import asyncio, signal, sys
lib, budget = sys.argv[1], int(sys.argv[2]) or None
received = echoed = 0

async def handler(ws):
    global received, echoed
    async for message in ws:
        received += 1
        await ws.send(message)
        echoed += 1  # send() returned: the message must reach the client

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
    print("received", received, "echoed", echoed, flush=True)

asyncio.run(main())
"""

#: Streams in flight at once in the fuzz experiments, and the seconds after which a stream the
#: server has not closed counts as a hang (above both libraries' default close_timeout, 10 s).
CONCURRENCY = 500
HANG = 15.0
#: Where the servers' logs go (``--logs``), and the experiment running ("name-library").
LOGS: str | None = None
CURRENT = ""

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


def cpu(pid: int) -> int:
    """CPU time process ``pid`` has used, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


async def settle(pid: int, seconds: float = 30) -> None:
    """Wait until process ``pid`` has used no CPU for half a second (a server has read and
    handled everything the clients sent: on a loaded machine, a fixed pause is not enough),
    or ``seconds`` at most."""
    used = cpu(pid)
    try:
        async with asyncio.timeout(seconds):
            while True:
                await asyncio.sleep(0.5)
                if (now := cpu(pid)) == used:
                    return
                used = now
    except TimeoutError:
        pass


class Server:
    def __init__(self, lib: str, budget: int = 0) -> None:
        # The log goes to a file, not a pipe: nobody reads a pipe until the end, and a server
        # that logs a lot (websockets logs a traceback per bad stream) would block once it is
        # full, every connection with it.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, lib, str(budget)],
            stdout=subprocess.PIPE,
            stderr=self.log,
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

    async def settle(self, seconds: float = 30) -> None:
        await settle(self.process.pid, seconds)

    def stop(self) -> tuple[str, str]:
        """Stop the server (SIGTERM, then kill after 20 s); (stdout, stderr). The server's
        log goes to ``LOGS/<experiment>-<library>.log`` too, if ``--logs LOGS`` is given."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.log.seek(0)
        err = self.log.read()
        self.log.close()
        if LOGS is not None:
            with open(os.path.join(LOGS, f"{CURRENT}.log"), "a") as log:
                log.write(err)
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
    """Errors logged with a traceback (a chained exception's tracebacks count once)."""
    chained = err.count("\nThe above exception was the direct cause") + err.count(
        "\nDuring handling of the above exception"
    )
    return err.count("Traceback (most recent call last)") - chained


# --- the experiments ---------------------------------------------------------------------------


async def idle(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    base, _ = server.rss()
    socks = await bounded([connect(server.port) for _ in range(n)], 200)
    ok = [s for s in socks if isinstance(s, tuple) and s[1].startswith(b"HTTP/1.1 101")]
    await server.settle()
    rss, _ = server.rss()
    for s in socks:
        if isinstance(s, tuple):
            s[0].close()
    _, err = server.stop()
    per = (rss - base) * 1024 / max(len(ok), 1)
    return {
        "open": f"{len(ok)}/{n}",
        "KiB each": round(per, 1),
        "logged tracebacks": tracebacks(err),
    }


def close_times(results: list[object]) -> dict[str, object]:
    """Figures of ``results`` (seconds until the server closed, ``None`` for a hang)."""
    times = sorted(r for r in results if isinstance(r, float))
    errors = sum(isinstance(r, BaseException) for r in results)
    if not times:
        return {"hangs": sum(r is None for r in results), "client errors": errors}
    return {
        "hangs": sum(r is None for r in results),
        "closed in s (median/p99/max)": "/".join(
            f"{t:.2f}" for t in (times[len(times) // 2], times[len(times) * 99 // 100], times[-1])
        ),
        "client errors": errors,
    }


async def closed_after(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes (``None``: not within ``seconds``, a hang)."""
    started = time.perf_counter()
    if await drain(sock, seconds) is None:
        return None
    return time.perf_counter() - started


async def fuzz_frames(lib: str, n: int) -> dict[str, object]:
    server = Server(lib)
    rng = random.Random(16)

    async def one(seed: int) -> float | None:
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
            return await closed_after(sock, HANG)
        except OSError:
            return 0.0  # the server closed (reset) before the stream was sent
        finally:
            sock.close()

    started = time.perf_counter()
    results = await bounded([one(rng.getrandbits(32)) for _ in range(n)], CONCURRENCY)
    took = time.perf_counter() - started
    alive = server.alive()
    _, err = server.stop()
    return {
        "streams": n,
        **close_times(results),
        "crashed": not alive,
        "logged tracebacks": tracebacks(err),
        "wall s": round(took),
    }


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

    async def one(head: bytes) -> float | None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            await loop.sock_sendall(sock, head)
            sock.shutdown(socket.SHUT_WR)
            return await closed_after(sock, HANG)
        except OSError:
            return 0.0
        finally:
            sock.close()

    started = time.perf_counter()
    results = await bounded([one(mutate(rng)) for _ in range(n)], CONCURRENCY)
    took = time.perf_counter() - started
    alive = server.alive()
    _, err = server.stop()
    return {
        "heads": n,
        **close_times(results),
        "crashed": not alive,
        "logged tracebacks": tracebacks(err),
        "wall s": round(took),
    }


def close_code(sock: socket.socket) -> int | None:
    """The close code the server sent on ``sock`` (0: closed without one), ``None`` if it is
    still open; reads what is there without waiting."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return 0
    if len(data) >= 4 and data[0] == 0x88:
        return int.from_bytes(data[2:4], "big")
    return 0 if not data else None


async def partial_flood(lib: str, n: int, budget: int = 0) -> dict[str, object]:
    """``n`` clients each send 900 KiB of a 1 MiB frame and stop; then ten newcomers."""
    server = Server(lib, budget)
    base, _ = server.rss()
    opened = await bounded([connect(server.port) for _ in range(n)], 200)
    socks = [cast(tuple[socket.socket, bytes], s)[0] for s in opened if isinstance(s, tuple)]
    loop = asyncio.get_running_loop()
    data = frame(2, b"x" * 2**20)[: 900 * 1024]

    async def send(sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(10):
                await loop.sock_sendall(sock, data)
        except (OSError, TimeoutError):
            pass

    await asyncio.gather(*(send(s) for s in socks))
    await server.settle()
    rss, peak = server.rss()
    codes = [close_code(s) for s in socks]
    newcomers = [await connect(server.port) for _ in range(10)]
    refused = sum(h.startswith(b"HTTP/1.1 503") for _, h in newcomers)
    for s in [*socks, *(s for s, _ in newcomers)]:
        s.close()
    await server.settle()
    after, _ = server.rss()
    _, err = server.stop()
    return {
        "budget MiB": round(budget / 2**20, 1) if budget else "none",
        "base MiB": round(base),
        "RSS held MiB": round(rss),
        "peak MiB": round(peak),
        "closed 1013": codes.count(1013),
        "still open": codes.count(None),
        "newcomers 503": f"{refused}/10",
        "RSS after close MiB": round(after),
        "logged tracebacks": tracebacks(err),
    }


async def ping_flood(lib: str, n: int) -> dict[str, object]:
    """``n`` pings of 125 bytes sent as fast as the server reads them, pongs left unread (the
    kernel buffers fill up, then the server's write buffer): the server's RSS growth once the
    flood is in. Then one last ping with its own payload, and every pong read until its pong:
    proof that the server parsed the whole flood, and the pongs it sent for it."""
    server = Server(lib)
    sock, _ = await connect(server.port)
    base, _ = server.rss()
    batch = frame(9, b"p" * 125) * 1000
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    sent = 0
    try:
        async with asyncio.timeout(120):
            for _ in range(n // 1000):
                await loop.sock_sendall(sock, batch)
                sent += 1000
        flood = time.perf_counter() - started
        await server.settle()
        rss, peak = server.rss()
        await loop.sock_sendall(sock, frame(9, b"last"))
        pongs, last = 0, False
        buffer = b""
        async with asyncio.timeout(60):
            while not last:
                chunk = await loop.sock_recv(sock, 2**20)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
                    size = 2 + (buffer[1] & 0x7F)
                    if buffer[0] & 0x0F == 10:
                        pongs += 1
                        last = buffer[2:size] == b"last"
                    buffer = buffer[size:]
    except (TimeoutError, OSError):
        flood, rss, peak, pongs, last = time.perf_counter() - started, *server.rss(), 0, False
    took = time.perf_counter() - started
    sock.close()
    _, err = server.stop()
    return {
        "pings sent": sent,
        "all parsed": last,
        "pongs sent": pongs,
        "flood s": round(flood, 2),
        "RSS growth MiB": round(rss - base, 1),
        "peak growth MiB": round(peak - base, 1),
        "total s": round(took, 2),
        "logged tracebacks": tracebacks(err),
    }


async def resets(lib: str, n: int, rounds: int = 4) -> dict[str, object]:
    server = Server(lib)
    data = frame(2, b"x" * 2**20)[: 900 * 1024]
    loop = asyncio.get_running_loop()
    peaks = []
    for _ in range(rounds):
        socks = [s for s, _ in await asyncio.gather(*(connect(server.port) for _ in range(n)))]
        await asyncio.gather(*(loop.sock_sendall(s, data) for s in socks), return_exceptions=True)
        await server.settle()
        peaks.append(server.rss()[0])
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.close()
        await server.settle()
    rss, _ = server.rss()
    _, err = server.stop()
    return {
        "rounds": rounds,
        "RSS per round MiB": "/".join(str(round(p)) for p in peaks),
        "RSS after MiB": round(rss),
        "logged tracebacks": tracebacks(err),
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
    counts = out.split("received")[-1].split() if "received" in out else []
    received, echoed = (int(counts[0]), int(counts[2])) if len(counts) == 3 else (-1, -1)
    return {
        "clients": n,
        "client sent": sent,
        "server received": received,
        "server echoed": echoed,
        "client acked": acked,
        # A message whose send() returned but that the client never got: lost.
        "lost": echoed - acked if echoed >= 0 else "?",
        "close codes": codes,
        "shutdown s": round(took, 2),
        "logged tracebacks": tracebacks(err),
    }


BUDGET = 64 * 2**20

EXPERIMENTS: dict[str, Callable[[str, float], Coroutine[Any, Any, dict[str, object]]]] = {
    "idle": lambda lib, k: idle(lib, int(10_000 * k)),
    "fuzz-frames": lambda lib, k: fuzz_frames(lib, int(20_000 * k)),
    "fuzz-heads": lambda lib, k: fuzz_heads(lib, int(5_000 * k)),
    "partial-flood": lambda lib, k: partial_flood(lib, int(300 * k)),
    "ping-flood": lambda lib, k: ping_flood(lib, int(200_000 * k)),
    "resets": lambda lib, k: resets(lib, int(300 * k)),
    "shutdown": lambda lib, k: shutdown(lib, int(100 * k)),
}
#: Experiments that have a third column: tether under ``memory_budget=BUDGET``.
WITH_BUDGET = {"partial-flood": lambda k: partial_flood("tether", int(300 * k), int(BUDGET * k))}


def failures(name: str, row: dict[str, object], k: float, budget: bool) -> list[str]:
    """What is wrong in tether's ``row`` of experiment ``name`` (websockets' figures are
    printed beside, not judged)."""
    wrong = []
    if row.get("logged tracebacks"):
        wrong.append("tracebacks in the server's log")
    if row.get("crashed"):
        wrong.append("the server died")
    if row.get("hangs"):
        wrong.append(f"{row['hangs']} streams not closed within {HANG:g} s")
    if row.get("client errors"):
        wrong.append(f"{row['client errors']} client errors")
    if name == "idle" and row["open"] != f"{int(10_000 * k)}/{int(10_000 * k)}":
        wrong.append(f"only {row['open']} connections opened")
    if name == "ping-flood":
        if not row["all parsed"]:
            wrong.append("the flood was not parsed to its end")
        if float(str(row["peak growth MiB"])) > 8:
            wrong.append("the flood grew memory by more than 8 MiB")
    if name == "resets":
        per_round = [int(p) for p in str(row["RSS per round MiB"]).split("/")]
        if max(per_round[1:], default=0) > 1.25 * per_round[0]:
            wrong.append("memory grows from round to round")
    if name == "shutdown":
        if row["lost"] != 0:
            wrong.append(f"{row['lost']} acknowledged-message difference")
        if set(cast(dict[int, int], row["close codes"])) != {1001}:
            wrong.append(f"close codes {row['close codes']}, not only 1001")
    if budget:
        if not row["closed 1013"]:
            wrong.append("nobody shed with 1013 although the flood is over the budget")
        growth = int(str(row["peak MiB"])) - int(str(row["base MiB"]))
        if growth > 2 * (BUDGET * k) / 2**20:
            wrong.append(f"peak RSS grew {growth} MiB, over twice the budget")
    return wrong


def table(results: dict[str, dict[str, dict[str, object]]]) -> str:
    """One Markdown table: experiment, figure, then a column per library."""
    columns = [*LIBS, "tether, budget"]
    lines = [
        "| experiment | figure | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for name, rows in results.items():
        figures: list[str] = []
        for row in rows.values():
            figures.extend(f for f in row if f not in figures)
        for figure in figures:
            cells = [str(rows[c].get(figure, "")) if c in rows else "" for c in columns]
            lines.append(f"| {name} | {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default=",".join(EXPERIMENTS))
    parser.add_argument("--logs", help="a directory for the servers' logs")
    args = parser.parse_args()
    global LOGS, CURRENT
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
        LOGS = args.logs
    raise_nofile()
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, object]]] = {}
    wrong: list[str] = []
    for name in args.only.split(","):
        rows = results[name] = {}
        for lib in LIBS:
            CURRENT = f"{name}-{lib}"
            rows[lib] = asyncio.run(EXPERIMENTS[name](lib, args.scale))
            print(f"{name} {lib}: {rows[lib]}", flush=True)
        wrong += [f"{name}: {w}" for w in failures(name, rows["tether"], args.scale, False)]
        if name in WITH_BUDGET:
            CURRENT = f"{name}-tether-budget"
            row = rows["tether, budget"] = asyncio.run(WITH_BUDGET[name](args.scale))
            print(f"{name} tether, budget: {row}", flush=True)
            wrong += [f"{name} (budget): {w}" for w in failures(name, row, args.scale, True)]
    took = time.perf_counter() - started
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    print(f"\nscale {args.scale:g}, wall time {took:.0f} s, load average {load}\n")
    print(table(results))
    if wrong:
        print("\nFAILED:\n" + "\n".join(f"- {w}" for w in wrong))
        return 1
    print("\nno failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
