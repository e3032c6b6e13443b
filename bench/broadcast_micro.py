"""Per-connection Python cost of one broadcast, without sockets: tether's ``broadcast()``
against websockets' ``broadcast()``.

N server connections of each library (sans-I/O protocol already OPEN) get fake transports
that only count the bytes written; one text message is broadcast to all of them. What is
left is each library's own work per connection (checks, framing, the call into
``transport.write``), with no system calls, so it is steadier than ``bench/hub.py --only
broadcast`` on a busy machine and shows the effect of a change quickly.

Usage::

    python bench/broadcast_micro.py [--connections 1000] [--size 64] [--library tether]
    # instructions per connection: the difference between two fixed runs, under valgrind
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/broadcast_micro.py --fixed 40
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/broadcast_micro.py --fixed 20

``(Ir(40) - Ir(20)) / (20 * connections)`` is the instruction count per connection.
``--deflate`` gives every tether connection permessage-deflate without context takeover on
our side (one shared compression per broadcast); ``--slow K`` marks every K-th connection as
above its high-water mark (skipped); ``--tether-src DIR`` imports tether from DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any


def _setup_path() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tether-src")
    known, _ = parser.parse_known_args()
    src = known.tether_src or os.environ.get("TETHER_BENCH_SRC")
    sys.path.insert(0, src or str(Path(__file__).resolve().parent.parent / "src"))


_setup_path()

import tether  # noqa: E402
from tether.asyncio.connection import Connection  # noqa: E402
from tether.sansio.protocol import Protocol, Side, State  # noqa: E402


class FakeTransport(asyncio.Transport):
    """Swallows writes; counts bytes written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def tether_connections(count: int, deflate: bool, slow: int) -> list[Any]:
    from tether.extensions.permessage_deflate import PerMessageDeflate

    connections = []
    for index in range(count):
        protocol = Protocol(Side.SERVER, state=State.OPEN)
        if deflate:
            protocol.extensions = [PerMessageDeflate(False, True, 15, 15)]
        connection = Connection(protocol, ping_interval=None)
        connection.connection_made(FakeTransport())
        if slow and index % slow == 0:
            connection.pause_writing()
        connections.append(connection)
    return connections


def websockets_connections(count: int, deflate: bool, slow: int) -> list[Any]:
    from websockets.asyncio.connection import Connection as WsConnection
    from websockets.protocol import OPEN, SERVER
    from websockets.protocol import Protocol as WsProtocol

    connections = []
    for _ in range(count):
        connection = WsConnection(WsProtocol(SERVER, state=OPEN), ping_interval=None)
        connection.connection_made(FakeTransport())
        connections.append(connection)
    return connections


def broadcaster(library: str) -> Any:
    if library == "tether":
        return tether.broadcast
    import websockets

    return websockets.broadcast


async def measure(args: argparse.Namespace) -> float:
    make = tether_connections if args.library == "tether" else websockets_connections
    connections = make(args.connections, args.deflate, args.slow)
    send = broadcaster(args.library)
    message = "m" * args.size
    if args.fixed is not None:
        for _ in range(args.fixed):
            send(connections, message)
        expected = args.fixed * args.size * (args.connections - _skipped(args))
        assert sum(c.transport.written for c in connections) >= expected
        return 0.0
    best = float("inf")
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(args.broadcasts):
            send(connections, message)
        elapsed = time.process_time() - start
        best = min(best, elapsed / args.broadcasts / args.connections)
    return best * 1e6


def _skipped(args: argparse.Namespace) -> int:
    if not args.slow or args.library != "tether":
        return 0
    return len(range(0, args.connections, args.slow))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=("tether", "websockets"), default="tether")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--broadcasts", type=int, default=50, help="per timed round")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (the best is kept)")
    parser.add_argument("--deflate", action="store_true", help="tether only")
    parser.add_argument("--slow", type=int, default=0, metavar="K", help="tether only")
    parser.add_argument("--tether-src", help="import tether from DIR instead of ./src")
    parser.add_argument(
        "--fixed",
        type=int,
        metavar="B",
        help="do exactly B broadcasts and print nothing (for instruction counts, see above)",
    )
    args = parser.parse_args()
    cost = asyncio.run(measure(args))
    if args.fixed is None:
        print(f"{args.library}: {cost:.3f} us CPU per connection (best of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
