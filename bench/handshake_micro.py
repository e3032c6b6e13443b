"""Per-connection Python cost of tether's sans-I/O server: handshake and close, no sockets.

Each round creates a :class:`~tether.sansio.server.ServerProtocol` (as the asyncio server
does for every accepted connection), feeds it a browser-like upgrade request, accepts it,
collects the 101, then feeds a masked close frame and collects the close answer: everything
tether's core does to open and close one connection, without the asyncio layer (whose share
the end-to-end profile in bench/README.md gives).

Usage::

    python bench/handshake_micro.py [--deflate] [--tether-src DIR]      # us per connection
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/handshake_micro.py --fixed 2000                     # and --fixed 0

``--deflate`` offers permessage-deflate and the server accepts it (tether's default preset).
``--fixed N`` runs exactly N connections and prints nothing, for instruction counts (the
difference of two runs divided by N).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _setup_path() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tether-src")
    known, _ = parser.parse_known_args()
    src = known.tether_src or os.environ.get("TETHER_BENCH_SRC")
    sys.path.insert(0, src or str(Path(__file__).resolve().parent.parent / "src"))


_setup_path()

from tether.extensions.permessage_deflate import ServerPerMessageDeflateFactory  # noqa: E402
from tether.sansio.server import ServerProtocol  # noqa: E402

#: What Chromium sends, give or take the cookie.
REQUEST = (
    "GET /chat HTTP/1.1\r\n"
    "Host: 127.0.0.1:8765\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: http://127.0.0.1:8765\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "{extensions}"
    "\r\n"
)
EXTENSIONS = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
#: A masked close frame with code 1000 (key 01 02 03 04).
CLOSE = bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2])


def one_connection(request: bytes, deflate: bool) -> None:
    extensions = [ServerPerMessageDeflateFactory()] if deflate else None
    server = ServerProtocol(extensions=extensions)
    server.receive_data(request)
    for event in server.events_received():
        server.send_response(server.accept(event))  # type: ignore[arg-type]
    head = b"".join(server.data_to_send())
    assert head.startswith(b"HTTP/1.1 101"), head
    server.receive_data(CLOSE)
    server.events_received()
    server.data_to_send()
    server.receive_eof()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tether-src", help="import tether from DIR instead of ./src")
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate")
    parser.add_argument("--fixed", type=int, metavar="N", help="exactly N connections, silent")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds, roughly")
    args = parser.parse_args()
    request = REQUEST.format(extensions=EXTENSIONS if args.deflate else "").encode()
    if args.fixed is not None:
        one_connection(request, args.deflate)  # imports and caches: same in both runs
        for _ in range(args.fixed):
            one_connection(request, args.deflate)
        return
    count, best = 200, float("inf")
    for _ in range(15):
        start = time.process_time()
        for _ in range(count):
            one_connection(request, args.deflate)
        elapsed = time.process_time() - start
        best = min(best, elapsed / count)
        count = max(50, int(count * args.budget / 15 / max(elapsed, 1e-6)))
    print(f"{best * 1e6:.1f} us per connection (handshake + close, sans-I/O server)")


if __name__ == "__main__":
    main()
