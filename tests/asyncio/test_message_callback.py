"""Connection.set_message_callback and send_nowait: picows-style message delivery, tether
server and client (and a raw client, to put several frames in one read) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from typing import Any

import pytest

from helpers.aio import run as aio_run
from tether import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ServerConnection,
    connect,
    serve,
)
from tether.asyncio import connection as connection_module
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame
from tether.typing import Data

pytestmark = pytest.mark.timeout(30)


def run(coro: Any) -> Any:
    return aio_run(coro, 15)


def uri(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port_number}/"


async def callback_echo(ws: ServerConnection) -> None:
    ws.set_message_callback(ws.send_nowait)
    await ws.wait_closed()


def test_echo_from_a_callback() -> None:
    async def main() -> None:
        async with serve(callback_echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            messages: list[Data] = ["héllo", b"\x00\xff", os.urandom(300_000), "x" * 70_000]
            for message in messages:
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(["frag", "mented"])  # a fragmented message is delivered whole
            assert await ws.recv() == "fragmented"

    run(main())


def test_client_callback_and_back_to_recv() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            got: list[Data] = []
            done = asyncio.Event()

            def on_message(message: Data) -> None:
                got.append(message)
                if len(got) < 5:
                    ws.send_nowait(f"{len(got)}")
                else:
                    done.set()

            ws.set_message_callback(on_message)
            with pytest.raises(ConcurrencyError, match="set_message_callback"):
                await ws.recv()
            with pytest.raises(ConcurrencyError, match="set_message_callback"):
                async for _ in ws.recv_streaming():
                    pass  # pragma: no cover
            ws.send_nowait("0")
            await asyncio.wait_for(done.wait(), 5)
            assert got == ["0", "1", "2", "3", "4"]
            # Back to the queue: what arrives now waits for recv().
            ws.set_message_callback(None)
            await ws.send("after")
            assert await ws.recv() == "after"

    run(main())


def test_queued_messages_go_to_the_callback_first_and_in_order() -> None:
    async def main() -> None:
        seen: list[Data] = []
        ready = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            await ready.wait()  # three messages are queued by now
            ws.set_message_callback(seen.append)
            assert seen == ["1", "2", "3"]  # handed over before set_message_callback returned
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            for message in ("1", "2", "3"):
                await ws.send(message)
            server_ws = next(iter(server.connections))
            while server_ws._messages.complete < 3:
                await asyncio.sleep(0.01)
            ready.set()
            await ws.send("4")
            while len(seen) < 4:
                await asyncio.sleep(0.01)
            assert seen == ["1", "2", "3", "4"]

    run(main())


def test_set_message_callback_while_recv_waits_is_an_error() -> None:
    async def main() -> None:
        async with serve(callback_echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            waiting = asyncio.create_task(ws.recv())
            await asyncio.sleep(0.05)
            with pytest.raises(ConcurrencyError, match="recv"):
                ws.set_message_callback(print)
            waiting.cancel()

    run(main())


def test_a_failing_callback_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    def broken(message: Data) -> None:
        raise RuntimeError("boom")

    async def handler(ws: ServerConnection) -> None:
        ws.set_message_callback(broken)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            await ws.send("hello")
            with pytest.raises(ConnectionClosedError) as raised:
                await ws.recv()
            assert raised.value.rcvd is not None and raised.value.rcvd.code == 1011

    with caplog.at_level(logging.ERROR):
        run(main())
    assert any("message callback failed" in r.getMessage() for r in caplog.records)


def test_send_nowait_errors() -> None:
    async def main() -> None:
        async with serve(callback_echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            with pytest.raises(TypeError, match="cannot send dict"):
                ws.send_nowait({"a": 1})  # type: ignore[arg-type]
            gate = asyncio.Event()

            async def fragments() -> Any:
                yield "a"
                await gate.wait()
                yield "b"

            sending = asyncio.create_task(ws.send(fragments()))
            await asyncio.sleep(0.05)
            with pytest.raises(ConcurrencyError, match="fragmented"):
                ws.send_nowait("x")
            gate.set()
            await sending
            assert await ws.recv() == "ab"
            await ws.close()
            with pytest.raises(ConnectionClosed):
                ws.send_nowait("late")

    run(main())


def test_a_close_behind_messages_in_one_read_comes_after_the_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Messages and the close frame in one TCP segment: the callback answers every message,
    # then the close is answered at once. Were it held until the held-end timeout, set to a
    # minute here, the test would exceed its 15 s bound.
    monkeypatch.setattr(connection_module, "HELD_END_TIMEOUT", 60)

    async def main() -> None:
        async with serve(callback_echo, "127.0.0.1", 0) as server:
            loop = asyncio.get_running_loop()
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", server.port_number))
            key = base64.b64encode(os.urandom(16))
            await loop.sock_sendall(
                sock,
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += await loop.sock_recv(sock, 1)
            burst = b"".join(
                serialize_frame(frame, mask=True)
                for frame in [
                    Frame(Opcode.TEXT, b"one"),
                    Frame(Opcode.TEXT, b"two"),
                    Frame(Opcode.CLOSE, (1000).to_bytes(2, "big")),
                ]
            )
            await loop.sock_sendall(sock, burst)
            parser = FrameParser(mask_expected=False)
            frames: list[Frame] = []
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                parser.feed(data)
                while (frame := parser.next_frame()) is not None:
                    frames.append(frame)
            sock.close()
            assert [(f.opcode, f.data) for f in frames] == [
                (Opcode.TEXT, b"one"),
                (Opcode.TEXT, b"two"),
                (Opcode.CLOSE, (1000).to_bytes(2, "big")),
            ]

    run(main())


def test_a_callback_that_removes_itself_leaves_the_rest_to_recv() -> None:
    async def main() -> None:
        async with serve(callback_echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            for message in ("1", "2", "3"):
                await ws.send(message)
            while ws._messages.complete < 3:
                await asyncio.sleep(0.01)
            seen: list[Data] = []

            def once(message: Data) -> None:
                seen.append(message)
                ws.set_message_callback(None)

            ws.set_message_callback(once)
            assert seen == ["1"]
            assert [await ws.recv(), await ws.recv()] == ["2", "3"]

    run(main())
