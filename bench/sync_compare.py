"""The threading clients side by side, in interleaved rounds, with medians.

    python bench/sync_compare.py [--rounds 5] [--sizes 16,1k,64k,1m] [--duration 1]

One tether echo server (``bench/echo_servers.py tether``: asyncio, no compression, no pings)
serves every measurement. For each round, each size, each client in turn, a fresh client
process connects (C=1), does ``send(); recv()`` round trips for a warm-up, then for
``--duration`` seconds, and reports the round trips completed, the wall time and its own CPU
time (``getrusage``: user + system, every thread of the process, so tether.sync's and
websockets.sync's background threads count). Interleaving spreads a change in the machine's
load over every client alike; the table gives each cell's median over the rounds, and the
spread (lowest-highest) of the CPU time per message, the figure that moves least with the
load. The load average is printed before and after each round.

Clients: ``tether-sync`` (this checkout's ``tether.sync.connect``), ``websockets-sync``
(``websockets.sync.client.connect``) and ``websocket-client`` (``websocket.create_connection``,
``send_binary``/``recv``; not a project dependency: ``pip install websocket-client``). Every
message is random binary data; tether and websockets run with compression off and pings off,
websocket-client has neither. Take the machine-wide lock for figures you report::

    flock /tmp/tether-bench.lock .venv/bin/python bench/sync_compare.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS = ("tether-sync", "websockets-sync", "websocket-client")


def parse_size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("k", 1024), ("m", 2**20)):
        if text.endswith(suffix):
            return int(text[:-1]) * factor
    return int(text)


def label(size: int) -> str:
    if size >= 2**20:
        return f"{size // 2**20} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- the client process -------------------------------------------------------------------------


def worker(port: int, client: str, size: int, warmup: float, duration: float) -> None:
    sys.path.insert(0, str(HERE.parent / "src"))
    uri = f"ws://127.0.0.1:{port}/"
    message = os.urandom(size)
    if client == "tether-sync":
        from tether.limits import Limits
        from tether.sync import connect

        limits = Limits(max_message_size=2 * 2**20, max_frame_size=2 * 2**20)
        ws: Any = connect(uri, compression=None, ping_interval=None, limits=limits)
        send, recv, close = ws.send, ws.recv, ws.close
    elif client == "websockets-sync":
        from websockets.sync.client import connect as ws_connect

        ws = ws_connect(uri, compression=None, max_size=None, ping_interval=None)
        send, recv, close = ws.send, ws.recv, ws.close
    else:
        import websocket

        ws = websocket.create_connection(uri)
        send, recv, close = ws.send_binary, ws.recv, ws.close
    try:
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            send(message)
            recv()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        end = t0 + duration
        count = 0
        while True:
            send(message)
            recv()
            count += 1
            if count % 8 == 0 and time.perf_counter() >= end:
                break
        t1 = time.perf_counter()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        close()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    print(json.dumps({"count": count, "wall": t1 - t0, "cpu": cpu}))


# --- the driver ---------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, server_pid: int, client: str, size: int, args: Any) -> dict[str, float]:
    s0 = process_cpu(server_pid)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            f"{port},{client},{size},{args.warmup},{args.duration}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60 + args.duration * 4,
    ).stdout
    s1 = process_cpu(server_pid)
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["server_cpu"] = s1 - s0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="16,1k,64k,1m")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--duration", type=float, default=1.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=0.2, help="seconds before measuring")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        port, client, size, warmup, duration = args.worker.split(",")
        worker(int(port), client, int(size), float(warmup), float(duration))
        return

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    server = subprocess.Popen(
        [sys.executable, str(HERE / "echo_servers.py"), "tether"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    words = server.stdout.readline().split()  # PORT <n> PID <pid>
    port, server_pid = int(words[1]), int(words[3])
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    loads = []
    started = time.perf_counter()
    try:
        for n in range(args.rounds):
            before = load()
            for size in sizes:
                for client in clients:
                    result = measure(port, server_pid, client, size, args)
                    results.setdefault((size, client), []).append(result)
                    print(
                        f"  {label(size):>7} {client:<17} {result['count'] / result['wall']:9,.0f}"
                        f" round trips/s, {1e6 * result['cpu'] / result['count']:8,.1f} us CPU",
                        file=sys.stderr,
                    )
            loads.append((before, load()))
            print(f"round {n + 1}: load average {before} -> {loads[-1][1]}", file=sys.stderr)
    finally:
        server.stdin.close()
        server.wait(20)
    elapsed = time.perf_counter() - started

    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.rounds} interleaved "
        f"rounds of {args.duration:g} s per cell after {args.warmup:g} s warm-up, C=1, binary "
        f"messages, tether asyncio echo server; run took {elapsed:.0f} s"
    )
    print("load average (1, 5, 15 min) before and after each round: ")
    print("  " + "; ".join(f"{a} -> {b}" for a, b in loads))

    def table(title: str, cell: Any) -> None:
        print()
        print(title)
        print(f"{'size':>8}" + "".join(f"{c:>24}" for c in clients))
        for size in sizes:
            row = f"{label(size):>8}"
            for client in clients:
                row += f"{cell(results[size, client]):>24}"
            print(row)

    def rate(rs: list[dict[str, float]]) -> str:
        return format(statistics.median(r["count"] / r["wall"] for r in rs), ",.0f")

    def cpu(rs: list[dict[str, float]]) -> str:
        per = sorted(1e6 * r["cpu"] / r["count"] for r in rs)
        return f"{statistics.median(per):,.1f} ({per[0]:,.1f}-{per[-1]:,.1f})"

    def server_cpu(rs: list[dict[str, float]]) -> str:
        return format(statistics.median(1e6 * r["server_cpu"] / r["count"] for r in rs), ",.1f")

    table("round trips per second, median (higher is better)", rate)
    table("client CPU time per round trip, us: median (lowest-highest)", cpu)
    table("server CPU time per round trip, us, median (same server for all)", server_cpu)
    import importlib.metadata as md

    versions = []
    for name in ("websockets", "websocket-client"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} not installed")
    print()
    print("; ".join(versions))


if __name__ == "__main__":
    main()
