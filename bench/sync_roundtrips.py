"""A fixed number of round trips with one threading client, for instruction counts.

    python bench/sync_roundtrips.py PORT CLIENT N SIZE

CLIENT is ``tether-sync``, ``websockets-sync`` or ``websocket-client``; the client connects to
an echo server on 127.0.0.1:PORT (``python bench/echo_servers.py tether`` prints one), does N
round trips of SIZE random bytes, and closes. Under valgrind the difference between N=2000 and
N=0 divided by 2000 is the user-space instructions per round trip, every thread included (see
bench/README.md); unlike a timing, it does not move with the load of a shared machine::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/sync_roundtrips.py PORT tether-sync 2000 16
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    port, client, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    uri = f"ws://127.0.0.1:{port}/"
    message = os.urandom(size)
    with contextlib.ExitStack() as stack:
        if client == "tether-sync":
            from tether.sync import connect

            ws = stack.enter_context(connect(uri, compression=None, ping_interval=None))
            send, recv = ws.send, ws.recv
        elif client == "websockets-sync":
            from websockets.sync.client import connect as ws_connect

            ws = stack.enter_context(ws_connect(uri, compression=None, max_size=None))
            send, recv = ws.send, ws.recv
        else:
            import websocket

            ws = websocket.create_connection(uri)
            stack.callback(ws.close)
            send, recv = ws.send_binary, ws.recv
        for _ in range(count):
            send(message)
            recv()


if __name__ == "__main__":
    main()
