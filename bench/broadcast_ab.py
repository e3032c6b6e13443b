"""tether's ``broadcast()`` of this tree against the one of an earlier commit, in one server
process, on the same connections, alternating message by message.

On a shared machine the CPU cost of a broadcast to 10,000 sockets moves by +-10% between runs
(the ``send()`` system calls dominate it), which hides a change of that size between two
``bench/hub.py --only broadcast`` runs. Here both versions run in the same process against
the same 10,000 connections (``bench/hub.py``'s client process), one message each in turn,
so load, cache and socket state are shared; the median per version is comparable.

Usage::

    flock /tmp/tether-bench.lock .venv/bin/python bench/broadcast_ab.py [--rev 120ea99] \\
        [--connections 10000] [--broadcasts 40]

The earlier ``broadcast()`` is ``src/tether/asyncio/fanout.py`` at ``--rev`` (``git show``),
loaded beside the current package; it must work with the current connection class.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

import hub  # noqa: E402  (its client process, and its process helpers)


def load_old_broadcast(source: str) -> Any:
    """The ``broadcast`` of ``source`` (a fanout.py), as a module of the current package."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("tether.asyncio._fanout_old", file.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    Path(file.name).unlink()
    return module.broadcast


async def server(port: int, source: str) -> None:
    from tether import ServerConnection, broadcast, serve

    versions = {"old": load_old_broadcast(source), "new": broadcast}
    connections: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    loop = asyncio.get_running_loop()
    async with serve(
        handler, "127.0.0.1", port, compression=None, open_timeout=120, ping_interval=None
    ):
        print("ready", flush=True)
        _, count, size = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        cpu: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(int(count)):
            name = "old" if i % 2 == 0 else "new"
            message = f"{i}m {time.time_ns()} ".ljust(int(size), "x")
            started = time.process_time()
            sent = versions[name](connections, message)
            cpu[name].append(time.process_time() - started)
            assert sent == len(connections)
            await asyncio.sleep(0.05)  # let the writes drain between broadcasts
        print(json.dumps({"connections": len(connections), "cpu": cpu}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="120ea99", help="the commit of the earlier version")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--broadcasts", type=int, default=40, help="in all (half each)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    hub.raise_nofile()
    if args.server:
        asyncio.run(server(args.server, Path(args.source).read_text()))
        return
    source = subprocess.run(
        ["git", "show", f"{args.rev}:src/tether/asyncio/fanout.py"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py") as old:
        old.write(source)
        old.flush()
        port = hub.free_port()
        command = [sys.executable, str(HERE), "--server", str(port), "--source", old.name]
        server_process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        client = None
        try:
            hub.wait_line(server_process, "ready")
            client = hub.spawn("--clients", str(port), "--count", str(args.connections))
            hub.wait_line(client, "ready")
            hub.tell(client, f"expect {args.broadcasts} m")
            hub.wait_line(client, "armed")
            hub.tell(server_process, f"go {args.broadcasts} {args.size}")
            report = json.loads(hub.wait_line(server_process))
            result = json.loads(hub.wait_line(client))
            hub.tell(client, "quit")
            hub.tell(server_process, "quit")
        finally:
            for process in (server_process, client):
                if process is None:
                    continue
                if process.poll() is None:
                    process.kill()
                process.wait()
    count = report["connections"]
    us = {name: statistics.median(v) / count * 1e6 for name, v in report["cpu"].items()}
    print(
        f"load {hub.loadavg()}; delivered {result['delivered']}/{result['expected']}; "
        f"cpu us/conn, median of {args.broadcasts // 2} each: {args.rev} {us['old']:.2f}, "
        f"this tree {us['new']:.2f} ({us['new'] / us['old']:.2f}x)",
        flush=True,
    )


if __name__ == "__main__":
    main()
