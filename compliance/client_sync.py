"""tether's threading client (``tether.sync``) as the Autobahn Testsuite's testee client.

    python compliance/client_sync.py [URI [AGENT]]

The same protocol as client.py (ask ``/getCaseCount``, echo every message of each
``/runCase``, then ``/updateReports``), with ``tether.sync.connect`` and plain loops instead of
asyncio. run.py starts it with ``--client-cmd`` (``make conformance-sync``); which sections it
runs, and why, is in compliance/README.md.

Limits are raised for section 9 and keepalive is off, as in client.py. Each case gets a time
limit: a watchdog closes the connection when it expires, and the suite then records the case.
"""

from __future__ import annotations

import sys
import threading
from urllib.parse import quote

from tether import ConnectionClosed, Limits, TetherError
from tether.sync import ClientConnection, connect

DEFAULT_URI = "ws://127.0.0.1:9001"
DEFAULT_AGENT = "tether-sync"

#: Section 9 sends messages and frames of up to 16 MiB; leave some room above that.
MAX_SIZE = 16 * 2**20 + 2**16

LIMITS = Limits(max_message_size=MAX_SIZE, max_frame_size=MAX_SIZE, max_queue=2 * MAX_SIZE)

#: Seconds one case may take; the slowest non-performance cases take a few seconds.
CASE_TIMEOUT = 120


def open_ws(uri: str) -> ClientConnection:
    return connect(uri, compression="deflate", limits=LIMITS, ping_interval=None)


def run_case(base: str, case: int, agent: str) -> None:
    uri = f"{base}/runCase?case={case}&agent={agent}"
    try:
        ws = open_ws(uri)
    except (TetherError, OSError):
        return
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        ws.transport.abort()

    watchdog = threading.Timer(CASE_TIMEOUT, expire)
    watchdog.start()
    try:
        for message in ws:
            ws.send(message)
    except (ConnectionClosed, TetherError, OSError):
        # Many cases end with a protocol error on purpose; the suite judges the outcome.
        pass
    finally:
        watchdog.cancel()
        ws.close()
        if expired.is_set():
            print(f"case {case}: no end after {CASE_TIMEOUT} s, moving on", file=sys.stderr)


def main(base: str, agent: str) -> None:
    agent = quote(agent, safe="")
    with open_ws(f"{base}/getCaseCount") as ws:
        count = int(ws.recv())
    print(f"{count} cases to run against {base}", flush=True)
    for case in range(1, count + 1):
        run_case(base, case, agent)
    with open_ws(f"{base}/updateReports?agent={agent}") as ws:
        # The suite writes its reports, then closes.
        for _ in ws:
            pass
    print("reports updated", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else DEFAULT_URI, args[1] if len(args) > 1 else DEFAULT_AGENT)
