"""A client that reconnects whenever the connection drops, as in websockets' client guide
(``async for websocket in connect(uri)``), on tether.

Changes from the websockets program (see docs/from-websockets.md): the import lines only.

Run: ``python examples/reconnecting_client.py ws://127.0.0.1:8765`` against any echo server,
then restart the server: the client connects again and goes on.
"""

import asyncio
import sys

# websockets: from websockets.asyncio.client import connect
#             from websockets.exceptions import ConnectionClosed
from tether import ConnectionClosed, connect


async def consume(uri, on_message, rounds=None):
    """Connect, send "hello", handle every message; connect again when the connection
    drops. Stops after ``rounds`` connections (``None``: never)."""
    count = 0
    async for websocket in connect(uri):
        count += 1
        try:
            await websocket.send("hello")
            async for message in websocket:
                on_message(message)
        except ConnectionClosed:
            pass
        if rounds is not None and count >= rounds:
            return count
    return count


if __name__ == "__main__":
    asyncio.run(consume(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765", print))
