"""Per-message Python cost of an echo in tether's asyncio server, without sockets.

A server-side :class:`tether.asyncio.connection.Connection` (sans-I/O protocol already OPEN;
or websockets' asyncio ``Connection`` with ``--library websockets``)
gets a fake transport; masked frames are handed to ``data_received`` one at a time, and the
handler ``async for message in ws: await ws.send(message)`` echoes each into the fake
transport. What is left is exactly tether's Python work per round trip (parse, unmask, queue,
wake the handler, serialise, write), with no system calls and no selector, so it is steadier
than the end-to-end benchmark on a busy machine and shows the effect of a change quickly.

Usage: ``python bench/echo_micro.py [--sizes 16,1k,64k,1m] [--budget SECONDS]
[--tether-src DIR] [--callback]``; figures are microseconds of CPU time per message (best of
15 short rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
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

from tether.asyncio.connection import Connection  # noqa: E402
from tether.limits import Limits  # noqa: E402
from tether.sansio.protocol import Protocol, Side, State  # noqa: E402

#: What asyncio's selector transport reads at most per recv() (max_size of its read buffer).
READ_SIZE = 256 * 1024


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

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def masked_frame(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x82, 0x80 | n)
    elif n < 0x10000:
        header = struct.pack("!BBH", 0x82, 0xFE, n)
    else:
        header = struct.pack("!BBQ", 0x82, 0xFF, n)
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )
    return header + key + masked


def tether_connection() -> Any:
    limits = Limits(max_frame_size=2 * 2**20, max_message_size=2 * 2**20)
    protocol = Protocol(Side.SERVER, state=State.OPEN, limits=limits, assemble=False)
    return Connection(protocol, ping_interval=None)


def websockets_connection() -> Any:
    from websockets.asyncio.connection import Connection as WsConnection
    from websockets.protocol import OPEN, SERVER
    from websockets.protocol import Protocol as WsProtocol

    protocol = WsProtocol(SERVER, state=OPEN, max_size=2 * 2**20)
    return WsConnection(protocol, ping_interval=None)


LIBRARIES = {"tether": tether_connection, "websockets": websockets_connection}


async def measure(
    size: int,
    budget: float,
    rounds: int = 15,
    fixed: int | None = None,
    library: str = "tether",
    callback: bool = False,
) -> float:
    connection = LIBRARIES[library]()
    transport = FakeTransport()
    connection.connection_made(transport)
    frame = masked_frame(os.urandom(size))
    # Frames arrive as the selector transport reads them: at most 256 KiB per data_received.
    chunks = [frame[i : i + READ_SIZE] for i in range(0, len(frame), READ_SIZE)]

    async def echo() -> None:
        async for message in connection:
            await connection.send(message)

    if callback:
        # The message callback answers from the read callback: no task, no future.
        connection.set_message_callback(connection.send_nowait)
        task = asyncio.create_task(asyncio.sleep(0))
    else:
        task = asyncio.create_task(echo())
    await asyncio.sleep(0)
    if isinstance(connection, asyncio.BufferedProtocol):
        # What the selector transport does for a buffered protocol: recv_into the lent buffer.
        def data_received(chunk: bytes) -> None:
            buffer = memoryview(connection.get_buffer(-1))
            buffer[: len(chunk)] = chunk
            connection.buffer_updated(len(chunk))

    else:
        data_received = connection.data_received
    if fixed is not None:
        # A fixed number of round trips, for instruction counts (see --fixed).
        for _ in range(fixed):
            for chunk in chunks:
                data_received(chunk)
            await asyncio.sleep(0)
        assert transport.written >= fixed * size
        task.cancel()
        return 0.0
    count = max(10, int(20_000 / (1 + size / 1024)))
    best = float("inf")
    for _ in range(rounds):
        written = transport.written
        start = time.process_time()
        for _ in range(count):
            for chunk in chunks:
                data_received(chunk)
            await asyncio.sleep(0)  # the handler takes the message and echoes it
        elapsed = time.process_time() - start
        assert transport.written - written >= count * size, "the echoes did not all happen"
        best = min(best, elapsed / count)
        # Short rounds, many of them: the best one is the least disturbed by other processes.
        count = max(10, int(count * budget / rounds / max(elapsed, 1e-6)))
    task.cancel()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,1k,64k,1m")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per size, roughly")
    parser.add_argument("--tether-src", help="import tether from DIR instead of ./src")
    parser.add_argument(
        "--library",
        choices=sorted(LIBRARIES),
        default="tether",
        help="whose server connection to drive (websockets: its asyncio Connection, same setup)",
    )
    parser.add_argument(
        "--fixed",
        type=int,
        metavar="N",
        help="do exactly N round trips per size and print nothing: run it under "
        "`valgrind --tool=callgrind` with N and with 0 to count instructions per message",
    )
    parser.add_argument(
        "--callback",
        action="store_true",
        help="tether: echo from a message callback (set_message_callback + send_nowait) "
        "instead of `async for message in ws: await ws.send(message)`",
    )
    args = parser.parse_args()
    sizes = []
    for text in args.sizes.split(","):
        text = text.strip().lower()
        factor = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("km")) * factor)
    if args.fixed is not None:
        for size in sizes:
            asyncio.run(
                measure(
                    size,
                    args.budget,
                    fixed=args.fixed,
                    library=args.library,
                    callback=args.callback,
                )
            )
        return
    print(f"{'size':>8} {'us/msg':>9}")
    for size in sizes:
        cost = asyncio.run(measure(size, args.budget, library=args.library, callback=args.callback))
        print(f"{size:>8} {cost:9.2f}")


if __name__ == "__main__":
    main()
