"""What an idle tether server connection holds in memory, by object and by source line.

A tether server runs in this process (handler: ``async for m in ws: await ws.send(m)``, as in
echo_servers.py); the C load generator (``loadgen.c``, ``mode=idle``) opens N connections from
another process, optionally echoes one message on each, and holds them. Three views:

1. ``rss``: growth of this process's resident set per connection (tracemalloc off);
2. ``by type``: objects that appeared per connection, from ``gc.get_objects()`` plus the
   objects they reference that the collector does not track (bytes, str, bytearray, ints...),
   counted once each, with ``sys.getsizeof`` (shallow sizes; zlib's own buffers are invisible
   to it and show up in the tracemalloc view);
3. ``by line``: tracemalloc's allocation sites per connection (traced bytes, which include
   zlib's state, allocated through PyMem_RawMalloc).

Usage::

    python bench/idle_memory.py [-n 2000] [--compression deflate] [--message 1k] [--ping]
        [--tether-src DIR]

``--ping`` keeps tether's default keepalive (20 s); without it keepalive is off, as in the
echo benchmark. ``--message SIZE`` echoes one JSON-like text message of SIZE on each
connection before the measurement (deflate allocates its compressor and decompressor then).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _setup_path() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tether-src")
    known, _ = parser.parse_known_args()
    src = known.tether_src or os.environ.get("TETHER_BENCH_SRC")
    if src:
        # echo_client (imported below) puts TETHER_BENCH_SRC or ./src first on the path too.
        os.environ["TETHER_BENCH_SRC"] = src
    sys.path.insert(0, src or str(HERE.parent / "src"))


_setup_path()

from compare import compressed_frame, json_text, loadgen  # noqa: E402
from echo_client import masked_frame  # noqa: E402

from tether import serve  # noqa: E402


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def open_idle(port: int, n: int, frame: str | None, deflate: bool) -> Any:
    args = [loadgen(), "mode=idle", f"port={port}", f"conns={n}", f"deflate={int(deflate)}"]
    if frame:
        args.append(f"frame={frame}")
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line.startswith(b'{"ready"'):
        raise RuntimeError(f"loadgen failed: {line!r}")
    await asyncio.sleep(0.3)  # let the handlers reach their first await
    return proc


async def release(proc: Any) -> None:
    proc.stdin.write(b"close\n")
    proc.stdin.close()
    await proc.wait()
    await asyncio.sleep(0.5)  # let the server notice and drop the connections


def _ids_reachable(objects: list[Any]) -> dict[int, Any]:
    """The objects plus everything they refer to directly (untracked leaves included)."""
    seen: dict[int, Any] = {}
    for obj in objects:
        seen[id(obj)] = obj
        for ref in gc.get_referents(obj):
            seen.setdefault(id(ref), ref)
    return seen


async def measure(args: argparse.Namespace, frame: str | None) -> None:
    deflate = args.compression is not None
    n = args.n
    kwargs: dict[str, Any] = {"compression": args.compression}
    if not args.ping:
        kwargs["ping_interval"] = None
    async with serve(echo, "127.0.0.1", 0, **kwargs) as server:
        port = server.port_number
        # Warm-up: lazy imports, caches, the first connection's one-time costs.
        await release(await open_idle(port, 20, frame, deflate))

        # 1. RSS
        gc.collect()
        before = rss()
        proc = await open_idle(port, n, frame, deflate)
        gc.collect()
        after = rss()
        await release(proc)
        print(f"rss: {(after - before) / n:,.0f} bytes per idle connection ({n} connections)")

        # 2. objects (before tracemalloc: its snapshots are objects too)
        gc.collect()
        base = _ids_reachable(gc.get_objects())
        proc = await open_idle(port, n, frame, deflate)
        gc.collect()
        now = _ids_reachable(gc.get_objects())
        new = [obj for key, obj in now.items() if key not in base]
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in new:
            kind = type(obj)
            name = f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")
            counts[name] += 1
            sizes[name] += sys.getsizeof(obj)
        del new, now, base
        await release(proc)
        total = sum(sizes.values())
        print()
        print(f"by type: {total / n:,.0f} bytes of Python objects per connection (shallow sizes)")
        print(f"{'bytes/conn':>10} {'objs/conn':>9}  type")
        for name, size in sizes.most_common(args.top):
            print(f"{size / n:10,.0f} {counts[name] / n:9.2f}  {name}")
        print()

        # 3. allocation sites
        gc.collect()
        tracemalloc.start(args.frames)
        snap0 = tracemalloc.take_snapshot()
        proc = await open_idle(port, n, frame, deflate)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snap1.compare_to(snap0, "lineno")
        traced = sum(s.size_diff for s in stats)
        print(f"by line: {traced / n:,.0f} traced bytes per connection (tracemalloc)")
        print(f"{'bytes/conn':>10} {'blocks/conn':>11}  where")
        for stat in stats[: args.top]:
            frame0 = stat.traceback[0]
            where = frame0.filename
            for anchor in ("/tether/", "/asyncio/", "/python3."):
                if anchor in where:
                    where = where[where.index(anchor) + 1 :]
                    break
            print(
                f"{stat.size_diff / n:10,.0f} {stat.count_diff / n:11.2f}  {where}:{frame0.lineno}"
            )
        await release(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="idle connections")
    parser.add_argument("--compression", default=None, help="e.g. deflate (default: off)")
    parser.add_argument("--message", default=None, help="echo one text message of this size")
    parser.add_argument("--ping", action="store_true", help="keep the default keepalive")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc traceback depth")
    parser.add_argument("--tether-src", help="import tether from DIR")
    args = parser.parse_args()
    frame = None
    if args.message:
        text = args.message.lower()
        size = int(text.rstrip("k")) * (1024 if text.endswith("k") else 1)
        payload = json_text(size, random.Random(size))
        data = (
            compressed_frame(payload)
            if args.compression
            else masked_frame(payload, opcode=1, rsv1=False)
        )
        path = Path(f"/tmp/tether-idle-frame-{os.getpid()}.bin")
        path.write_bytes(data)
        frame = str(path)
    try:
        asyncio.run(measure(args, frame))
    finally:
        if frame:
            os.unlink(frame)


if __name__ == "__main__":
    main()
