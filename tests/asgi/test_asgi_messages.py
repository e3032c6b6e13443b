"""The ASGI conversation under a real uvicorn on 127.0.0.1: every message the application may
send in each phase (handshake, denial, open, closed), the mistakes it can make (each with its
HTTP status or close code and its log line), the server's shutdown in each phase, and the
keepalive's edges. uvicorn's own suite (``make asgi-conformance``) covers the common paths;
these are the ones it leaves out or that look at tether's choices.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from helpers.asgi import raw_handshake, require_module, send_upgrade, uvicorn_server
from tether.asgi import UvicornProtocol
from tether.exceptions import ClientDisconnected

websockets_client = require_module("websockets.asyncio.client")
websockets_exceptions = require_module("websockets.exceptions")
connect = websockets_client.connect

pytestmark = pytest.mark.timeout(30)

Message = dict[str, Any]
App = Any


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "uvicorn.error")


def only_protocol(server: Any) -> UvicornProtocol:
    (protocol,) = server.server_state.connections
    assert isinstance(protocol, UvicornProtocol)
    return protocol


async def until(condition: Any, seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def masked(opcode: int, payload: bytes) -> bytes:
    """A masked frame (mask 0: the payload goes as is), payload under 126 bytes."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00" * 4 + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def status_of(app: App, **options: Any) -> tuple[int, bytes]:
    """Run ``app`` for one handshake; the HTTP status and body the client gets."""
    async with uvicorn_server(app, **options) as (server, port):
        with pytest.raises(websockets_exceptions.InvalidStatus) as raised:
            await connect(f"ws://127.0.0.1:{port}/")
        await until(lambda: not server.server_state.tasks)
    response = raised.value.response
    return response.status_code, response.body


# --- the handshake: accept, close (403), denial responses -------------------------------------


async def test_accept_with_extra_headers() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-extra", b"1")]})
        await send({"type": "websocket.close"})

    async with uvicorn_server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            assert ws.response.headers["x-extra"] == "1"
            assert ws.response.headers["server"] == "uvicorn"


async def test_close_before_accept_is_a_403(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})
        seen.append(await receive())
        with pytest.raises(RuntimeError, match=r"after sending 'websocket\.close'"):
            await send({"type": "websocket.close"})

    status, body = await status_of(app)
    assert status == 403 and b"refused" in body
    assert seen == [{"type": "websocket.disconnect", "code": 1006}]
    assert '"WebSocket /" 403' in caplog.text


async def test_denial_response_in_several_bodies(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"server", b"mine")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"go ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"away"})

    async with uvicorn_server(app) as (_, port):
        reader, writer = await send_upgrade(port)
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head, body = response.split(b"\r\n\r\n", 1)
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 401 unauthorized"
    assert b"server: mine" in lines and b"server: uvicorn" not in lines  # the app's wins
    assert b"content-length: 7" in lines and b"connection: close" in lines
    assert body == b"go away"
    assert '"WebSocket /" 401' in caplog.text


async def test_denial_with_its_own_length_and_connection_headers() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    assert await status_of(app) == (404, b"no")


@pytest.mark.parametrize(
    ("messages", "log"),
    [
        (
            [{"type": "websocket.http.response.start", "status": 99}],
            "Invalid HTTP status code '99' in response.",
        ),
        (
            [
                {
                    "type": "websocket.http.response.start",
                    "status": 400,
                    "headers": [(b"content-length", b"ten")],
                },
                {"type": "websocket.http.response.body", "body": b"x"},
            ],
            "invalid Content-Length: 'ten'",
        ),
        (
            [
                {"type": "websocket.http.response.start", "status": 400, "headers": []},
                {"type": "websocket.send", "text": "x"},
            ],
            "Expected ASGI message 'websocket.http.response.body' but got 'websocket.send'.",
        ),
        (
            [
                {
                    "type": "websocket.http.response.start",
                    "status": 400,
                    "headers": [(b"x-bad", b"a\r\nb")],
                },
                {"type": "websocket.http.response.body", "body": b"x"},
            ],
            "websocket.http.response.start:",
        ),
        ([{"type": "websocket.send", "text": "x"}], "Expected ASGI message 'websocket.accept'"),
        (
            [{"type": "websocket.accept", "headers": [(b"x-bad", b"a\r\nb")]}],
            "websocket.accept:",
        ),
    ],
    ids=[
        "bad-status",
        "bad-content-length",
        "send-during-denial",
        "bad-denial-header",
        "send-before-accept",
        "bad-accept-header",
    ],
)
async def test_handshake_mistakes_are_a_500(
    messages: list[Message], log: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        for message in messages:
            await send(message)

    status, body = await status_of(app)
    assert (status, body) == (500, b"Internal Server Error")
    assert "exception in ASGI application" in caplog.text
    assert log in caplog.text


async def test_app_returning_without_answering_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()

    assert (await status_of(app))[0] == 500
    assert "ASGI callable returned without completing handshake." in caplog.text


async def test_app_returning_in_the_middle_of_a_denial_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})

    assert (await status_of(app))[0] == 500
    assert "returned without completing its denial response." in caplog.text


async def test_denial_whose_body_matches_its_length_is_sent_when_the_app_returns() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"4")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"nope", "more_body": True})

    assert await status_of(app) == (401, b"nope")


async def test_complete_but_invalid_denial_left_by_the_app_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"1"), (b"x-bad", b"a\nb")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})

    assert (await status_of(app))[0] == 500
    assert "invalid denial response" in caplog.text


async def test_denial_with_a_bad_length_left_by_the_app_is_a_500() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"?")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})

    assert (await status_of(app))[0] == 500


async def test_app_returning_a_value_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> int:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return 42

    async with uvicorn_server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.wait_closed()
    assert "ASGI callable should return None, but returned 42." in caplog.text


# --- the open connection ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [65535, 65536, 65537, 300_000])
async def test_large_messages_around_the_split_write_size(size: int) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "bytes": message["bytes"]})
        await send({"type": "websocket.send", "text": "after"})
        await receive()

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    async with uvicorn_server(app, ws_per_message_deflate=False) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
            await ws.send(payload)
            assert await ws.recv() == payload
            assert await ws.recv() == "after"


async def test_reads_go_through_one_buffer_and_large_payloads_in_place() -> None:
    """The transport reads into a shared buffer (``get_buffer``), not into a new 256 KiB
    ``bytes`` per read (glibc's mmap, munmap and page faults at 64 KiB x64), and the rest of a
    large frame straight into its payload: a 300 KB frame sent in two pieces, the second with
    a small frame behind it in the same write, arrives whole and in order."""
    reads: list[bool] = []  # per read: into the payload (True) or the shared buffer

    class Recording(UvicornProtocol):
        def buffer_updated(self, nbytes: int) -> None:
            reads.append(self._payload_view is not None)
            super().buffer_updated(nbytes)

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(2):
            message = await receive()
            await send(
                {
                    "type": "websocket.send",
                    **{k: message[k] for k in ("bytes", "text") if message.get(k) is not None},
                }
            )
        await receive()

    payload = bytes(range(256)) * 1171 + b"x" * 224  # 300,000 bytes
    big = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", len(payload)) + b"\x00" * 4 + payload
    async with uvicorn_server(app, ws=Recording, ws_per_message_deflate=False) as (server, port):
        reader, writer, head = await raw_handshake(port)
        assert head.startswith(b"HTTP/1.1 101")
        protocol = only_protocol(server)
        writer.write(big[:160_000])
        await writer.drain()
        await until(lambda: protocol.protocol.buffered >= 160_000 - 14)
        writer.write(big[160_000:] + masked(0x1, b"after"))
        await writer.drain()
        assert await read_frame(reader) == (0x2, payload)
        assert await read_frame(reader) == (0x1, b"after")
        writer.close()
    assert reads.count(False) >= 2  # the request head came through data_received
    assert True in reads


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_buffered_reads_on_each_loop_and_over_tls(loop: str, tls: bool, tmp_path: Path) -> None:
    """uvicorn hands its transport over with ``set_protocol()``: asyncio's and uvloop's
    transports, and asyncio's TLS transport, all switch to ``get_buffer``/``buffer_updated``,
    and messages from 16 B to 3 MiB (read in place) come back intact."""
    import ssl

    import trustme  # test dependencies: missing, the test fails rather than skips
    import uvloop

    updates = 0

    class Counting(UvicornProtocol):
        def buffer_updated(self, nbytes: int) -> None:
            nonlocal updates
            updates += 1
            super().buffer_updated(nbytes)

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "bytes": message["bytes"]})

    options: dict[str, Any] = {}
    client_context = None
    if tls:
        ca = trustme.CA()
        pem = tmp_path / "server.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        options = {"ssl_certfile": str(pem), "ssl_keyfile": str(pem)}
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)

    async def main() -> None:
        assert ("uvloop" in type(asyncio.get_running_loop()).__module__) == (loop == "uvloop")
        async with uvicorn_server(
            app, ws=Counting, ws_max_size=4 * 2**20, ws_per_message_deflate=False, **options
        ) as (_, port):
            url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
            async with connect(url, ssl=client_context, compression=None, max_size=None) as ws:
                for size in (16, 70_000, 300_000, 3 * 2**20, 5):
                    payload = bytes(range(256)) * (size // 256) + b"y" * (size % 256)
                    await ws.send(payload)
                    assert await ws.recv() == payload

    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
    assert updates >= 5


async def test_sending_mistakes_after_accept(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for message in (
            {"type": "websocket.accept"},
            {"type": "websocket.send"},
        ):
            try:
                await send(message)
            except RuntimeError as exc:
                errors.append(str(exc))
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        for message in (
            {"type": "websocket.send", "text": "late"},
            {"type": "websocket.close"},
        ):
            try:
                await send(message)
            except RuntimeError as exc:
                errors.append(str(exc))

    async with uvicorn_server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.wait_closed()
    assert ws.close_code == 4000 and ws.close_reason == "done"
    assert errors == [
        "Expected ASGI message 'websocket.send' or 'websocket.close', but got 'websocket.accept'.",
        "websocket.send needs 'bytes' or 'text'",
        "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.",
        "Unexpected ASGI message 'websocket.close', after sending 'websocket.close'.",
    ]


async def test_after_the_client_closed_the_apps_close_is_a_no_op() -> None:
    outcome: list[object] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        outcome.append(await receive())
        # The application runs before the transport reports the connection lost: its close
        # finds the WebSocket closed by the client, and is a no-op; a send after it is an error.
        await send({"type": "websocket.close"})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except RuntimeError as exc:
            outcome.append(str(exc))

    async with uvicorn_server(app) as (server, port):
        reader, writer, _ = await raw_handshake(port)
        writer.write(masked(0x8, struct.pack("!H", 1001)))
        assert await read_frame(reader) == (0x8, struct.pack("!H", 1001))  # the echo only
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server closes
        await until(lambda: not server.server_state.tasks)
        writer.close()
    assert outcome == [
        {"type": "websocket.disconnect", "code": 1001, "reason": ""},
        "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.",
    ]


async def test_send_when_closed_by_a_protocol_error_raises_client_disconnected() -> None:
    outcome: list[object] = []
    failed = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        outcome.append((await receive())["code"])
        failed.set()
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            outcome.append(type(exc))

    async with uvicorn_server(app) as (server, port):
        _, writer, _ = await raw_handshake(port)
        writer.write(masked(0x3, b"reserved opcode"))
        await asyncio.wait_for(failed.wait(), 5)
        await until(lambda: not server.server_state.tasks)
        writer.close()
    assert outcome == [1002, ClientDisconnected]


async def test_app_that_lets_client_disconnected_escape_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the disconnect
        await send({"type": "websocket.send", "text": "late"})  # raises ClientDisconnected

    async with uvicorn_server(app) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/"):
            pass
        await until(lambda: not server.server_state.tasks)
    assert "exception in ASGI application" not in caplog.text


async def test_app_cancelled_ends_and_drops_the_connection() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise asyncio.CancelledError

    async with uvicorn_server(app) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.wait_closed()
        await until(lambda: not server.server_state.tasks)
    assert ws.close_code == 1006


async def test_a_second_concurrent_receive_is_an_error_and_a_cancelled_one_is_forgotten() -> None:
    outcome: list[object] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        first = asyncio.create_task(receive())
        await asyncio.sleep(0)
        try:
            await receive()
        except RuntimeError as exc:
            outcome.append(str(exc))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        outcome.append((await receive())["text"])  # a new waiter after the cancelled one
        await send({"type": "websocket.close"})

    async with uvicorn_server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await asyncio.sleep(0.1)
            await ws.send("hello")
            await ws.wait_closed()
    assert outcome == ["receive() is already waiting for a message", "hello"]


async def test_data_after_the_apps_close_is_dropped_until_the_clients_close() -> None:
    seen: list[Message] = []
    closed = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        closed.set()
        seen.append(await receive())

    async with uvicorn_server(app) as (server, port):
        reader, writer, _ = await raw_handshake(port)
        assert await read_frame(reader) == (0x8, struct.pack("!H", 1000))
        # Data that crossed our close frame, then the client's answer.
        writer.write(masked(0x1, b"crossing") + masked(0x8, struct.pack("!H", 1000)))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await until(lambda: not server.server_state.tasks)
        writer.close()
    assert seen == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


class QuickClose(UvicornProtocol):
    close_timeout = 0.1


async def test_client_that_never_answers_our_close_is_dropped_after_close_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    async with uvicorn_server(app, ws=QuickClose) as (_, port):
        reader, writer, _ = await raw_handshake(port)
        assert (await read_frame(reader))[0] == 0x8
        assert await asyncio.wait_for(reader.read(), 5) == b""  # no answer: dropped
        writer.close()
    assert "no close frame from the client within 0.1 s; closing" in caplog.text


# --- the server's shutdown ------------------------------------------------------------------


async def test_shutdown_sends_1012_to_an_open_connection() -> None:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())

    async with uvicorn_server(app) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            server.should_exit = True
            await ws.wait_closed()
    assert ws.close_code == 1012
    assert seen == [{"type": "websocket.disconnect", "code": 1012}]


async def test_shutdown_while_waiting_for_the_clients_close_drops_the_connection() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    async with uvicorn_server(app) as (server, port):
        reader, writer, _ = await raw_handshake(port)
        assert (await read_frame(reader))[0] == 0x8  # our close, which the client ignores
        protocol = only_protocol(server)
        await until(lambda: protocol.close_timer is not None)
        protocol.shutdown()
        assert protocol.close_timer is None and protocol.transport.is_closing()
        protocol.shutdown()  # closing already: nothing more
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_shutdown_in_the_middle_of_a_denial_is_a_500() -> None:
    denying = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        denying.set()
        await resume.wait()
        try:
            await send({"type": "websocket.http.response.body", "body": b"late"})
        except OSError as exc:
            outcome.append(type(exc))

    outcome: list[object] = []
    resume = asyncio.Event()
    async with uvicorn_server(app) as (server, port):
        reader, writer = await send_upgrade(port)
        await asyncio.wait_for(denying.wait(), 5)
        server.should_exit = True
        response = await asyncio.wait_for(reader.read(), 5)
        resume.set()
        writer.close()
    assert response.startswith(b"HTTP/1.1 500 ")
    assert outcome == [ClientDisconnected]  # the body came too late


# --- keepalive ------------------------------------------------------------------------------


async def test_keepalive_without_timeout_pings_on_and_ignores_unsolicited_pongs() -> None:
    async with uvicorn_server(_accept_and_wait, ws_ping_interval=0.05, ws_ping_timeout=None) as (
        server,
        port,
    ):
        reader, writer, _ = await raw_handshake(port)
        protocol = only_protocol(server)
        writer.write(masked(0xA, b"unsolicited"))
        pings: list[bytes] = []
        async with asyncio.timeout(5):
            while len(pings) < 3:  # pings go on though none is answered
                opcode, payload = await read_frame(reader)
                assert opcode == 0x9
                pings.append(payload)
        assert protocol.latency == 0.0 and protocol.pong_timer is None
        writer.write(masked(0xA, pings[-1]))  # answers it and every ping before it
        await until(lambda: protocol.latency > 0)
        writer.close()


async def _accept_and_wait(scope: Message, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await receive()


async def test_keepalive_stops_when_the_connection_closes() -> None:
    async with uvicorn_server(_accept_and_wait, ws_ping_interval=0.05, ws_ping_timeout=5) as (
        server,
        port,
    ):
        reader, writer, _ = await raw_handshake(port)
        protocol = only_protocol(server)
        assert (await read_frame(reader))[0] == 0x9  # a ping waits for its pong
        assert protocol.pong_timer is not None
        writer.write(masked(0x8, struct.pack("!H", 1000)))
        assert await asyncio.wait_for(reader.read(), 5) == b"\x88\x02\x03\xe8"
        await until(lambda: protocol.disconnected)
        assert protocol.pong_timer is None and protocol.ping_timer is None
        # Timers that fire late find the connection closed and do nothing.
        protocol._send_keepalive_ping()
        protocol._keepalive_timed_out()
        writer.close()


# --- transports and logging -----------------------------------------------------------------


async def test_unix_socket_scope_and_trace_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(5, "uvicorn.error")  # uvicorn's TRACE
    scopes: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    path = str(tmp_path / "ws.sock")
    async with uvicorn_server(app, unix_path=path) as (server, _):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(
            b"GET /u HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert (await read_frame(reader))[0] == 0x8
        writer.write(masked(0x8, struct.pack("!H", 1000)))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await until(lambda: not server.server_state.connections)
        writer.close()
    (scope,) = scopes
    assert scope["server"] == (path, None)
    assert scope["client"] is None
    assert "WebSocket connection made" in caplog.text
    assert "WebSocket connection lost" in caplog.text
    assert ' - "WebSocket /u" [accepted]' in caplog.text


async def test_config_loaded_by_the_class_and_options_shared_by_connections() -> None:
    uvicorn = require_module("uvicorn")
    config = uvicorn.Config(_accept_and_wait, ws="tether.asgi:UvicornProtocol", log_config=None)
    state = uvicorn.server.ServerState()
    assert not config.loaded
    first = UvicornProtocol(config, state, {})
    assert config.loaded
    second = UvicornProtocol(config, state, {})
    # One Limits and one extension list per Config, shared by its connections.
    assert first.protocol.limits is second.protocol.limits
    assert first.max_queue == second.max_queue == config.ws_max_queue
