"""Stress the hand-off of the read role in tether.sync (not part of ``make test``: slow).

Runs echo exchanges (fresh connections, several messages each, with pauses around
IDLE_READ_DELAY so that the background threads take the read role and give it back) against an
echo server in a subprocess, while ``--burn`` processes spin on the CPU, and counts the replies
that did not come within ``--timeout`` seconds (a lost wakeup).

    python bench/sync_stress.py --pair sync-sync --connections 2000 --burn 4
    python bench/sync_stress.py --pair asyncio-sync      # asyncio client, sync server
    python bench/sync_stress.py --pair sync-asyncio      # sync client, asyncio server

Options ``--ping-interval`` (both sides; small values exercise the reads that time out on a
keepalive deadline) and ``--workers`` (client connections at once).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")

SERVER = """
import sys
sys.path.insert(0, {src!r})
ping = {ping!r}
if {kind!r} == "sync":
    from tether.sync import serve

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, ping_interval=ping, compression=None) as server:
        print(server.port_number, flush=True)
        server.serve_forever()
else:
    import asyncio
    from tether.asyncio import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", 0, ping_interval=ping, compression=None) as server:
            print(server.port_number, flush=True)
            await server.serve_forever()

    asyncio.run(main())
"""

PAUSES = (0.0, 0.0, 0.045, 0.05, 0.055, 0.07)  # around IDLE_READ_DELAY (0.05 s)


def sync_client(port: int, args: argparse.Namespace, rng: random.Random) -> tuple[int, int]:
    from tether.sync import connect

    done = lost = 0
    with connect(
        f"ws://127.0.0.1:{port}/", ping_interval=args.ping_interval, compression=None
    ) as ws:
        for i in range(args.messages):
            if i and args.pauses:
                time.sleep(rng.choice(PAUSES))
            message = f"m{i}"
            ws.send(message)
            try:
                reply = ws.recv(timeout=args.timeout)
            except TimeoutError:
                lost += 1
                print(f"LOST: sync client, message {i}", flush=True)
                return done, lost
            assert reply == message, (reply, message)
            done += 1
    return done, lost


async def async_client(port: int, args: argparse.Namespace, rng: random.Random) -> tuple[int, int]:
    from tether.asyncio import connect

    done = lost = 0
    async with connect(
        f"ws://127.0.0.1:{port}/", ping_interval=args.ping_interval, compression=None
    ) as ws:
        for i in range(args.messages):
            if i and args.pauses:
                await asyncio.sleep(rng.choice(PAUSES))
            message = f"m{i}"
            await ws.send(message)
            try:
                reply = await ws.recv(timeout=args.timeout)
            except TimeoutError:
                lost += 1
                print(f"LOST: asyncio client, message {i}", flush=True)
                return done, lost
            assert reply == message, (reply, message)
            done += 1
    return done, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pair",
        choices=["sync-sync", "asyncio-sync", "sync-asyncio"],
        default="sync-sync",
        help="client-server",
    )
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--burn", type=int, default=2, help="CPU-spinning processes")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--no-pauses", dest="pauses", action="store_false")
    args = parser.parse_args()
    sys.path.insert(0, SRC)

    client_kind, server_kind = args.pair.split("-")
    burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.burn)]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(src=SRC, kind=server_kind, ping=args.ping_interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        totals = [0, 0, 0]  # exchanges, lost, connections
        lock = threading.Lock()
        start = time.monotonic()
        cpu = time.process_time()

        if client_kind == "sync":
            todo = iter(range(args.connections))

            def worker(seed: int) -> None:
                rng = random.Random(seed)
                while True:
                    with lock:
                        if next(todo, None) is None:
                            return
                    done, lost = sync_client(port, args, rng)
                    with lock:
                        totals[0] += done
                        totals[1] += lost
                        totals[2] += 1

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:

            async def run() -> None:
                remaining = iter(range(args.connections))

                async def worker(seed: int) -> None:
                    rng = random.Random(seed)
                    while next(remaining, None) is not None:
                        done, lost = await async_client(port, args, rng)
                        totals[0] += done
                        totals[1] += lost
                        totals[2] += 1

                await asyncio.gather(*(worker(n) for n in range(args.workers)))

            asyncio.run(run())
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu
        print(
            f"{args.pair}: {totals[2]} connections, {totals[0]} exchanges, {totals[1]} lost, "
            f"{elapsed:.1f} s, client CPU {cpu / max(totals[0], 1) * 1e6:.0f} us/exchange "
            f"(burn={args.burn}, ping_interval={args.ping_interval})"
        )
        sys.exit(1 if totals[1] else 0)
    finally:
        server.terminate()
        server.wait()
        for burner in burners:
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    main()
