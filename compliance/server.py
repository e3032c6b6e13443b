"""tether's echo server for the Autobahn Testsuite's fuzzingclient (run.py --mode server).

    python compliance/server.py [PORT]

Serves on 127.0.0.1 (PORT defaults to 9002) with permessage-deflate on and echoes every message
back as it came: text as text, binary as binary. It runs until it is terminated.

The limits are raised above tether's defaults because the suite's section 9 sends messages of up
to 16 MiB (our default largest message is 1 MiB); the rest of the suite stays far below that.
Keepalive pings are off: an unsolicited ping in the middle of a case would be recorded by the
suite as an unexpected frame.
"""

from __future__ import annotations

import asyncio
import sys

from tether import ConnectionClosed, Limits, ServerConnection, serve

HOST = "127.0.0.1"
DEFAULT_PORT = 9002

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16

LIMITS = Limits(max_message_size=MAX_SIZE, max_frame_size=MAX_SIZE, max_queue=2 * MAX_SIZE)


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        # The suite closes abnormally on purpose in many cases; that is not our error.
        pass


async def main(port: int) -> None:
    async with serve(
        echo, HOST, port, compression="deflate", limits=LIMITS, ping_interval=None
    ) as server:
        print(f"tether echo server listening on ws://{HOST}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT))
