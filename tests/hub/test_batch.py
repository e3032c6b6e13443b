"""Messages read from the backend together: each connection is written once per run of them,
in order, with signals in their place (real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.aio import run
from tether import ServerConnection, connect, serve
from tether.hub import Hub, Message
from tether.hub.core import _RUN_BYTES

pytestmark = pytest.mark.timeout(30)


class Writes:
    """Counts the transport writes of every server connection after it subscribed."""

    def __init__(self) -> None:
        self.counts: list[int] = []


@contextlib.asynccontextmanager
async def server(hub: Hub, writes: Writes, compression: Any = None) -> AsyncIterator[int]:
    async def handler(ws: ServerConnection) -> None:
        index = len(writes.counts)
        writes.counts.append(0)
        transport: Any = ws.transport
        write = transport.write

        def counted(data: bytes) -> None:
            writes.counts[index] += 1
            write(data)

        transport.write = counted
        await hub.subscribe(ws, "room")
        try:
            async for _ in ws:
                pass
        finally:
            hub.unsubscribe(ws)

    async with hub, serve(handler, "127.0.0.1", 0, compression=compression) as srv:
        yield srv.port_number


async def receive(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.recv()) for _ in range(count)]


def messages(epoch: str, offsets: range | list[int], size: int = 0) -> list[Message]:
    return [Message("room", i, epoch, f"m{i}".ljust(size, ".")) for i in offsets]


async def subscribed(hub: Hub, count: int) -> str:
    """Wait for ``count`` subscribers; return the channel's epoch."""
    while hub.subscribers("room") < count:
        await asyncio.sleep(0.01)
    return (await hub.backend.history("room", 0, None, 0)).epoch


@pytest.mark.parametrize("slow", ["skip", "drop", "wait"])
def test_a_batch_is_one_write_per_connection_in_order(slow: str) -> None:
    async def main() -> None:
        hub = Hub(slow=slow)
        writes = Writes()
        async with server(hub, writes) as port:
            url = f"ws://127.0.0.1:{port}/"
            async with connect(url, compression=None) as a, connect(url, compression=None) as b:
                epoch = await subscribed(hub, 2)
                await hub.deliver_many(messages(epoch, range(1, 101)))
                for ws in (a, b):
                    got = await receive(ws, 100)
                    assert [g["offset"] for g in got] == list(range(1, 101))
                    assert [g["data"] for g in got] == [f"m{i}" for i in range(1, 101)]
                assert writes.counts == [1, 1]
                assert hub.delivered == 200

    run(main())


def test_a_gap_in_a_batch_signals_between_the_runs() -> None:
    async def main() -> None:
        hub = Hub()
        writes = Writes()
        async with server(hub, writes) as port:
            async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                epoch = await subscribed(hub, 1)
                await hub.deliver_many(messages(epoch, [1, 2, 5, 6]))
                got = await receive(ws, 5)
                assert [(g["type"], g["offset"]) for g in got] == [
                    ("pub", 1),
                    ("pub", 2),
                    ("unrecoverable", 4),
                    ("pub", 5),
                    ("pub", 6),
                ]
                # Messages already delivered (a read repeated after a reconnection): skipped.
                await hub.deliver_many(messages(epoch, [5, 6, 7]))
                (last,) = await receive(ws, 1)
                assert (last["offset"], last["data"]) == (7, "m7")

    run(main())


def test_runs_are_bounded_in_bytes() -> None:
    async def main() -> None:
        hub = Hub(max_message_size=_RUN_BYTES)
        writes = Writes()
        size = _RUN_BYTES // 2 - 1000  # two frames fit in a run, three do not
        async with server(hub, writes) as port:
            async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                epoch = await subscribed(hub, 1)
                await hub.deliver_many(messages(epoch, range(1, 4), size))
                got = await receive(ws, 3)
                assert [g["offset"] for g in got] == [1, 2, 3]
                assert writes.counts == [2]

    run(main())


def test_connections_that_compress_with_context_get_each_message_framed_for_them() -> None:
    async def main() -> None:
        hub = Hub()
        writes = Writes()
        async with server(hub, writes, compression="deflate") as port:
            url = f"ws://127.0.0.1:{port}/"
            async with connect(url) as deflating, connect(url, compression=None) as plain:
                epoch = await subscribed(hub, 2)
                batch = messages(epoch, range(1, 21), 300)
                await hub.deliver_many(batch)
                for ws in (deflating, plain):
                    got = await receive(ws, 20)
                    assert [g["data"] for g in got] == [m.data for m in batch]
                assert deflating.protocol.extensions  # it did compress
                assert sorted(writes.counts) == [1, 20]

    run(main())
