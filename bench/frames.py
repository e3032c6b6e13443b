"""Frame codec throughput: tether's FrameParser / serialize_frame next to websockets' codec.

For each payload size (16 B, 1 KiB, 64 KiB, 1 MiB), masked (what a server parses and a client
sends) and unmasked (the other way), it measures:

- ``parse``: a stream of frames, pre-cut into 64 KiB pieces as a socket would deliver them, is
  fed to the parser and every frame is taken out. tether: ``FrameParser.feed`` +
  ``next_frame``; websockets: ``StreamReader.feed_data`` + the ``Frame.parse`` generator, driven
  the way its protocol drives it.
- ``serialize``: ready-made Frame objects are turned into bytes (with a fresh random key per
  frame when masked). tether: ``serialize_frame``; websockets: ``Frame.serialize``.

websockets masks with its C extension (``websockets.speedups``) when it is built, as it is in a
normal install; the ``ws-pure`` column is websockets with its pure-Python ``apply_mask``, for
comparison with tether, which is pure Python. Figures count payload bytes only (1 MB = 10**6
bytes). Each cell is the best of three timed rounds of at least ``--budget`` seconds of CPU
time (``time.process_time``), so that other processes on a busy machine do not count; pass
``--wall`` to time with ``time.perf_counter`` instead.

Usage: ``python bench/frames.py [--budget SECONDS] [--sizes 16,1024,...] [--wall]``
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import websockets.frames as ws_frames
import websockets.utils as ws_utils
from websockets.streams import StreamReader as WsStreamReader

from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame

SIZES = [16, 1024, 65536, 1 << 20]
CHUNK = 65536  # bytes per simulated socket read
STREAM_BYTES = 1 << 20  # payload bytes per parse/serialize round, at least one frame


def label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1024:
        return f"{size >> 10} KiB"
    return f"{size} B"


@contextlib.contextmanager
def websockets_pure_python_masking() -> Iterator[None]:
    """Make websockets use its pure-Python apply_mask instead of the C one."""
    namespace = vars(ws_frames)
    saved = namespace["apply_mask"]
    namespace["apply_mask"] = ws_utils.apply_mask
    try:
        yield
    finally:
        namespace["apply_mask"] = saved


def build(size: int, masked: bool) -> tuple[list[bytes], int]:
    """A stream of ``count`` binary frames of ``size`` bytes, cut into CHUNK-byte pieces."""
    count = max(1, STREAM_BYTES // size)
    payload = os.urandom(size)
    frame = Frame(Opcode.BINARY, payload)
    wire = b"".join(serialize_frame(frame, mask=masked) for _ in range(count))
    return [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)], count


# --- the four drivers: each processes one round and returns the number of frames -----------------


def tether_parse(chunks: list[bytes], masked: bool) -> int:
    parser = FrameParser(mask_expected=masked)
    feed = parser.feed
    next_frame = parser.next_frame
    count = 0
    for chunk in chunks:
        feed(chunk)
        while next_frame() is not None:
            count += 1
    return count


def websockets_parse(chunks: list[bytes], masked: bool) -> int:
    reader = WsStreamReader()
    parse = ws_frames.Frame.parse
    parser = parse(reader.read_exact, mask=masked, max_size=None)
    count = 0
    for chunk in chunks:
        reader.feed_data(chunk)
        while True:
            try:
                next(parser)
            except StopIteration:
                count += 1
                parser = parse(reader.read_exact, mask=masked, max_size=None)
            else:
                break
    return count


def tether_serialize(frames: list[Frame], masked: bool) -> int:
    for frame in frames:
        serialize_frame(frame, mask=masked)
    return len(frames)


def websockets_serialize(frames: list[ws_frames.Frame], masked: bool) -> int:
    for frame in frames:
        frame.serialize(mask=masked)
    return len(frames)


# --- measurement ---------------------------------------------------------------------------------


clock = time.process_time


def best_rate(run: Callable[[], int], budget: float) -> float:
    """Frames per second: the best of three rounds, each repeating ``run`` for ``budget`` s."""
    best = 0.0
    for _ in range(3):
        frames = 0
        start = clock()
        while True:
            frames += run()
            elapsed = clock() - start
            if elapsed >= budget:
                break
        best = max(best, frames / elapsed)
    return best


def check_same_frames(chunks: list[bytes], masked: bool) -> None:
    """Both codecs must read the same frames, or the comparison means nothing."""
    parser = FrameParser(mask_expected=masked)
    reader = WsStreamReader()
    for chunk in chunks:
        parser.feed(chunk)
        reader.feed_data(chunk)
    ours = parser.next_frame()
    theirs = ws_frames.Frame.parse(reader.read_exact, mask=masked)
    try:
        while True:
            next(theirs)
    except StopIteration as done:
        assert ours is not None and bytes(done.value.data) == ours.data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.12, help="seconds per timed round")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="payload sizes")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    global clock
    if args.wall:
        clock = time.perf_counter

    print(f"Python {sys.version.split()[0]}, websockets masking: {vars(ws_frames)['apply_mask']}")
    timer = "wall clock" if args.wall else "CPU time"
    print(f"chunks of {CHUNK} bytes; MB/s = 10**6 payload bytes per second of {timer}\n")
    head = f"{'':9} {'mask':6} {'size':>7} | {'tether':>21} | {'websockets':>21} | "
    head += f"{'ws-pure':>21} | {'tether/ws':>9}"
    print(head)
    print(f"{'':25}|{'frames/s      MB/s':>22} |{'frames/s      MB/s':>22} |" * 1, end="")
    print(f"{'frames/s      MB/s':>22} |")
    print("-" * len(head))

    def cell(rate: float, size: int) -> str:
        return f"{rate:>11,.0f} {rate * size / 1e6:>9,.1f}"

    for op in ("parse", "serialize"):
        for masked in (True, False):
            for size in sizes:
                chunks, count = build(size, masked)
                ours: Callable[[], int]
                theirs: Callable[[], int]
                if op == "parse":
                    check_same_frames(chunks, masked)
                    ours = functools.partial(tether_parse, chunks, masked)
                    theirs = functools.partial(websockets_parse, chunks, masked)
                else:
                    payload = os.urandom(size)
                    our_frames = [Frame(Opcode.BINARY, payload) for _ in range(count)]
                    their_frames = [
                        ws_frames.Frame(ws_frames.Opcode.BINARY, payload) for _ in range(count)
                    ]
                    ours = functools.partial(tether_serialize, our_frames, masked)
                    theirs = functools.partial(websockets_serialize, their_frames, masked)

                tether = best_rate(ours, args.budget)
                websockets = best_rate(theirs, args.budget)
                if masked:
                    with websockets_pure_python_masking():
                        pure = cell(best_rate(theirs, args.budget), size)
                else:
                    pure = f"{'(same)':>21}"
                line = f"{op:9} {'yes' if masked else 'no':6} {label(size):>7} | "
                line += f"{cell(tether, size)} | {cell(websockets, size)} | {pure} | "
                line += f"{tether / websockets:>8.2f}x"
                print(line, flush=True)


if __name__ == "__main__":
    main()
