"""Scaled-down adversarial runs (issue 16): a healthy peer is never blamed, nothing is lost or
held, and every input has a bound.

Each test plays one experiment against a real server on 127.0.0.1 with a raw-socket client (so
that the client does exactly what the experiment needs, and nothing more), and asserts close
codes, freed objects with the cyclic collector disabled, bounded memory (tracemalloc) and a
quiet log. The whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import socket
import struct
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from helpers.aio import run as aio_run
from tether import ConnectionClosed, Limits, ServerConnection, connect, serve
from tether import sync as tether_sync
from tether.asyncio import budget as budget_module
from tether.asyncio import connection as connection_module
from tether.asyncio.connection import HELD_END_TIMEOUT, YIELD_EVERY
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame

pytestmark = pytest.mark.timeout(30)


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 15)


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return serialize_frame(Frame(opcode, data, fin), mask=True)


class RawClient:
    """A WebSocket client on a bare socket: it sends exactly the bytes it is told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.parser = FrameParser(mask_expected=False)

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        await loop.sock_sendall(
            sock,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 1)
            assert chunk, "connection closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 ")
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def next_frame(self) -> Frame | None:
        """The next frame from the server; ``None`` at EOF."""
        while (frame := self.parser.next_frame()) is None:
            data = await self.loop.sock_recv(self.sock, 65536)
            if not data:
                return None
            self.parser.feed(data)
        return frame

    async def send_until_blocked(self, data: bytes, seconds: float) -> int:
        """Send as much of ``data`` as the server takes within ``seconds``; return how much."""
        view = memoryview(data)
        sent = 0
        try:
            async with asyncio.timeout(seconds):
                while sent < len(data):
                    try:
                        sent += self.sock.send(view[sent : sent + 65536])
                    except BlockingIOError:
                        await asyncio.sleep(0.005)
                    else:
                        await asyncio.sleep(0)
        except TimeoutError:
            pass
        return sent

    def reset(self) -> None:
        """Drop the connection with a TCP RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def close_code(frame: Frame) -> int:
    return int.from_bytes(frame.data[:2], "big")


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


def only_connection(server: Any) -> ServerConnection:
    (connection,) = server.connections
    return connection  # type: ignore[no-any-return]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- 1. a handler that only sends does not get a healthy client killed -----------------------


def test_send_only_handler_keeps_a_client_that_answers_pings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def ticker(ws: ServerConnection) -> None:
        while True:
            await ws.send("tick")
            await asyncio.sleep(0.02)

    async def main() -> None:
        async with serve(
            ticker, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.1, compression=None
        ) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"subscribe"))  # never read by the handler
            pings = 0
            async with asyncio.timeout(1.0):
                while pings < 10:  # ten keepalive rounds, each answered at once
                    frame = await client.next_frame()
                    assert frame is not None and frame.opcode is not Opcode.CLOSE, frame
                    if frame.opcode is Opcode.PING:
                        pings += 1
                        await client.send(masked(Opcode.PONG, frame.data))
            assert only_connection(server).state.name == "OPEN"
            client.close()

    with caplog.at_level(logging.INFO, logger="tether"):
        run(main())
    no_tracebacks(caplog)


def test_close_behind_an_unread_message_is_answered_with_1000(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hold timer far away: only wait_closed() can release the held close in time.
    monkeypatch.setattr(connection_module, "HELD_END_TIMEOUT", 60)

    async def never_reads(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        async with serve(never_reads, "127.0.0.1", 0, close_timeout=60, compression=None) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"unread") + masked(Opcode.CLOSE, b"\x03\xe8"))
            async with asyncio.timeout(0.5):  # at once: the handler waits in wait_closed()
                frame = await client.next_frame()
                assert frame is not None and frame.opcode is Opcode.CLOSE
                assert close_code(frame) == 1000
                assert await client.next_frame() is None  # and the server closes TCP
            client.close()

    run(main())


def test_close_behind_an_unread_message_is_answered_within_the_hold_timeout() -> None:
    """A handler that neither reads nor waits in wait_closed(): the close is answered after
    HELD_END_TIMEOUT (1 s), well within the peer's close timeout."""

    stop: asyncio.Event

    async def busy(ws: ServerConnection) -> None:
        await stop.wait()  # busy elsewhere: neither reads nor waits in wait_closed()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with serve(busy, "127.0.0.1", 0, compression=None) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"unread") + masked(Opcode.CLOSE, b"\x03\xe8"))
            await until(lambda: bool(server.connections))
            connection = only_connection(server)
            await until(lambda: connection.protocol.holding)  # held first
            async with asyncio.timeout(HELD_END_TIMEOUT + 2):  # then answered
                frame = await client.next_frame()
            assert frame is not None and close_code(frame) == 1000
            client.close()
            stop.set()

    run(main())


def test_echo_of_a_message_goes_out_before_the_answer_to_a_close_behind_it() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"one") + masked(Opcode.CLOSE, b"\x03\xe8"))
            frames = []
            while (frame := await client.next_frame()) is not None:
                frames.append(frame)
            assert [(f.opcode.name, f.data) for f in frames] == [
                ("TEXT", b"one"),
                ("CLOSE", b"\x03\xe8"),
            ]
            client.close()

    run(main())


# --- 2. closed connections are freed without the cyclic collector ----------------------------


@pytest.mark.parametrize("ending", ["close", "reset", "failure"])
def test_closed_connection_is_freed_without_the_cyclic_gc(ending: str) -> None:
    refs: list[weakref.ref[ServerConnection]] = []

    async def handler(ws: ServerConnection) -> None:
        refs.append(weakref.ref(ws))
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, ping_interval=0.05, compression=None) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"hello"))
            frame = await client.next_frame()
            assert frame is not None and frame.data == b"hello"
            # A message in progress: one whole fragment, and half of the next one but for a
            # normal close (whose frame must not be read as the rest of that fragment).
            await client.send(masked(Opcode.BINARY, b"x" * 1000, fin=False))
            if ending != "close":
                await client.send(masked(Opcode.CONT, b"y" * 1000)[:500])
            await asyncio.sleep(0.12)  # the keepalive task has pinged and waited
            connection = only_connection(server)
            if ending == "close":
                await client.send(masked(Opcode.CLOSE, b"\x03\xe8"))
                while await client.next_frame() is not None:
                    pass
                client.close()
            elif ending == "reset":
                client.reset()
            else:
                connection.fail(1011, "test")
                while await client.next_frame() is not None:
                    pass
                client.close()
            await connection.wait_closed()
            del connection
            await until(lambda: not server.connections)
            for _ in range(5):  # let the handler task and callbacks finish
                await asyncio.sleep(0)
        assert refs and refs[0]() is None, gc.get_referrers(refs[0]())

    gc.collect()
    gc.disable()
    try:
        run(main())
    finally:
        gc.enable()


def test_closed_client_connection_is_freed_without_the_cyclic_gc() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            ws = await connect(f"ws://127.0.0.1:{server.port_number}/", ping_interval=0.05)
            await ws.send("x")
            assert await ws.recv() == "x"
            await asyncio.sleep(0.12)  # the keepalive task has pinged and waited
            await ws.close()
            ref = weakref.ref(ws)
            del ws
            for _ in range(5):
                await asyncio.sleep(0)
            assert ref() is None

    gc.collect()
    gc.disable()
    try:
        run(main())
    finally:
        gc.enable()


# --- 3. send() waiting for the buffer to drain raises when the connection is lost -----------


def test_send_waiting_for_drain_raises_when_the_peer_resets() -> None:
    outcome: asyncio.Future[str]

    async def flood(ws: ServerConnection) -> None:
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            await ws.send(os.urandom(512 * 1024))  # far above the high-water mark
        except ConnectionClosed:
            outcome.set_result("raised")
        else:
            outcome.set_result("returned")

    async def main() -> None:
        nonlocal outcome
        outcome = asyncio.get_running_loop().create_future()
        async with serve(flood, "127.0.0.1", 0, compression=None) as server:
            client = await RawClient.open(server.port_number, rcvbuf=4096)
            await until(lambda: bool(server.connections))
            connection = only_connection(server)
            await until(lambda: connection._writing_paused)
            client.reset()
            assert await outcome == "raised"

    run(main())


# --- 4. a ping flood whose pongs are never read does not grow memory ------------------------


def test_ping_flood_with_unread_pongs_stays_bounded(caplog: pytest.LogCaptureFixture) -> None:
    pings = 20_000  # 2.6 MB of pings, 2.5 MB of pongs that the client never reads
    flood = masked(Opcode.PING, b"p" * 125) * pings + masked(Opcode.TEXT, b"end")
    flooded = asyncio.Event

    async def handler(ws: ServerConnection) -> None:
        assert ws.transport is not None
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert await ws.recv() == "end"  # every ping before it was handled
        done.set()
        await ws.wait_closed()

    done: asyncio.Event

    async def main() -> int:
        nonlocal done
        done = flooded()
        async with serve(handler, "127.0.0.1", 0, ping_interval=None, compression=None) as server:
            client = await RawClient.open(server.port_number, rcvbuf=4096)
            await until(lambda: bool(server.connections))
            await asyncio.sleep(0.05)
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                sent = await client.send_until_blocked(flood, 10)
                assert sent == len(flood)
                await done.wait()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            client.reset()
            return grown

    with caplog.at_level(logging.INFO, logger="tether"):
        grown = run(main())
    # The bound (docs/limits.md): the write high-water mark plus one pong.
    assert grown < 512 * 1024, grown
    no_tracebacks(caplog)


# --- 5. a failed connection drops what it held at once ---------------------------------------


def test_failed_connection_drops_its_partial_message_at_once() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async def main() -> None:
        limits = Limits(max_message_size=2**21, max_frame_size=2**21)
        async with serve(
            handler, "127.0.0.1", 0, limits=limits, close_timeout=5, compression=None
        ) as server:
            client = await RawClient.open(server.port_number)
            # 64 KiB of text fragments, then 900 KiB of a 1 MiB frame: all held by the server.
            await client.send(masked(Opcode.TEXT, b"a" * 65536, fin=False))
            await client.send(masked(Opcode.CONT, b"x" * 2**20, fin=True)[: 900 * 1024])
            await until(lambda: bool(server.connections))
            connection = only_connection(server)
            await until(lambda: connection.protocol.buffered > 800_000)
            connection.fail(1011, "going away for a test")
            frame = await client.next_frame()
            assert frame is not None and close_code(frame) == 1011
            # The client has not closed its side: the server still waits (close_timeout), and
            # holds nothing of the message meanwhile.
            assert connection.state.name != "CLOSED"
            assert connection.protocol.buffered == 0
            assert connection.bytes_held == 0
            client.close()

    run(main())


# --- 7. a tight send loop lets the event loop run other work --------------------------------


def test_tight_send_loop_yields_to_the_event_loop() -> None:
    sent = 0
    seen_at: list[int] = []

    async def blaster(ws: ServerConnection) -> None:
        nonlocal sent
        asyncio.get_running_loop().call_soon(lambda: seen_at.append(sent))
        for _ in range(2000):
            await ws.send(b"x")  # 2000 tiny frames: the socket buffer takes them all
            sent += 1

    async def main() -> None:
        async with serve(blaster, "127.0.0.1", 0, compression=None) as server:
            async with connect(f"ws://127.0.0.1:{server.port_number}/") as ws:
                for _ in range(2000):
                    await ws.recv()
        assert seen_at and seen_at[0] <= YIELD_EVERY, seen_at

    run(main())


def test_tight_recv_loop_yields_to_the_event_loop() -> None:
    """A handler taking messages that are already queued never waits for data: it yields
    every YIELD_EVERY messages all the same."""
    count = 2000
    taken = 0
    seen_at: list[int] = []

    async def reader(ws: ServerConnection) -> None:
        nonlocal taken
        await until(lambda: ws.bytes_held >= count)  # every message is queued
        asyncio.get_running_loop().call_soon(lambda: seen_at.append(taken))
        for _ in range(count):
            assert await ws.recv() == "x"
            taken += 1
        await ws.wait_closed()

    async def main() -> None:
        async with serve(reader, "127.0.0.1", 0, compression=None) as server:
            client = await RawClient.open(server.port_number)
            await client.send(masked(Opcode.TEXT, b"x") * count)
            await until(lambda: taken == count)
            client.close()
        assert seen_at and seen_at[0] <= YIELD_EVERY, seen_at

    run(main())


# --- 8. a server-wide memory budget --------------------------------------------------------

KIB = 1024


async def handshake_head(port: int) -> bytes:
    """A raw opening handshake; the whole response as received until the server closes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        await loop.sock_sendall(
            sock,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        response = b""
        while chunk := await loop.sock_recv(sock, 65536):
            response += chunk
            if response.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in response:
                break
        return response
    finally:
        sock.close()


def test_over_the_budget_newcomers_get_503_and_the_biggest_holder_1013(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long cooling-off period, so that the newcomer below is refused whatever the timing.
    monkeypatch.setattr(budget_module, "RETRY_AFTER", 60)

    async def handler(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async def main() -> None:
        limits = Limits(max_message_size=2**21, max_frame_size=2**21)
        async with serve(
            handler,
            "127.0.0.1",
            0,
            limits=limits,
            memory_budget=2 * 2**20,
            compression=None,
        ) as server:
            assert server.budget is not None

            def held() -> int:
                return sum(c.bytes_held for c in server.connections)

            frame = masked(Opcode.BINARY, b"x" * 2**20)
            clients = []
            # The biggest first, so that it is the biggest whenever the sum goes over.
            for size in (900 * KIB, 500 * KIB, 400 * KIB, 600 * KIB):
                before = held()
                client = await RawClient.open(server.port_number)
                await client.send(frame[:size])
                clients.append(client)
                if len(clients) < 4:
                    # Under the budget so far: a newcomer is welcome.
                    target = before + size
                    await until(lambda: held() >= target)  # noqa: B023 (awaited here)
                    assert (await handshake_head(server.port_number)).startswith(b"HTTP/1.1 101 ")
            biggest = clients[0]
            closing = await biggest.next_frame()
            assert closing is not None and close_code(closing) == 1013
            response = await handshake_head(server.port_number)
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), response
            assert b"\r\nRetry-After: 60" in head
            assert b"memory budget" in body
            # The others fit in the budget and stay open.
            await until(lambda: server.budget is not None and server.budget.held <= 2 * 2**20)
            assert server.budget.shed == 1
            open_ = [c for c in server.connections if c.state.name == "OPEN" and c.bytes_held]
            assert sorted(c.bytes_held for c in open_) == [400 * KIB, 500 * KIB, 600 * KIB]
            for client in clients:
                client.close()

    run(main())
    no_tracebacks(caplog)
    assert any("memory budget exceeded" in r.getMessage() for r in caplog.records)


def test_memory_budget_total_follows_reads_takes_and_losses() -> None:
    # The budget keeps a running total, charged where bytes are accepted, where the
    # application takes a message and where a connection is lost (no timer sums it).
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        async for _ in ws:
            pass

    async def main() -> None:
        limits = Limits(max_message_size=2**21, max_frame_size=2**21)
        async with serve(
            handler, "127.0.0.1", 0, limits=limits, memory_budget=8 * 2**20, compression=None
        ) as server:
            budget = server.budget
            assert budget is not None

            def held() -> int:
                return sum(c.bytes_held for c in server.connections)

            partial = await RawClient.open(server.port_number)
            await partial.send(masked(Opcode.BINARY, b"x" * 2**20)[: 300 * KIB])
            complete = await RawClient.open(server.port_number)
            await complete.send(masked(Opcode.BINARY, b"y" * 100 * KIB) * 2)
            await until(lambda: held() >= 500 * KIB)
            assert budget.held == held()
            go.set()  # the handlers take the complete messages
            await until(lambda: held() <= 300 * KIB + 14)
            assert budget.held == held()
            partial.reset()
            await until(lambda: len(server.connections) == 1)
            assert budget.held == held() == 0
            assert budget.shed == 0
            complete.close()

    run(main())


def test_memory_budget_is_checked() -> None:
    async def handler(ws: ServerConnection) -> None:
        pass

    with pytest.raises(ValueError, match="memory_budget"):
        serve(handler, "127.0.0.1", 0, memory_budget=0)
    with pytest.raises(TypeError, match="memory_budget"):
        serve(handler, "127.0.0.1", 0, memory_budget="64M")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not supported by tether"):
        tether_sync.serve(lambda ws: None, "127.0.0.1", 0, memory_budget=2**20)
