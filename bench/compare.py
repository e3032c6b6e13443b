"""The speed table of issue 13: picows, aiohttp, websockets and tether measured in one run.

Every measurement starts a fresh server process (``echo_servers.py``) pinned to one core with
``taskset`` and drives it from a C load generator (``loadgen.c``, compiled with gcc into
``~/.cache/tether-bench/`` on first use) pinned to the other core. The C generator spends about
3 us of CPU per small echo, where the Python raw client of ``echo.py`` spent 14-18 us, so the
server is the one being measured at every size. Rounds interleave the servers cell by cell, so a
change in the machine's background load hits every column alike; the median round is reported.

Sections (each can be skipped):

- echo: closed-loop echo of binary messages of 16 B, 1 KiB, 64 KiB and 1 MiB on 64 connections
  and on 1; server CPU time per message (all threads, from /proc/PID/task/*/schedstat) and
  messages per second;
- handshake: handshakes per second with 1 and 64 openers, each opener looping over connect,
  upgrade, close handshake, the server's FIN; and server CPU time per handshake;
- deflate: echo at 1 connection of 1 KiB and 64 KiB JSON-like text with each library's default
  permessage-deflate (picows has none), and the compression ratio of the server's replies
  (compressed payload / original size);
- memory: server RSS growth per idle connection, opening N connections (2,000 by default), with
  compression off (after the handshake) and with each library's default deflate (after the
  handshake, and after one 1 KiB JSON-like text message echoed on each connection);
- client: tether's asyncio client (``await send(); await recv()``, and ``tether-callback``:
  ``set_message_callback`` + ``send_nowait``) next to picows' client (its callback style) at 1
  connection for every size, against the picows server; the figure is the client's CPU time
  per message.

Usage::

    python bench/compare.py            # everything, 3 rounds, about 4 minutes
    python bench/compare.py --quick    # 1 round of shorter cells, fewer idle connections, ~1.5 min
    python bench/compare.py --only echo,handshake --servers tether,aiohttp
    python bench/compare.py --tether-alt DIR   # extra column: tether imported from DIR
    python bench/compare.py --json out.json

``--tether-alt DIR`` adds a column for a tether tree imported from DIR (for example a copy with
compiled modules, see ``compile_variants.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo import label, pinned, versions  # noqa: E402
from echo_client import build_frame, masked_frame  # noqa: E402

SERVERS = ("picows", "aiohttp", "websockets", "tether")
ECHO_SIZES = (16, 1024, 65536, 1 << 20)
DEFLATE_SIZES = (1024, 65536)
SERVER_CORE, CLIENT_CORE = "1", "0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tether-bench"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tether_zlib(src: str | None) -> str:
    """Which zlib the tether under test compresses with (zlib-ng's when installed, unless
    TETHER_NO_ZLIB_NG is set), imported the way echo_servers.py imports it."""
    path = src or os.environ.get("TETHER_BENCH_SRC") or str(HERE.parent / "src")
    code = (
        f"import sys; sys.path.insert(0, {path!r}); import zlib\n"
        "try: from tether.extensions.permessage_deflate import ZLIB_BACKEND as b\n"
        "except ImportError: b = 'zlib ' + zlib.ZLIB_RUNTIME_VERSION\n"
        "print(b)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


# --- processes -----------------------------------------------------------------------------------


def loadgen() -> str:
    """The compiled load generator, built on first use (and again when loadgen.c changes)."""
    source = HERE / "loadgen.c"
    binary = CACHE / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        CACHE.mkdir(parents=True, exist_ok=True)
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise SystemExit("compare.py needs gcc (or cc) to build bench/loadgen.c")
        subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return str(binary)


class Server:
    """One echo server process (pinned), stopped at EOF on its stdin."""

    def __init__(self, name: str, compression: bool, alt_src: str | None) -> None:
        env = dict(os.environ)
        library = name
        if name == "tether-alt":
            assert alt_src is not None
            env["TETHER_BENCH_SRC"] = alt_src
            library = "tether"
        args = [sys.executable, str(HERE / "echo_servers.py"), library]
        if compression:
            args.append("--compression")
        self.proc = subprocess.Popen(
            [*pinned(SERVER_CORE), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 4 or line[0] != "PORT":
            self.proc.kill()
            raise RuntimeError(f"{name} server did not start: {line!r}")
        self.port, self.pid = int(line[1]), int(line[3])

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_loadgen(server: Server, **params: Any) -> dict[str, float]:
    args = [*pinned(CLIENT_CORE), loadgen(), f"port={server.port}", f"pid={server.pid}"]
    args += [f"{key}={value}" for key, value in params.items()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(f"loadgen {params} failed: {out.stderr.strip()}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


# --- measurements --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="tether-compare-"))
        self.frames: dict[tuple[int, bool], str] = {}
        # results[section][server][cell] -> list of measurements (one per round)
        self.results: dict[str, dict[str, dict[Any, list[dict[str, float]]]]] = {}
        self.loads: list[str] = []

    def frame(self, size: int, deflate: bool) -> str:
        """A file of pre-masked client frames for the load generator: one random binary
        message, or for deflate JSON_MESSAGES different JSON-like texts, each compressed on its
        own (the client offers client_no_context_takeover), sent in turn. Different messages
        matter: a server that keeps its compression context would answer a repeated message
        with a few bytes, and measure neither zlib's real work nor a real ratio."""
        key = (size, deflate)
        if key not in self.frames:
            path = self.tmp / f"frame-{size}-{int(deflate)}.bin"
            if deflate:
                rng = random.Random(size)
                data = b"".join(
                    compressed_frame(json_text(size, rng)) for _ in range(JSON_MESSAGES)
                )
            else:
                data = build_frame(size, text=False, compression=False)
            path.write_bytes(data)
            self.frames[key] = str(path)
        return self.frames[key]

    def record(self, section: str, server: str, cell: Any, result: dict[str, float]) -> None:
        self.results.setdefault(section, {}).setdefault(server, {}).setdefault(cell, []).append(
            result
        )

    def progress(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)

    def interleave(
        self, section: str, cells: list[Any], servers: list[str], measure: Callable[..., Any]
    ) -> None:
        for round_ in range(self.args.rounds):
            self.loads.append(load())
            for cell in cells:
                for name in servers:
                    result = measure(name, cell)
                    self.record(section, name, cell, result)
                    self.progress(f"  [{section} r{round_ + 1}] {name:>10} {cell}: {short(result)}")

    def echo_cell(self, name: str, cell: tuple[int, int, bool]) -> dict[str, float]:
        size, conns, deflate = cell
        server = Server(name, deflate, self.args.tether_alt)
        try:
            return run_loadgen(
                server,
                mode="echo",
                conns=conns,
                frame=self.frame(size, deflate),
                warmup=self.args.warmup,
                duration=self.args.duration,
                deflate=int(deflate),
            )
        finally:
            server.stop()

    def handshake_cell(self, name: str, openers: int) -> dict[str, float]:
        server = Server(name, False, self.args.tether_alt)
        try:
            return run_loadgen(
                server,
                mode="handshake",
                conns=openers,
                warmup=self.args.warmup,
                duration=self.args.duration,
            )
        finally:
            server.stop()

    def memory_cell(self, name: str, cell: tuple[bool, bool]) -> dict[str, float]:
        deflate, one_message = cell
        n = self.args.idle
        server = Server(name, deflate, self.args.tether_alt)
        frame = self.frame(1024, deflate) if one_message else None
        try:
            # Warm the server up (lazy imports, first-connection caches), then measure.
            warm = self._idle(server, 20, frame, deflate)
            self._release(warm)
            time.sleep(0.3)
            before = server.rss()
            holder = self._idle(server, n, frame, deflate)
            time.sleep(0.5)
            after = server.rss()
            self._release(holder)
            return {"bytes_per_conn": (after - before) / n, "rss_before": before}
        finally:
            server.stop()

    def _idle(self, server: Server, n: int, frame: str | None, deflate: bool) -> Any:
        args = [*pinned(CLIENT_CORE), loadgen(), "mode=idle", f"port={server.port}"]
        args += [f"conns={n}", f"deflate={int(deflate)}"]
        if frame:
            args.append(f"frame={frame}")
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            proc.kill()
            raise RuntimeError(f"loadgen idle failed: {line!r}")
        return proc

    @staticmethod
    def _release(proc: Any) -> None:
        stdin: IO[str] = proc.stdin
        stdin.write("close\n")
        stdin.close()
        proc.wait(30)

    def client_cell(self, name: str, size: int) -> dict[str, float]:
        """One of the library clients (echo_client.py) against the picows server, C=1."""
        server = Server("picows", False, None)
        env = dict(os.environ)
        client_name = name
        if name == "tether-alt":
            env["TETHER_BENCH_SRC"] = self.args.tether_alt
            client_name = "tether"
        client = subprocess.Popen(
            [
                *pinned(CLIENT_CORE),
                sys.executable,
                str(HERE / "echo_client.py"),
                "--port",
                str(server.port),
                "--client",
                client_name,
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert client.stdin is not None and client.stdout is not None

        def say(line: str) -> None:
            assert client.stdin is not None
            client.stdin.write(line + "\n")
            client.stdin.flush()

        def expect(word: str) -> str:
            assert client.stdout is not None
            line = client.stdout.readline()
            if not line.startswith(word):
                raise RuntimeError(f"client {name}: expected {word}, got {line!r}")
            return line[len(word) :].strip()

        try:
            say("CELL " + json.dumps({"size": size, "conns": 1}))
            expect("READY")
            say("GO")
            time.sleep(self.args.warmup)
            say("MARK")
            a = json.loads(expect("MARK"))
            time.sleep(self.args.duration)
            say("MARK")
            b = json.loads(expect("MARK"))
            say("STOP")
            expect("DONE")
        finally:
            client.stdin.close()
            client.wait(30)
            server.stop()
        return {
            "count": b["count"] - a["count"],
            "seconds": b["time"] - a["time"],
            "client_cpu": b["cpu"] - a["cpu"],
            "server_cpu": 0.0,
            "rx_bytes": 0,
        }


#: Distinct messages per deflate cell (the load generator sends them in turn).
JSON_MESSAGES = 32
_WORDS = ["alpha", "beta", "gamma", "delta", "deploy", "green", "build", "queue", "order"]


def json_text(size: int, rng: random.Random) -> bytes:
    """``size`` bytes of JSON-like text (one record per line, repeated keys, random values)."""
    out: list[str] = []
    total = 0
    while total < size:
        record = json.dumps(
            {
                "id": rng.randrange(10**9),
                "user": f"user{rng.randrange(5000)}",
                "ts": round(1.7e9 + rng.random() * 1e6, 3),
                "price": round(rng.uniform(1, 1000), 2),
                "side": rng.choice(["buy", "sell"]),
                "tags": rng.sample(_WORDS, 3),
                "text": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 12))),
            }
        )
        out.append(record)
        total += len(record) + 1
    return "\n".join(out).encode()[:size]


def compressed_frame(payload: bytes) -> bytes:
    """One masked text frame, compressed alone (RSV1 set), as a permessage-deflate client
    with client_no_context_takeover sends it."""
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return masked_frame(body[:-4], opcode=1, rsv1=True)


def short(result: dict[str, float]) -> str:
    if "bytes_per_conn" in result:
        return f"{result['bytes_per_conn']:,.0f} B/conn"
    count = result["count"] or 1
    return (
        f"{result['count'] / result['seconds']:,.0f}/s,"
        f" server {1e6 * result['server_cpu'] / count:.1f} us,"
        f" client {1e6 * result['client_cpu'] / count:.1f} us"
    )


# --- tables --------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rate(runs: list[dict[str, float]]) -> float:
    return med([r["count"] / r["seconds"] for r in runs])


def server_us(runs: list[dict[str, float]]) -> float:
    return med([1e6 * r["server_cpu"] / r["count"] for r in runs if r["count"]])


def client_us(runs: list[dict[str, float]]) -> float:
    return med([1e6 * r["client_cpu"] / r["count"] for r in runs if r["count"]])


def server_share(runs: list[dict[str, float]]) -> float:
    return med([r["server_cpu"] / r["seconds"] for r in runs])


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def table(title: str, head: list[str], rows: list[list[str]]) -> None:
    print(title)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()


def report(bench: Bench, servers: list[str], args: argparse.Namespace) -> None:
    res = bench.results
    get = lambda section, name, cell: res.get(section, {}).get(name, {}).get(cell, [])  # noqa: E731
    sizes = [s for s in ECHO_SIZES if s in args.sizes]
    summary_head = ["server"]
    summary: dict[str, list[str]] = {name: [name] for name in servers}
    if "echo" in res:
        for conns in (64, 1):
            head = ["server"] + [label(s) for s in sizes]
            table(
                f"echo, {conns} connection(s): server CPU us per message (median of rounds)",
                head,
                [
                    [name] + [fmt(server_us(get("echo", name, (s, conns, False)))) for s in sizes]
                    for name in servers
                ],
            )
            table(
                f"echo, {conns} connection(s): messages per second (server CPU share in brackets)",
                head,
                [
                    [name]
                    + [
                        f"{fmt(rate(get('echo', name, (s, conns, False))), 0)}"
                        f" ({fmt(100 * server_share(get('echo', name, (s, conns, False))), 0)}%)"
                        for s in sizes
                    ]
                    for name in servers
                ],
            )
        table(
            "load generator CPU us per message, 64 connections (the C client's own cost)",
            ["server"] + [label(s) for s in sizes],
            [
                [name] + [fmt(client_us(get("echo", name, (s, 64, False)))) for s in sizes]
                for name in servers
            ],
        )
        summary_head += [f"echo us/msg C=64 {label(s)}" for s in sizes]
        summary_head += [f"C=1 {label(s)}" for s in sizes]
        for name in servers:
            summary[name] += [fmt(server_us(get("echo", name, (s, 64, False)))) for s in sizes]
            summary[name] += [fmt(server_us(get("echo", name, (s, 1, False)))) for s in sizes]
    if "handshake" in res:
        openers = args.openers
        table(
            "handshakes per second (server CPU us per handshake; server CPU share)",
            ["server"] + [f"{o} opener(s)" for o in openers],
            [
                [name]
                + [
                    f"{fmt(rate(get('handshake', name, o)), 0)}"
                    f" ({fmt(server_us(get('handshake', name, o)), 0)} us;"
                    f" {fmt(100 * server_share(get('handshake', name, o)), 0)}%)"
                    for o in openers
                ]
                for name in servers
            ],
        )
        summary_head += [f"handshakes/s {o}" for o in openers]
        for name in servers:
            summary[name] += [fmt(rate(get("handshake", name, o)), 0) for o in openers]
    if "deflate" in res:
        deflaters = [n for n in servers if n != "picows"]

        def ratio(runs: list[dict[str, float]], size: int) -> float:
            return med([r["rx_bytes"] / r["count"] / size for r in runs if r["count"]])

        table(
            "deflate, 1 connection, JSON-like text:"
            " msgs/s (server CPU us/msg; compressed/original)",
            ["server"] + [label(s) for s in DEFLATE_SIZES],
            [
                [name]
                + [
                    f"{fmt(rate(get('deflate', name, (s, 1, True))), 0)}"
                    f" ({fmt(server_us(get('deflate', name, (s, 1, True))))} us;"
                    f" {fmt(ratio(get('deflate', name, (s, 1, True)), s), 3)})"
                    for s in DEFLATE_SIZES
                ]
                for name in deflaters
            ],
        )
        summary_head += [f"deflate msgs/s C=1 {label(s)} (ratio)" for s in DEFLATE_SIZES]
        for name in servers:
            for s in DEFLATE_SIZES:
                runs = get("deflate", name, (s, 1, True))
                summary[name].append(
                    f"{fmt(rate(runs), 0)} ({fmt(ratio(runs, s), 3)})" if runs else "no deflate"
                )
    if "memory" in res:
        cells = [(False, False), (True, False), (True, True)]
        names = ["deflate off", "default deflate", "default deflate, after 1 KiB msg"]

        def per_conn(name: str, cell: tuple[bool, bool]) -> str:
            runs = get("memory", name, cell)
            return fmt(med([r["bytes_per_conn"] for r in runs]), 0) if runs else "n/a"

        table(
            f"server RSS per idle connection, bytes ({args.idle} connections)",
            ["server", *names],
            [[name] + [per_conn(name, c) for c in cells] for name in servers],
        )
        summary_head += ["B/idle conn", "B/idle conn, deflate (after 1 msg)"]
        for name in servers:
            summary[name] += [
                per_conn(name, (False, False)),
                f"{per_conn(name, (True, False))} ({per_conn(name, (True, True))})",
            ]
    if "client" in res:
        clients = [n for n in args.clients]
        table(
            "clients at C=1 against the picows server: client CPU us per message (msgs/s)",
            ["client"] + [label(s) for s in sizes],
            [
                [name]
                + [
                    f"{fmt(client_us(get('client', name, s)))}"
                    f" ({fmt(rate(get('client', name, s)), 0)})"
                    for s in sizes
                ]
                for name in clients
            ],
        )
    if len(summary_head) > 1:
        table(
            "summary (issue 13's columns; CPU figures are server CPU us per message, medians)",
            summary_head,
            [summary[name] for name in servers],
        )


# --- profiling -----------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> None:
    """Sample one server with py-spy under one load: --py-spy SERVER:MODE[:SIZE:CONNS]."""
    from echo import report_py_spy, start_py_spy

    name, mode, *rest = args.py_spy.split(":")
    size = int(rest[0]) if rest else 16
    conns = int(rest[1]) if len(rest) > 1 else 64
    deflate = mode == "deflate"
    bench = Bench(args)
    server = Server(name, deflate, args.tether_alt)
    output = str(bench.tmp / "py-spy.txt")
    spy = start_py_spy(server.pid, output)
    try:
        params: dict[str, Any] = {"conns": conns, "warmup": 0.2, "duration": args.duration}
        if mode == "handshake":
            params["mode"] = "handshake"
        else:
            params.update(mode="echo", frame=bench.frame(size, deflate), deflate=int(deflate))
        result = run_loadgen(server, **params)
    finally:
        spy.send_signal(2)
        spy.wait(30)
        server.stop()
    print(f"{name} under {mode} load ({conns} connections): {short(result)}; load {load()}")
    report_py_spy(output, args.top)
    print()
    print("self time by where the sampled leaf frame is (share of busy samples):")
    groups: dict[str, int] = {}
    busy = 0
    with open(output) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            leaf = stack.split(";")[-1]
            if leaf.split(" (")[0].endswith(("select", "poll")):
                continue
            busy += int(count)
            group = next(
                (g for g in GROUPS if g in leaf.replace("\\", "/")), "other (stdlib, C calls)"
            )
            groups[group] = groups.get(group, 0) + int(count)
    for group, count in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"{100 * count / max(busy, 1):6.1f}%  {group}")


#: Where a sampled frame's file lives, for the grouped profile summary.
GROUPS = (
    "tether/sansio/",
    "tether/extensions/",
    "tether/asyncio/",
    "tether/",
    "asyncio/selector_events",
    "asyncio/",
    "selectors.py",
    "socket.py",
    "uuid.py",
    "logging/",
    "picows",
    "aiohttp/",
    "websockets/",
)


# --- main ----------------------------------------------------------------------------------------


SECTIONS = ("echo", "handshake", "deflate", "memory", "client")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Usage::", 1)[1],
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 0.5 s cells, 500 idle")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    parser.add_argument("--sizes", default="16,1k,64k,1m")
    parser.add_argument("--openers", default="1,64")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections for memory")
    parser.add_argument(
        "--clients", default="tether,tether-callback,picows", help="clients compared"
    )
    parser.add_argument("--tether-alt", metavar="DIR", help="add a column: tether from DIR")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    parser.add_argument("--silent", action="store_true", help="no progress lines")
    parser.add_argument(
        "--py-spy",
        metavar="SERVER:MODE[:SIZE:CONNS]",
        help="profile one server with py-spy instead (MODE: echo, handshake or deflate), "
        "e.g. tether:handshake:0:64 or tether:echo:16:64; --duration sets the seconds",
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by --py-spy")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 0.5, 0.2
        if args.idle == 2000:
            args.idle = 500
    args.sizes = [
        int(s[:-1]) * {"k": 1024, "m": 1 << 20}[s[-1]] if s[-1] in "km" else int(s)
        for s in args.sizes.lower().split(",")
    ]
    args.openers = [int(o) for o in args.openers.split(",")]
    servers = [s.strip() for s in args.servers.split(",")]
    args.clients = [c.strip() for c in args.clients.split(",")]
    if args.tether_alt:
        args.tether_alt = str(Path(args.tether_alt).resolve())
        servers.append("tether-alt")
        args.clients.append("tether-alt")
    sections = [s.strip() for s in args.only.split(",")]
    for name in sections:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}")

    loadgen()
    if args.py_spy:
        profile(args)
        return
    bench = Bench(args)
    started = time.perf_counter()
    load_before = load()
    if "echo" in sections:
        cells = [(s, c, False) for c in (64, 1) for s in args.sizes]
        bench.interleave("echo", cells, servers, bench.echo_cell)
    if "handshake" in sections:
        bench.interleave("handshake", args.openers, servers, bench.handshake_cell)
    if "deflate" in sections:
        cells = [(s, 1, True) for s in DEFLATE_SIZES]
        bench.interleave("deflate", cells, [s for s in servers if s != "picows"], bench.echo_cell)
    if "memory" in sections:
        # RSS is not a rate: one round is enough, and 2,000 connections take a while.
        rounds, args.rounds = args.rounds, 1
        cells = [(False, False), (True, False), (True, True)]
        for cell in cells:
            for name in servers:
                if cell[0] and name == "picows":
                    continue
                bench.record("memory", name, cell, bench.memory_cell(name, cell))
                done = bench.results["memory"][name][cell][-1]
                bench.progress(f"  [memory] {name:>10} {cell}: {short(done)}")
        args.rounds = rounds
    if "client" in sections:
        sizes = args.sizes
        bench.interleave("client", sizes, args.clients, bench.client_cell)
    elapsed = time.perf_counter() - started

    print()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server on core {SERVER_CORE},"
        f" load generator on core {CLIENT_CORE}; {args.rounds} round(s) of {args.duration:g} s"
        f" after {args.warmup:g} s warm-up; median round; run took {elapsed:.0f} s"
    )
    print(versions("tether", "picows", "aiohttp", "websockets"))
    zlibs = f"tether's permessage-deflate uses {tether_zlib(None)}"
    if args.tether_alt:
        zlibs += f"; tether-alt's, {tether_zlib(args.tether_alt)}"
    print(zlibs)
    print(f"load average (1/5/15 min) before: {load_before}; after: {load()}")
    print(f"load average at each round's start: {'; '.join(bench.loads)}")
    print()
    report(bench, servers, args)
    if args.json:
        data = {
            section: {
                name: {str(cell): runs for cell, runs in cells.items()}
                for name, cells in by_server.items()
            }
            for section, by_server in bench.results.items()
        }
        Path(args.json).write_text(json.dumps(data, indent=1))
    shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
