"""Comparison baseline: the same echo server as server.py, built on websockets' asyncio API.

    python compliance/peer_websockets_server.py [PORT]

    python compliance/run.py --mode server --agent websockets \\
        --server-cmd "{python} compliance/peer_websockets_server.py {port}"

Serves on 127.0.0.1 (PORT defaults to 9002) with permessage-deflate and echoes each message back
with its type. Used to check the harness independently of tether and to compare results.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HOST = "127.0.0.1"
DEFAULT_PORT = 9002

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with serve(
        echo, HOST, port, compression="deflate", max_size=MAX_SIZE, ping_interval=None
    ) as server:
        print(f"websockets echo server listening on ws://{HOST}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT))
