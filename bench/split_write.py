"""What writing a large payload apart from its header buys: echo cost with and without it.

A server's protocol writes the payload of an outgoing frame of ``SPLIT_WRITE_SIZE`` bytes or
more as its own write, after :func:`tether.sansio.frames.unmasked_header`, instead of copying it
behind the header with :func:`~tether.sansio.frames.serialize_frame`. This runs the asyncio
echo of ``bench/echo_micro.py`` both ways (the split turned off by raising the threshold past
any size) and prints microseconds of CPU time per message, plus the cost of building one frame
each way.

Usage: ``python bench/split_write.py [--sizes 64k,1m] [--budget SECONDS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import echo_micro

from tether.sansio import protocol
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, serialize_frame, unmasked_header


def build_cost(size: int) -> tuple[float, float]:
    frame = Frame(Opcode.BINARY, bytes(size))
    results = []
    for build in (
        lambda: serialize_frame(frame, mask=False),
        lambda: (unmasked_header(frame), frame.data),
    ):
        best = float("inf")
        for _ in range(7):
            start = time.process_time()
            for _ in range(500):
                build()
            best = min(best, time.process_time() - start)
        results.append(best / 500 * 1e6)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64k,1m")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per size and way")
    args = parser.parse_args()
    sizes = []
    for text in args.sizes.split(","):
        text = text.strip().lower()
        factor = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("km")) * factor)
    split_size = protocol.SPLIT_WRITE_SIZE
    print(f"{'size':>8} {'split us/msg':>13} {'copy us/msg':>12} {'build split':>12} {'copy':>8}")
    for size in sizes:
        costs = []
        for threshold in (split_size, 1 << 62):
            protocol.SPLIT_WRITE_SIZE = threshold
            costs.append(asyncio.run(echo_micro.measure(size, args.budget, library="tether")))
        protocol.SPLIT_WRITE_SIZE = split_size
        copy_build, split_build = build_cost(size)
        print(f"{size:>8} {costs[0]:13.2f} {costs[1]:12.2f} {split_build:12.2f} {copy_build:8.2f}")


if __name__ == "__main__":
    main()
