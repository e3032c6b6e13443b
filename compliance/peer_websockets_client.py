"""Comparison baseline: the same testee client as client.py, built on websockets' asyncio API.

    python compliance/peer_websockets_client.py [URI [AGENT]]

    python compliance/run.py --mode client --agent websockets \\
        --client-cmd "{python} compliance/peer_websockets_client.py {url} {agent}"

URI is the fuzzingserver (default ws://127.0.0.1:9001), AGENT the name results are filed under
(default "websockets"). Runs every case by echoing messages until the suite closes, then asks
the suite to write its reports.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

DEFAULT_URI = "ws://127.0.0.1:9001"
DEFAULT_AGENT = "websockets"

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16

#: Seconds one case may take.
CASE_TIMEOUT = 120


def open_ws(uri: str) -> connect:
    return connect(uri, compression="deflate", max_size=MAX_SIZE, ping_interval=None)


async def echo(ws: ClientConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def run_case(base: str, case: int, agent: str) -> None:
    uri = f"{base}/runCase?case={case}&agent={agent}"
    try:
        async with asyncio.timeout(CASE_TIMEOUT), open_ws(uri) as ws:
            await echo(ws)
    except (WebSocketException, OSError):
        pass
    except TimeoutError:
        print(f"case {case}: no end after {CASE_TIMEOUT} s, moving on", file=sys.stderr)


async def main(base: str, agent: str) -> None:
    agent = quote(agent, safe="")
    async with open_ws(f"{base}/getCaseCount") as ws:
        count = int(await ws.recv())
    print(f"{count} cases to run against {base}", flush=True)
    for case in range(1, count + 1):
        await run_case(base, case, agent)
    async with open_ws(f"{base}/updateReports?agent={agent}") as ws:
        async for _ in ws:
            pass
    print("reports updated", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    asyncio.run(main(args[0] if args else DEFAULT_URI, args[1] if len(args) > 1 else DEFAULT_AGENT))
