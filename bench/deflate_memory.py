"""Memory per connection of permessage-deflate, by window size and zlib memLevel, and per preset.

One "connection" is a server-side :class:`PerMessageDeflate` that has inflated a few client
messages and compressed a few of its own, so it holds one compressor and one decompressor in
their steady state. For each setting we build many of them and divide:

- ``traced``: bytes allocated, from tracemalloc. CPython's zlib module allocates through
  ``PyMem_RawMalloc``, which tracemalloc traces; the first section checks that against zlib's
  own sizes (``formula``: deflate ``2**(w+2) + 2**(m+9) + ~6 KiB``, inflate ``2**w + ~7 KiB``).
- ``rss``: growth of the resident set, measured in a fresh child process without tracemalloc.
  It is lower than ``traced`` when zlib has not touched all it allocated yet (short messages
  never reach the far end of a large window).

The grid is for ``keep_zlib_objects=True`` (zlib's objects kept between messages); with the
default ``False`` a connection holds only the last window of data each way, which the presets
table shows.

For presets it also prints the peak while a message is processed (what is held only
transiently), the compression ratio on the sample messages and the time per message, server to
client (noisy on a loaded machine). The levels table backs the default compression level: CPU
time to compress (and, once per size, to inflate) 1 KiB and 64 KiB JSON-like texts (compare.py's,
32 different ones in turn, the server's way: 4 KiB window, memLevel 5, the window primed from
the previous messages), with each zlib installed, best of 5 runs. The last table backs the
default ``compress_threshold``: how much short messages shrink, with and without context
takeover.

Usage: ``python bench/deflate_memory.py [--connections N] [--full] [--only SECTIONS]``
(``--full``: every memLevel 1-9 instead of 1, 3, 5, 8, 9; SECTIONS: comma-separated among
presets, grid, levels, short). Linux only for ``rss`` (``/proc/self/statm``); "n/a" elsewhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
import zlib
from types import ModuleType

from compare import json_text

from tether.extensions import permessage_deflate
from tether.extensions.permessage_deflate import (
    PRESETS,
    ZLIB_BACKEND,
    ClientPerMessageDeflateFactory,
    DeflateSettings,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame

KIB = 1024


def sample_messages(count: int = 40, seed: int = 7) -> list[bytes]:
    """JSON events of 60-1500 bytes with repeated structure and random values."""
    rng = random.Random(seed)
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    symbols = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META"]
    messages = []
    for i in range(count):
        kind = rng.choice(["chat", "quote", "presence", "batch"])
        if kind == "chat":
            words = " ".join(
                rng.choice(["hello", "world", "the", "deploy", "is", "green", "ok"])
                for _ in range(rng.randint(3, 30))
            )
            event: object = {"type": "chat", "id": i, "from": rng.choice(users), "text": words}
        elif kind == "quote":
            event = {
                "type": "quote",
                "seq": i,
                "symbol": rng.choice(symbols),
                "bid": round(rng.uniform(10, 900), 2),
                "ask": round(rng.uniform(10, 900), 2),
                "ts": 1_700_000_000_000 + i * 37,
            }
        elif kind == "presence":
            event = {"type": "presence", "user": rng.choice(users), "online": rng.random() > 0.5}
        else:
            event = {
                "type": "batch",
                "seq": i,
                "quotes": [
                    {
                        "symbol": rng.choice(symbols),
                        "bid": round(rng.uniform(10, 900), 2),
                        "ask": round(rng.uniform(10, 900), 2),
                    }
                    for _ in range(rng.randint(5, 20))
                ],
            }
        messages.append(json.dumps(event).encode())
    return messages


def negotiate(settings: DeflateSettings) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A (server, client) pair agreed by tether's own factories with the same settings."""
    client_factory = ClientPerMessageDeflateFactory(settings)
    server_factory = ServerPerMessageDeflateFactory(settings)
    answer, server = server_factory.process_request_params(client_factory.get_request_params(), [])
    return server, client_factory.process_response_params(answer, [])


def settings_for(wbits: int, mem_level: int) -> DeflateSettings:
    return DeflateSettings(
        server_max_window_bits=wbits,
        client_max_window_bits=wbits,
        mem_level=mem_level,
        keep_zlib_objects=True,
    )


def client_frames(settings: DeflateSettings, messages: list[bytes]) -> list[Frame]:
    _, client = negotiate(settings)
    return [client.encode(Frame(Opcode.TEXT, message)) for message in messages]


def run_connection(
    settings: DeflateSettings, incoming: list[Frame], messages: list[bytes]
) -> PerMessageDeflate:
    server, _ = negotiate(settings)
    for frame in incoming:
        server.decode(frame, max_size=2**20)
    for message in messages:
        server.encode(Frame(Opcode.TEXT, message))
    return server


def rss() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def traced_per_connection(settings: DeflateSettings, connections: int) -> tuple[float, float]:
    """(bytes held, peak bytes) per connection, from tracemalloc. The process-wide hot
    compressors (``HOT_COMPRESSORS``, at most 32 whatever the number of connections) are turned
    off here, so that the figure is what each connection holds."""
    hot = permessage_deflate.HOT_COMPRESSORS
    permessage_deflate.HOT_COMPRESSORS = 0
    try:
        return _traced_per_connection(settings, connections)
    finally:
        permessage_deflate.HOT_COMPRESSORS = hot


def _traced_per_connection(settings: DeflateSettings, connections: int) -> tuple[float, float]:
    messages = sample_messages()
    incoming = client_frames(settings, messages[:8])
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = [run_connection(settings, incoming, messages[:8]) for _ in range(connections)]
    gc.collect()
    current = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.reset_peak()
    run_connection(settings, incoming, messages[:8])
    peak = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return current / connections, peak


def rss_per_connection(wbits: int, mem_level: int, connections: int) -> float | None:
    """Resident set growth per connection, measured in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(wbits), str(mem_level), str(connections)],
        capture_output=True,
        text=True,
        check=True,
    )
    value = result.stdout.strip()
    return None if value == "n/a" else float(value)


def child(wbits: int, mem_level: int, connections: int) -> None:
    settings = settings_for(wbits, mem_level)
    messages = sample_messages()
    incoming = client_frames(settings, messages[:8])
    run_connection(settings, incoming, messages[:8])  # warm up imports and caches
    gc.collect()
    before = rss()
    held = [run_connection(settings, incoming, messages[:8]) for _ in range(connections)]
    gc.collect()
    after = rss()
    print("n/a" if before is None or after is None else (after - before) / len(held))


def formula(wbits: int, mem_level: int) -> int:
    """zlib 1.2.x allocation sizes: deflate window, prev, head, pending buffer; inflate window."""
    deflate = 2 * 2**wbits + 2 * 2**wbits + 2 * 2 ** (mem_level + 7) + 4 * 2 ** (mem_level + 6)
    inflate = 2**wbits
    return deflate + inflate


def check_tracemalloc_sees_zlib() -> None:
    print("tracemalloc sees zlib: a bare compressobj(wbits=-15, memLevel=8) + decompressobj")
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15, 8)
    decoder = zlib.decompressobj(-15)
    decoder.decompress(encoder.compress(b"x" * 100) + encoder.flush(zlib.Z_SYNC_FLUSH))
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    expected = formula(15, 8)
    print(
        f"  traced {traced / KIB:.1f} KiB; zlib buffers alone {expected / KIB:.1f} KiB; "
        f"difference {(traced - expected) / KIB:.1f} KiB (the two state structs)\n"
    )


def kib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / KIB:.0f}"


def grid(connections: int, full: bool) -> None:
    mem_levels = list(range(1, 10)) if full else [1, 3, 5, 8, 9]
    print(
        "Per connection, context takeover both ways, zlib objects kept, KiB: traced / rss (touched)"
    )
    print("wbits " + "".join(f"{'m=' + str(m):>14}" for m in mem_levels))
    for wbits in range(9, 16):
        cells = []
        for mem_level in mem_levels:
            traced, _ = traced_per_connection(settings_for(wbits, mem_level), connections)
            resident = rss_per_connection(wbits, mem_level, connections)
            cells.append(f"{kib(traced)} / {kib(resident)}")
        print(f"{wbits:>5} " + "".join(f"{cell:>14}" for cell in cells))
    print()


def presets(connections: int) -> None:
    messages = sample_messages()
    original = sum(len(message) for message in messages)
    print(
        f"Presets (sample: {len(messages)} JSON messages, {original} bytes)\n"
        f"{'preset':<10}{'held KiB':>10}{'peak KiB':>10}{'ratio':>8}{'us/msg':>8}"
    )
    for name, settings in PRESETS.items():
        held, peak = traced_per_connection(settings, connections)
        server, client = negotiate(settings)
        start = time.perf_counter()
        rounds = 20
        sent = 0
        for _ in range(rounds):
            server, client = negotiate(settings)
            for message in messages:
                frame = server.encode(Frame(Opcode.TEXT, message))
                sent += len(frame.data)
                assert client.decode(frame).data == message
        elapsed = (time.perf_counter() - start) / (rounds * len(messages)) * 1e6
        ratio = sent / (rounds * original)
        print(f"{name:<10}{kib(held):>10}{kib(peak):>10}{ratio:>8.3f}{elapsed:>8.1f}")
    print()


def backends() -> list[tuple[str, ModuleType]]:
    found = [("zlib", zlib)]
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        found.append(("zlib-ng", zlib_ng))
    return found


def compress_cost(
    module: ModuleType, texts: list[bytes], level: int, rounds: int
) -> tuple[float, float]:
    """(CPU us per message, ratio) compressing texts in turn through a PerMessageDeflate with
    the default preset at ``level``, as a server answering a client does."""
    saved = permessage_deflate._zlib
    permessage_deflate._zlib = module
    try:
        settings = DeflateSettings(compression_level=level)
        best = float("inf")
        ratio = 0.0
        for _ in range(5):
            server, _ = negotiate(settings)
            sent = 0
            start = time.process_time()
            for _ in range(rounds):
                for text in texts:
                    sent += len(server.encode(Frame(Opcode.TEXT, text)).data)
            elapsed = time.process_time() - start
            best = min(best, elapsed / (rounds * len(texts)) * 1e6)
            ratio = sent / (rounds * sum(len(text) for text in texts))
        return best, ratio
    finally:
        permessage_deflate._zlib = saved


def inflate_cost(module: ModuleType, texts: list[bytes], rounds: int) -> float:
    """CPU us per message inflating texts each compressed alone with a 32 KiB window (what the
    compare.py client sends), with a new inflater per message."""
    payloads = []
    for text in texts:
        encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
        payloads.append(encoder.compress(text) + encoder.flush(zlib.Z_SYNC_FLUSH))
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(rounds):
            for payload in payloads:
                module.decompressobj(-15).decompress(payload, 2**21)
        best = min(best, (time.process_time() - start) / (rounds * len(payloads)) * 1e6)
    return best


def levels() -> None:
    print(
        "Levels: CPU us per message to compress (ratio), 4 KiB window, memLevel 5, window\n"
        "primed from earlier messages; 32 different JSON-like texts; best of 5"
    )
    sizes = {1024: 100, 65536: 2}
    rngs = {size: random.Random(size) for size in sizes}
    corpus = {size: [json_text(size, rngs[size]) for _ in range(32)] for size in sizes}
    print(f"{'zlib':<9}{'level':>6}{'1 KiB':>18}{'64 KiB':>18}")
    for name, module in backends():
        for level in (1, 2, 3, 6):
            cells = []
            for size, rounds in sizes.items():
                us, ratio = compress_cost(module, corpus[size], level, rounds)
                cells.append(f"{us:8.1f} ({ratio:.3f})")
            print(f"{name:<9}{level:>6}" + "".join(f"{cell:>18}" for cell in cells))
        inflated = [f"{inflate_cost(module, corpus[s], r):8.1f}" for s, r in sizes.items()]
        print(f"{name:<9}{'inflate':>6}" + "".join(f"{cell:>18}" for cell in inflated))
    print()


def small_messages() -> None:
    messages = sample_messages(400)
    print("Short messages (sample events cut to size), 12-bit window, memLevel 5, level 6")
    print(f"{'bytes':>6}{'ratio, takeover':>18}{'saved':>7}{'ratio, none':>14}{'saved':>7}")
    for size in (8, 16, 24, 32, 48, 64, 128, 256):
        cut = [message[:size] for message in messages]
        cells = []
        for takeover in (True, False):
            sent = 0
            encoder = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
            for message in cut:
                if not takeover:
                    encoder = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
                sent += len(encoder.compress(message) + encoder.flush(zlib.Z_SYNC_FLUSH)) - 4
            total = sum(len(message) for message in cut)
            cells.append(f"{sent / total:>{18 if takeover else 14}.2f}")
            cells.append(f"{(total - sent) / len(cut):>7.1f}")
        print(f"{size:>6}" + "".join(cells))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--full", action="store_true", help="every memLevel from 1 to 9")
    parser.add_argument("--only", default="presets,grid,levels,short")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sections = args.only.split(",")
    print(f"{ZLIB_BACKEND} (the default here), Python {sys.version.split()[0]}\n")
    if "presets" in sections:
        check_tracemalloc_sees_zlib()
        presets(args.connections)
    if "grid" in sections:
        grid(args.connections, args.full)
    if "levels" in sections:
        levels()
    if "short" in sections:
        small_messages()


if __name__ == "__main__":
    main()
