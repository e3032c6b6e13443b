"""End-to-end echo benchmark: tether's server next to websockets' and aiohttp's.

Each server runs in its own process on 127.0.0.1 (ephemeral port, see ``echo_servers.py``) and
is driven from separate client processes (``echo_client.py``) doing closed-loop round trips:
every connection sends one message, waits for the whole echo, and sends the next. For 64
connections they run concurrently in one asyncio loop (or ``--client-procs`` processes). The
figure is messages echoed per second, counted between two marks after a warm-up.

By default the client is the same cheap raw-socket client for every server, so only the server
differs; ``--clients raw,tether,websockets,aiohttp`` with a single ``--servers`` entry compares
clients against one fixed server instead. All servers have keepalive pings off, the same 2 MiB
limit on messages and frames, and compression off (``--compression`` adds rows with each
library's default permessage-deflate settings).

The CPU table says which side was saturated: the share of one core each process used during
the measurement (the orchestrating process itself only sleeps). On a 2-core machine a server
near 100% is the bottleneck; a client near 100% would mean the figure understates the server.

Usage::

    python bench/echo.py                       # full matrix, about 1.5 minutes
    python bench/echo.py --quick               # shorter cells, for a smoke test
    python bench/echo.py --sizes 16,1k --connections 64 --servers tether,websockets
    python bench/echo.py --profile tether      # cProfile of tether's server under the load
    python bench/echo.py --py-spy tether       # the same with py-spy (sampling, low overhead)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from echo_client import CLIENTS

HERE = Path(__file__).resolve().parent
SERVERS = ("tether", "websockets", "aiohttp", "picows", "tether-alt")
ALT_SRC: list[str] = []  # the directory given with --tether-alt
DEFAULT_SIZES = "16,1k,64k,1m"
DEFAULT_CONNECTIONS = "1,64"


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:], 1)
    return int(text.rstrip("km")) * factor


def label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


# --- processes ---------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by every thread of process ``pid``, from /proc
    (Linux). schedstat counts nanoseconds per thread, stat only clock ticks; threads count
    because aiohttp compresses large messages in an executor thread."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After the command name: state is field 3, utime field 14 and stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _TICK


def pinned(cpu: str) -> list[str]:
    """The command prefix that runs a process on one CPU (``taskset -c``, which execs: the pid
    stays the same), or nothing where there is no taskset or only one CPU."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpu] if taskset and (os.cpu_count() or 1) > 1 else []


class Child:
    """A helper process spoken to with lines over its stdin and stdout."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def expect(self, word: str) -> str:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line.startswith(word):
            self.proc.kill()
            raise RuntimeError(f"expected {word!r} from {self.proc.args!r}, got {line!r}")
        return line[len(word) :].strip()

    def finish(self, timeout: float = 20) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- measurement -------------------------------------------------------------------------------


@dataclass
class Result:
    rate: float  # messages per second
    server_cpu: float  # share of one core
    client_cpu: float  # share of one core, summed over client processes

    @property
    def server_us(self) -> float:
        """Server CPU time per message echoed, in microseconds."""
        return 1e6 * self.server_cpu / self.rate if self.rate else float("nan")


@dataclass
class Setup:
    server: str
    client: str
    compression: bool
    text: bool
    client_procs: int
    duration: float
    warmup: float
    profile: str | None = None
    py_spy: str | None = None
    column: str = ""  # the server's name, or the client's when clients are compared
    results: dict[tuple[int, int], Result] = field(default_factory=dict)  # best rate
    costs: dict[tuple[int, int], float] = field(default_factory=dict)  # least server CPU/msg


def run_cell(server: Child, clients: list[Child], size: int, conns: int, setup: Setup) -> Result:
    # Spread the connections over the client processes (fewer processes than connections).
    active = clients[: max(1, min(len(clients), conns))]
    shares = [conns // len(active) + (i < conns % len(active)) for i in range(len(active))]
    for client, share in zip(active, shares, strict=True):
        client.send("CELL " + json.dumps({"size": size, "conns": share}))
    for client in active:
        client.expect("READY")
    for client in active:
        client.send("GO")
    time.sleep(setup.warmup)

    def mark() -> tuple[list[dict[str, float]], float, float]:
        for client in active:
            client.send("MARK")
        marks = [json.loads(client.expect("MARK")) for client in active]
        return marks, time.perf_counter(), process_cpu(server.pid)

    first, t0, s0 = mark()
    time.sleep(setup.duration)
    last, t1, s1 = mark()
    for client in active:
        client.send("STOP")
    for client in active:
        client.expect("DONE")

    rate = sum(
        (b["count"] - a["count"]) / (b["time"] - a["time"])
        for a, b in zip(first, last, strict=True)
    )
    client_cpu = sum(
        (b["cpu"] - a["cpu"]) / (b["time"] - a["time"]) for a, b in zip(first, last, strict=True)
    )
    return Result(rate, (s1 - s0) / (t1 - t0), client_cpu)


class Running:
    """One server process and its client processes, kept for the whole run."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        # "tether-alt" is tether imported from --tether-alt DIR, as an extra column.
        env = None
        library = setup.server
        if library == "tether-alt":
            env = dict(os.environ, TETHER_BENCH_SRC=ALT_SRC[0])
            library = "tether"
        server_args = [str(HERE / "echo_servers.py"), library]
        if setup.compression:
            server_args.append("--compression")
        if setup.profile:
            server_args += ["--profile", setup.profile]
        self.server = Child(server_args, env)
        self.clients: list[Child] = []
        self.spy: subprocess.Popen[bytes] | None = None
        port = int(self.server.expect("PORT").split()[0])
        client_args = [str(HERE / "echo_client.py"), "--port", str(port), "--client", setup.client]
        if setup.compression:
            client_args.append("--compression")
        if setup.text:
            client_args.append("--text")
        self.clients = [Child(client_args) for _ in range(setup.client_procs)]
        if setup.py_spy:
            self.spy = start_py_spy(self.server.pid, setup.py_spy)

    def measure(self, size: int, conns: int, progress: bool) -> None:
        setup = self.setup
        result = run_cell(self.server, self.clients, size, conns, setup)
        best = setup.results.get((size, conns))
        if best is None or result.rate > best.rate:
            setup.results[size, conns] = result
        cost = setup.costs.get((size, conns))
        if cost is None or result.server_us < cost:
            setup.costs[size, conns] = result.server_us
        if progress:
            print(
                f"  {setup.server:>10} <- {setup.client:<10} {label(size):>7} x{conns:<3}"
                f"{' deflate' if setup.compression else ''}: {result.rate:10,.0f} msg/s"
                f"  (server {result.server_cpu:4.0%} CPU, client {result.client_cpu:4.0%})",
                file=sys.stderr,
            )

    def stop(self) -> None:
        for client in self.clients:
            client.finish()
        if self.spy is not None:
            self.spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            self.spy.wait(30)
        self.server.finish()


def run_all(setups: list[Setup], cells: list[tuple[int, int]], rounds: int, progress: bool) -> None:
    """Measure every cell against every setup, interleaved: for each round, each cell, each
    setup in turn, so that a change in the machine's background load hits every column alike.
    The best round of each cell is kept.

    Every measurement gets a fresh server and fresh client processes, because a process's
    history changes its cost per message: glibc serves the 256 KiB that asyncio's selector
    transport allocates for every ``recv`` with ``mmap`` (plus a page fault, ``mremap`` and
    ``munmap``) until the process frees some large ``mmap``-ed block, such as a 1 MiB
    message, after which it raises its threshold and serves them from the heap. A server kept
    across cells would run the small-message cells of the second round in that cheaper state,
    which a server that only ever sees small messages never reaches. Profiles (one process
    for the whole run) are the exception.
    """
    if any(setup.profile or setup.py_spy for setup in setups):
        running = [Running(setup) for setup in setups]
        try:
            for _ in range(rounds):
                for size, conns in cells:
                    for run in running:
                        run.measure(size, conns, progress)
        finally:
            for run in running:
                run.stop()
        return
    for _ in range(rounds):
        for size, conns in cells:
            for setup in setups:
                run = Running(setup)
                try:
                    run.measure(size, conns, progress)
                finally:
                    run.stop()


# --- profiling -----------------------------------------------------------------------------------


def start_py_spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    local = Path(sys.executable).parent / "py-spy"
    exe = str(local) if local.exists() else (shutil.which("py-spy") or "py-spy")
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--format", "raw", "--output", output, "--rate", "250"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let it attach
    return proc


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)".
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _ = where.rpartition(":")
    parts = Path(path).parts
    for anchor in ("tether", "websockets", "aiohttp", "asyncio"):
        if anchor in parts:
            path = "/".join(parts[parts.index(anchor) :])
            break
    else:
        path = Path(path).name
    return f"{path}:{name}"


def report_py_spy(output: str, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    total_in: collections.Counter[str] = collections.Counter()
    total = idle = 0
    with open(output) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [_short(frame) for frame in stack.split(";")]
            total += count
            if frames[-1].endswith(("select", "poll")):
                idle += count  # the event loop waiting: not part of the percentages
                continue
            own[frames[-1]] += count
            for name in set(frames):
                total_in[name] += count
    busy = total - idle
    if not busy:
        print("py-spy collected no samples")
        return
    print(
        f"py-spy: {total} samples of the server process, {idle} of them waiting in select/poll;"
        f" percentages are of the other {busy}"
    )
    print(f"{'self %':>7} {'total %':>8}  function")
    for name, count in own.most_common(top):
        print(f"{100 * count / busy:7.1f} {100 * total_in[name] / busy:8.1f}  {name}")


def _is_wait(name: str) -> bool:
    # cProfile names C methods "<method 'poll' of 'select.epoll' objects>".
    return name in ("poll", "select") or name.startswith(("<method 'poll'", "<method 'select'"))


def report_profile(path: str, top: int) -> None:
    stats = pstats.Stats(path)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())  # tottime over every function
    idle = sum(entry[2] for key, entry in raw.items() if _is_wait(key[2]))
    busy = total - idle
    print(f"cProfile: {total:.2f} s recorded, {idle:.2f} s waiting in select/poll")
    print(f"{'tottime %busy':>14} {'cumtime %busy':>14} {'calls':>10}  function")
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
    shown = 0
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in rows:
        if _is_wait(name):
            continue
        where = _short(f"{name} ({filename}:{line})")
        print(f"{100 * tottime / busy:13.1f}% {100 * cumtime / busy:13.1f}% {ncalls:10d}  {where}")
        shown += 1
        if shown >= top:
            break


# --- table ---------------------------------------------------------------------------------------


def print_tables(setups: list[Setup], cells: list[tuple[int, int]], columns: list[str]) -> None:
    compressions = sorted({s.compression for s in setups})
    by_key = {(s.column, s.compression): s for s in setups}
    # Ratios of each tether column to websockets.
    ratios = [c for c in columns if c.startswith("tether")] if "websockets" in columns else []
    ratio_head = "".join(f" {c.replace('tether', 't') + '/ws':>10}" for c in ratios)
    head = f"{'size':>7} {'conns':>5} {'deflate':>7} " + " ".join(f"{c:>11}" for c in columns)
    head += ratio_head
    print("messages per second (round trips completed)")
    print(head)
    print("-" * len(head))
    for compression in compressions:
        for size, conns in cells:
            row = f"{label(size):>7} {conns:>5} {'on' if compression else 'off':>7} "
            rates: dict[str, float] = {}
            for column in columns:
                setup = by_key.get((column, compression))
                result = setup.results.get((size, conns)) if setup else None
                if result is None:
                    row += f" {'-':>11}"
                else:
                    rates[column] = result.rate
                    row += f" {result.rate:11,.0f}"
            for name in ratios:
                if name in rates and "websockets" in rates:
                    row += f" {rates[name] / rates['websockets']:10.2f}"
            print(row)
    print()
    print("server CPU time per message, microseconds (lower is better; robust to other load)")
    head = f"{'size':>7} {'conns':>5} {'deflate':>7} " + " ".join(f"{c:>11}" for c in columns)
    head += ratio_head
    print(head)
    print("-" * len(head))
    for compression in compressions:
        for size, conns in cells:
            row = f"{label(size):>7} {conns:>5} {'on' if compression else 'off':>7} "
            costs: dict[str, float] = {}
            for column in columns:
                setup = by_key.get((column, compression))
                cost = setup.costs.get((size, conns)) if setup else None
                if cost is None:
                    row += f" {'-':>11}"
                else:
                    costs[column] = cost
                    row += f" {cost:11,.1f}"
            for name in ratios:
                if name in costs and "websockets" in costs:
                    row += f" {costs[name] / costs['websockets']:10.2f}"
            print(row)
    print()
    print("client CPU time per message, microseconds (in the round with the best rate)")
    head = f"{'size':>7} {'conns':>5} {'deflate':>7} " + " ".join(f"{c:>11}" for c in columns)
    print(head)
    print("-" * len(head))
    for compression in compressions:
        for size, conns in cells:
            row = f"{label(size):>7} {conns:>5} {'on' if compression else 'off':>7} "
            for column in columns:
                setup = by_key.get((column, compression))
                result = setup.results.get((size, conns)) if setup else None
                if result is None or not result.rate:
                    row += f" {'-':>11}"
                else:
                    row += f" {1e6 * result.client_cpu / result.rate:11,.1f}"
            print(row)
    print()
    print("CPU use during the measurement, share of one core: server / client")
    head = f"{'size':>7} {'conns':>5} {'deflate':>7} " + " ".join(f"{c:>11}" for c in columns)
    print(head)
    print("-" * len(head))
    for compression in compressions:
        for size, conns in cells:
            row = f"{label(size):>7} {conns:>5} {'on' if compression else 'off':>7} "
            for column in columns:
                setup = by_key.get((column, compression))
                result = setup.results.get((size, conns)) if setup else None
                if result is None:
                    row += f" {'-':>11}"
                else:
                    cpu = f"{result.server_cpu * 100:.0f}/{result.client_cpu * 100:.0f}"
                    row += f" {cpu:>11}"
            print(row)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description="End-to-end echo benchmark of WebSocket servers (messages per second).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage::", 1)[1],
    )
    parser.add_argument("--duration", type=float, default=1.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before measuring")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds over all cells; the best is kept"
    )
    parser.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="message sizes: 16,1k,64k,1m")
    parser.add_argument("--connections", default=DEFAULT_CONNECTIONS, help="e.g. 1,64")
    parser.add_argument(
        "--servers", default="tether,websockets,aiohttp", help="tether,websockets,aiohttp"
    )
    parser.add_argument(
        "--clients", default="raw", help="client implementations: raw,websockets,tether,aiohttp"
    )
    parser.add_argument("--client-procs", type=int, default=1, help="client processes per cell")
    parser.add_argument(
        "--compression", action="store_true", help="add rows with permessage-deflate on"
    )
    parser.add_argument("--text", action="store_true", help="send text messages, not binary")
    parser.add_argument("--quick", action="store_true", help="0.5 s cells, 0.2 s warm-up, 1 round")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--profile", metavar="SERVER", help="run SERVER under cProfile and print its hot spots"
    )
    parser.add_argument(
        "--py-spy", metavar="SERVER", help="sample SERVER with py-spy and print its hot spots"
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by profiles")
    parser.add_argument(
        "--tether-src",
        metavar="DIR",
        help="import tether from DIR (e.g. a `git archive` of another commit) instead of ./src",
    )
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        metavar="BYTES",
        help="set glibc's MALLOC_MMAP_THRESHOLD_ in every server and client, e.g. 1048576: "
        "then asyncio's 256 KiB reads come from the heap, not from mmap (see run_all)",
    )
    parser.add_argument(
        "--tether-alt",
        metavar="DIR",
        help="add a column 'tether-alt': tether imported from DIR (compare two versions)",
    )
    args = parser.parse_args()
    if args.tether_src:
        os.environ["TETHER_BENCH_SRC"] = str(Path(args.tether_src).resolve())
    if args.malloc_mmap_threshold is not None:
        # Read by glibc at start-up in every child (servers and clients alike).
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    if args.tether_alt:
        ALT_SRC.append(str(Path(args.tether_alt).resolve()))
        if "tether-alt" not in args.servers:
            args.servers += ",tether-alt"

    if args.quick:
        args.duration, args.warmup, args.rounds = 0.5, 0.2, 1
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    connections = [int(c) for c in args.connections.split(",")]
    servers = [s.strip() for s in args.servers.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    for name in clients:
        if name not in CLIENTS:
            parser.error(f"unknown client {name!r}; choose from {', '.join(CLIENTS)}")
    if len(servers) > 1 and len(clients) > 1:
        parser.error("vary either the servers or the clients, not both")
    profiled = args.profile or args.py_spy
    if profiled:
        servers = [profiled]
    cells = [(size, conns) for size in sizes for conns in connections]
    columns = clients if len(clients) > 1 else servers

    tmp = tempfile.mkdtemp(prefix="tether-echo-")
    load_before = _load()
    setups: list[Setup] = []
    started = time.perf_counter()
    for compression in [False, True] if args.compression else [False]:
        group = [
            Setup(
                server,
                client,
                compression,
                args.text,
                args.client_procs,
                args.duration,
                args.warmup,
                profile=os.path.join(tmp, f"{server}.prof") if args.profile else None,
                py_spy=os.path.join(tmp, f"{server}.txt") if args.py_spy else None,
                column=client if len(clients) > 1 else server,
            )
            for server in servers
            for client in clients
        ]
        run_all(group, cells, args.rounds, progress=not args.silent)
        setups += group
    elapsed = time.perf_counter() - started

    print()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; best of {args.rounds} x "
        f"{args.duration:g} s per cell after {args.warmup:g} s warm-up; "
        f"{'text' if args.text else 'binary'} messages; "
        f"client: {', '.join(clients)} x{args.client_procs} process(es); run took {elapsed:.0f} s"
    )
    print(versions("tether", "websockets", "aiohttp"))
    if args.malloc_mmap_threshold is not None:
        print(f"MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold} in every process")
    print(
        f"load average (1 min) before: {load_before}, after: {_load()} "
        "(anything above ~0 is other work competing for the 2 cores)"
    )
    print()
    print_tables(setups, cells, columns)
    if args.json:
        data = [
            {
                "server": s.server,
                "client": s.client,
                "compression": s.compression,
                "size": size,
                "connections": conns,
                "rate": r.rate,
                "server_cpu": r.server_cpu,
                "client_cpu": r.client_cpu,
                "server_us_per_message": s.costs[size, conns],
            }
            for s in setups
            for (size, conns), r in s.results.items()
        ]
        Path(args.json).write_text(json.dumps(data, indent=1))
    for setup in setups:
        if setup.profile:
            print()
            report_profile(setup.profile, args.top)
        if setup.py_spy:
            print()
            report_py_spy(setup.py_spy, args.top)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def versions(*names: str) -> str:
    """The installed version of each distribution, for the line above a table."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


if __name__ == "__main__":
    main()
