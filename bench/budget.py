"""Issue 16, item 8: 300 clients each send 900 KiB of a 1 MiB frame and stop; the server's RSS
with no budget and with ``memory_budget=64 MiB``. Run: ``.venv/bin/python bench/budget.py``.

The server runs in a child process (so its RSS is its own); the clients are raw sockets here.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

# The raw client handshake, the RSS reading and the wait for an idle server of the soak
# experiments (bench/soak.py).
from soak import connect as open_client
from soak import rss, settle

SERVER = """
import asyncio, sys
from tether import Limits, serve

async def handler(ws):
    async for _ in ws:
        pass

async def main():
    budget = int(sys.argv[1]) or None
    limits = Limits(max_message_size=2**21, max_frame_size=2**21)
    async with serve(handler, "127.0.0.1", 0, limits=limits, memory_budget=budget,
                     compression=None, ping_interval=None, backlog=1024) as server:
        print(server.port_number, flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


async def hold(sock: socket.socket, size: int) -> None:
    """Send ``size`` bytes of a masked 1 MiB binary frame."""
    header = bytes([0x82, 0x80 | 127]) + (2**20).to_bytes(8, "big") + b"\0\0\0\0"
    payload = (header + b"x" * 2**20)[:size]
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, payload), 10)
    except (OSError, TimeoutError):
        pass


def closed_with(sock: socket.socket) -> int | None:
    """The close code the server sent, if any (reads what is there without waiting)."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return 0
    if len(data) >= 4 and data[0] == 0x88:
        return int.from_bytes(data[2:4], "big")
    return 0 if not data else None


async def run(budget: int, clients: int, size: int) -> dict[str, object]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(budget)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base, _ = rss(server.pid)
        socks = []
        for _ in range(clients):
            sock, head = await open_client(port)
            assert head.startswith(b"HTTP/1.1 101"), head[:80]
            socks.append(sock)
        started = time.perf_counter()
        await asyncio.gather(*(hold(s, size) for s in socks))
        await settle(server.pid)
        held, peak = rss(server.pid)
        codes = [closed_with(s) for s in socks]
        newcomers = [await open_client(port) for _ in range(10)]
        refused = sum(head.startswith(b"HTTP/1.1 503") for _, head in newcomers)
        for s, _ in newcomers:
            s.close()
        for s in socks:
            s.close()
        await settle(server.pid)
        after, _ = rss(server.pid)
        return {
            "budget MiB": budget // 2**20 if budget else "none",
            "base MiB": round(base / 1024),
            "RSS held MiB": round(held / 1024),
            "peak MiB": round(peak / 1024),
            "closed 1013": codes.count(1013),
            "newcomers 503": f"{refused}/10",
            "after close MiB": round(after / 1024),
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--size", type=int, default=900 * 1024)
    parser.add_argument("--budget", type=int, default=64 * 2**20)
    args = parser.parse_args()
    rows = [asyncio.run(run(b, args.clients, args.size)) for b in (0, args.budget)]
    names = list(rows[0])
    print(" | ".join(names))
    for row in rows:
        print(" | ".join(str(row[n]) for n in names))


if __name__ == "__main__":
    main()
