"""A broadcast chat, as in websockets' broadcast guide, on tether.

Changes from the websockets program (see docs/from-websockets.md): the import line only.
``broadcast()`` is synchronous in both libraries and returns, in tether, how many
connections it wrote to.

Run: ``python examples/chat_broadcast.py [port]``, then connect several clients
(``tether connect ws://127.0.0.1:8765``): each message goes to everyone.
"""

import asyncio
import sys

# websockets: from websockets.asyncio.server import broadcast, serve
from tether import broadcast, serve

CLIENTS = set()


async def handler(websocket):
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.remove(websocket)


async def main(port=8765, ready=None, stop=None):
    async with serve(handler, "127.0.0.1", port) as server:
        if ready is not None:
            ready(server)
        await (stop if stop is not None else server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
