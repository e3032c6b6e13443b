"""The connection API a websockets user reaches for: recv(timeout=, decode=), send(text=),
ping() and pong() as coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from helpers.aio import run as aio_run
from tether import ServerConnection, connect, serve

pytestmark = pytest.mark.timeout(30)


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 10)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def uri(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port_number}/"


def test_recv_timeout_raises_and_leaves_the_connection_usable() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            with pytest.raises(TimeoutError):
                await ws.recv(timeout=0.05)
            await ws.send("after the timeout")
            assert await ws.recv(timeout=5) == "after the timeout"
            # A fragmented message arriving around a timeout is not lost either.
            await ws.send(["a", "b", "c"])
            assert await ws.recv(timeout=5) == "abc"

    run(main())


def test_recv_timeout_while_a_message_is_half_received() -> None:
    release = asyncio.Event

    async def slow_fragments(ws: ServerConnection) -> None:
        async def parts() -> Any:
            yield "first "
            await gate.wait()
            yield "second"

        await ws.send(parts())
        await ws.wait_closed()

    gate: asyncio.Event

    async def main() -> None:
        nonlocal gate
        gate = release()
        async with serve(slow_fragments, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            with pytest.raises(TimeoutError):
                await ws.recv(timeout=0.1)  # the first fragment came, not the last
            gate.set()
            assert await ws.recv(timeout=5) == "first second"

    run(main())


def test_recv_decode_option() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            await ws.send("héllo")
            assert await ws.recv(decode=False) == "héllo".encode()
            await ws.send("héllo".encode())
            assert await ws.recv(decode=True) == "héllo"
            await ws.send("as is")
            assert await ws.recv(decode=True) == "as is"
            await ws.send(b"\xff")
            assert await ws.recv(decode=False) == b"\xff"
            await ws.send(["é", "è"])
            pieces = [piece async for piece in ws.recv_streaming(decode=False)]
            assert b"".join(pieces) == "éè".encode()  # type: ignore[arg-type]
            await ws.send(b"\xc3\xa9")
            pieces = [piece async for piece in ws.recv_streaming(decode=True)]
            assert pieces == ["é"]

    run(main())


def test_send_text_option() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            await ws.send("ünïcode".encode(), text=True)  # bytes sent as a text frame
            assert await ws.recv() == "ünïcode"
            await ws.send("binary", text=False)  # str sent as a binary frame
            assert await ws.recv() == b"binary"
            await ws.send([b"fr", b"ag"], text=True)
            assert await ws.recv() == "frag"
            await ws.send(["fr", "ag"], text=False)
            assert await ws.recv() == b"frag"

    run(main())


def test_ping_and_pong_are_both_coroutines() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            pong_waiter = await ws.ping()  # sent; the future resolves when the pong comes
            assert isinstance(pong_waiter, asyncio.Future)
            latency = await pong_waiter
            assert latency >= 0 and ws.latency == latency
            assert await (await ws.ping("text payload")) >= 0
            await ws.pong(b"heartbeat")  # unsolicited: nothing comes back
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(main())


def test_recv_streaming_decodes_a_character_split_across_fragments() -> None:
    async def split(ws: ServerConnection) -> None:
        await ws.send([b"\xc3", b"\xa9!"])  # "é!" as binary, cut inside the "é"
        await ws.wait_closed()

    async def main() -> None:
        async with serve(split, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            pieces = [piece async for piece in ws.recv_streaming(decode=True)]
            assert pieces == ["", "é!"]

    run(main())
