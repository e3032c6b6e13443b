"""tether's threading server (``tether.sync``) as the Autobahn Testsuite's testee server.

    python compliance/server_sync.py [PORT]

The same echo server as server.py (127.0.0.1, PORT 9002 by default, permessage-deflate, limits
raised for section 9, no keepalive pings), on threads: run it with
``run.py --mode server --agent tether-sync-server --server-cmd '{python}
compliance/server_sync.py {port}'``. It stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import signal
import sys

from tether import ConnectionClosed, Limits
from tether.sync import ServerConnection, serve

HOST = "127.0.0.1"
DEFAULT_PORT = 9002

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16

LIMITS = Limits(max_message_size=MAX_SIZE, max_frame_size=MAX_SIZE, max_queue=2 * MAX_SIZE)


def echo(ws: ServerConnection) -> None:
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        # The suite closes abnormally on purpose in many cases; that is not our error.
        pass


def main(port: int) -> None:
    with serve(
        echo, HOST, port, compression="deflate", limits=LIMITS, ping_interval=None
    ) as server:
        signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
        print(f"tether.sync echo server listening on ws://{HOST}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT)
