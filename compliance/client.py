"""tether's testee client for the Autobahn Testsuite's fuzzingserver (run.py --mode client).

    python compliance/client.py [URI [AGENT]]

URI is the fuzzingserver (default ws://127.0.0.1:9001), AGENT the name under which results are
filed (default "tether"). The client asks for the number of cases (``/getCaseCount``), runs
each case (``/runCase?case=N&agent=AGENT``) by echoing every message back until the suite
closes the connection, then asks the suite to write its reports (``/updateReports``).

Limits are raised for section 9 (messages of up to 16 MiB) and keepalive is off, as in
server.py. Each case has a time limit so that one stuck case cannot stall the whole run; the
suite then records that case as failed.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import quote

from tether import ClientConnection, ConnectionClosed, Limits, TetherError, connect

DEFAULT_URI = "ws://127.0.0.1:9001"
DEFAULT_AGENT = "tether"

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16

LIMITS = Limits(max_message_size=MAX_SIZE, max_frame_size=MAX_SIZE, max_queue=2 * MAX_SIZE)

#: Seconds one case may take; the slowest non-performance cases take a few seconds.
CASE_TIMEOUT = 120


def open_ws(uri: str) -> connect:
    return connect(uri, compression="deflate", limits=LIMITS, ping_interval=None)


async def echo(ws: ClientConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def run_case(base: str, case: int, agent: str) -> None:
    uri = f"{base}/runCase?case={case}&agent={agent}"
    try:
        async with asyncio.timeout(CASE_TIMEOUT), open_ws(uri) as ws:
            await echo(ws)
    except (ConnectionClosed, TetherError, OSError):
        # Many cases end with a protocol error on purpose; the suite judges the outcome.
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
        # The suite writes its reports, then closes.
        async for _ in ws:
            pass
    print("reports updated", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0] if args else DEFAULT_URI, args[1] if len(args) > 1 else DEFAULT_AGENT))
