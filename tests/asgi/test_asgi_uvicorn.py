"""tether.asgi.UvicornProtocol under a real uvicorn server, on 127.0.0.1.

uvicorn's own WebSocket tests run against this class in ``make asgi-conformance``; these cover
what they cannot (tests that only run uvicorn's classes, or that look at tether's choices):
tether's handshake refusals, the limits, the keepalive, the message queue bound, and the
failure paths (an application that raises, a client that vanishes mid-message), each with its
close code or HTTP status and its log line.
"""

from __future__ import annotations

import asyncio
import logging
import struct
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


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "uvicorn.error")


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def only_protocol(server: Any) -> UvicornProtocol:
    (protocol,) = server.server_state.connections
    assert isinstance(protocol, UvicornProtocol)
    return protocol


async def echo_app(scope: Message, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send(
                {
                    "type": "websocket.send",
                    **{k: message[k] for k in ("text", "bytes") if k in message},
                }
            )
        else:
            return


# --- the handshake ----------------------------------------------------------------------------


async def test_scope_is_asgi_websocket_2_4() -> None:
    scopes: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "b"})
        await send({"type": "websocket.close"})

    async with uvicorn_server(app, root_path="/api") as (_, port):
        async with connect(
            f"ws://127.0.0.1:{port}/a%20b/c?x=1&y=%20", subprotocols=["a", "b"]
        ) as ws:
            assert ws.subprotocol == "b"
            with pytest.raises(websockets_exceptions.ConnectionClosedOK):
                await ws.recv()
    (scope,) = scopes
    assert scope["asgi"]["spec_version"] == "2.4"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/api/a b/c"
    assert scope["raw_path"] == b"/api/a%20b/c"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert (b"sec-websocket-protocol", b"a, b") in scope["headers"]


async def test_tether_refuses_a_bad_version_without_calling_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    called = False

    async def app(scope: Message, receive: Any, send: Any) -> None:  # pragma: no cover
        nonlocal called
        called = True

    async with uvicorn_server(app) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response
    assert b"\r\nserver: uvicorn\r\n" in response
    assert b"Sec-WebSocket-Version" in response.split(b"\r\n\r\n", 1)[1]  # the reason
    assert not called
    assert '"WebSocket /" 426' in caplog.text


# The two requests of uvicorn's test_unparseable_upgrade_closes_connection, which only runs
# uvicorn's websockets-sansio class.
@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize(
    ("header", "status"),
    [(b"Cookie: " + b"x" * 9000, b"431"), (b"Content-Length: 5", b"400")],
    ids=["header-line-too-long", "body"],
)
async def test_unparseable_upgrade(http: str, header: bytes, status: bytes) -> None:
    async with uvicorn_server(echo_app, http=http) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + header
            + b"\r\n\r\n"
        )
        response = await asyncio.wait_for(reader.read(), 5)  # the server closes after it
        writer.close()
    assert response.startswith(b"HTTP/1.1 " + status + b" ")


async def test_subprotocol_not_offered_is_an_application_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "nope"})

    async with uvicorn_server(app) as (_, port):
        with pytest.raises(websockets_exceptions.InvalidStatus) as raised:
            await connect(f"ws://127.0.0.1:{port}/", subprotocols=["chat"])
    assert raised.value.response.status_code == 500
    assert "which the client did not offer" in caplog.text


async def test_denial_body_shorter_than_its_content_length_is_a_500() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-length", b"9")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"short"})

    async with uvicorn_server(app) as (_, port):
        with pytest.raises(websockets_exceptions.InvalidStatus) as raised:
            await connect(f"ws://127.0.0.1:{port}/")
    assert raised.value.response.status_code == 500


# --- limits, keepalive, queue -----------------------------------------------------------------

MAX = 16 * 2**20


# uvicorn's test_send_binary_data_to_server_bigger_than_default_on_websockets, for tether.
@pytest.mark.parametrize(
    ("sent", "limit", "code"),
    [(MAX, MAX, None), (MAX + 1, MAX, 1009), (10, 10, None), (11, 10, 1009)],
    ids=["16MiB-of-16MiB", "16MiB+1-of-16MiB", "10-of-10", "11-of-10"],
)
async def test_ws_max_size(sent: int, limit: int, code: int | None) -> None:
    disconnects: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.receive":
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                disconnects.append(message)
                return

    async with uvicorn_server(app, ws_max_size=limit) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
            if code is None:
                await ws.send(b"\x01" * sent)
                assert await ws.recv() == b"\x01" * sent
            else:
                with pytest.raises(websockets_exceptions.ConnectionClosed):
                    await ws.send(b"\x01" * sent)
                    await ws.recv()
    if code is not None:
        assert disconnects and disconnects[0]["code"] == code


async def test_invalid_utf8_closes_with_1007() -> None:
    disconnects: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        disconnects.append(await receive())

    async with uvicorn_server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(b"ok \xff", text=True)
            with pytest.raises(websockets_exceptions.ConnectionClosedError) as raised:
                await ws.recv()
    assert raised.value.rcvd is not None and raised.value.rcvd.code == 1007
    async with asyncio.timeout(5):
        while not disconnects:
            await asyncio.sleep(0.01)
    assert disconnects[0]["code"] == 1007


# uvicorn's keepalive tests check isinstance() against its own classes; the same for tether's.
async def test_keepalive_ping_pong() -> None:
    async with uvicorn_server(echo_app, ws_ping_interval=0.05, ws_ping_timeout=5) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None):
            protocol = only_protocol(server)
            async with asyncio.timeout(5):
                while protocol.latency == 0.0:  # a pong came back and was measured
                    await asyncio.sleep(0.01)
                # With a ping timeout, the next ping leaves only after the last one's pong:
                # three distinct send times prove the pongs were matched and the timer re-armed.
                sent = {protocol.ping_sent_at}
                while len(sent) < 3:
                    await asyncio.sleep(0.01)
                    sent.add(protocol.ping_sent_at)
            assert not protocol.transport.is_closing()
            assert protocol.ping_sent_at > 0


async def test_keepalive_ping_timeout_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    disconnects: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        disconnects.append(await receive())

    async with uvicorn_server(app, ws_ping_interval=0.05, ws_ping_timeout=0.1) as (_, port):
        reader, writer, head = await raw_handshake(port)  # a client that never answers pings
        assert head.startswith(b"HTTP/1.1 101 ")
        frames: list[tuple[int, bytes]] = []
        async with asyncio.timeout(5):
            while not frames or frames[-1][0] != 0x8:
                frames.append(await _read_frame(reader))
            while not disconnects:
                await asyncio.sleep(0.01)
        writer.close()
    assert [opcode for opcode, _ in frames] == [0x9, 0x8]  # one ping, then the close
    assert frames[-1][1] == struct.pack("!H", 1011) + b"keepalive ping timeout"
    assert disconnects == [
        {"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}
    ]
    assert "no pong within 0.1 s; closing with 1011" in caplog.text


async def test_keepalive_disabled() -> None:
    async with uvicorn_server(echo_app, ws_ping_interval=None) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None):
            assert only_protocol(server).ping_timer is None


@pytest.mark.parametrize("max_queue", [4, 1])
async def test_ws_max_queue_bounds_a_flood_and_loses_nothing(max_queue: int) -> None:
    """A client floods 16 MiB to an application that does not receive: at most ``max_queue``
    messages wait, the parser keeps at most one read unparsed, reading is paused; once the
    application receives, parsing and reading resume and every message arrives, in order."""
    count, size = 4096, 4096
    go = asyncio.Event()
    received: list[bytes] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["bytes"])

    def payload(i: int) -> bytes:
        return i.to_bytes(4, "big") * (size // 4)

    async with uvicorn_server(app, ws_max_queue=max_queue) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
            protocol = only_protocol(server)

            async def flood() -> None:
                for i in range(count):
                    await ws.send(payload(i))

            sender = asyncio.create_task(flood())
            async with asyncio.timeout(10):
                while protocol.queue_size < max_queue or protocol.transport.is_reading():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # the client goes on sending; nothing more is taken
            assert protocol.queue_size == max_queue
            assert protocol.protocol.parsing_stopped
            assert not protocol.transport.is_reading()
            assert protocol.protocol.buffered <= 2**20  # at most what one read brought
            assert not sender.done()  # the rest waits in the client and the kernel
            go.set()
            async with asyncio.timeout(20):
                await sender
                while len(received) < count:
                    await asyncio.sleep(0.01)
            assert protocol.queue_size == 0
    assert len(received) == count
    assert all(message == payload(i) for i, message in enumerate(received))


async def test_without_ws_max_queue_reading_pauses_while_a_message_waits() -> None:
    go = asyncio.Event()
    received: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["text"])

    async with uvicorn_server(app, ws_max_queue=None) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            protocol = only_protocol(server)
            assert protocol.max_queue is None and protocol.protocol.message_budget is None
            await ws.send("m0")
            async with asyncio.timeout(5):
                while protocol.queue_size < 1:
                    await asyncio.sleep(0.01)
            # Reading stops while a message waits: what the client sends next stays in the
            # socket, never in the queue.
            assert not protocol.transport.is_reading()
            for i in range(1, 50):
                await ws.send(f"m{i}")
            await asyncio.sleep(0.1)
            assert protocol.queue_size == 1 and not protocol.transport.is_reading()
            go.set()
            async with asyncio.timeout(5):
                while len(received) < 50:
                    await asyncio.sleep(0.01)
    assert received == [f"m{i}" for i in range(50)]


async def test_pings_while_writing_is_paused_get_one_pong_when_it_resumes() -> None:
    """A client that pings and reads nothing cannot grow the write buffer with pongs."""
    big = b"\x02" * (16 * 2**20)

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": big})  # more than the kernel holds
        await send({"type": "websocket.send", "text": "after"})  # waits for resume_writing
        await receive()

    async with uvicorn_server(app, ws_per_message_deflate=False) as (server, port):
        reader, writer, head = await raw_handshake(port, rcvbuf=4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        protocol = only_protocol(server)
        async with asyncio.timeout(5):
            while not protocol._writing_paused:
                await asyncio.sleep(0.01)
        buffered = protocol.transport.get_write_buffer_size()
        # 200 masked pings (mask 0: payload as is), then a text message that will wait in
        # the queue for receive(): once it is there, every ping before it was handled.
        for i in range(200):
            writer.write(bytes([0x89, 0x84]) + b"\x00" * 4 + struct.pack("!I", i))
        writer.write(bytes([0x81, 0x83]) + b"\x00" * 4 + b"end")
        async with asyncio.timeout(5):
            while protocol.queue_size < 1:
                await asyncio.sleep(0.01)
        assert protocol._writing_paused
        assert protocol.protocol.pong_due == struct.pack("!I", 199)  # deferred, latest only
        assert protocol.transport.get_write_buffer_size() <= buffered  # no pong written
        frames: list[tuple[int, bytes]] = []
        async with asyncio.timeout(10):
            while not frames or frames[-1][0] != 0x1:
                frames.append(await _read_frame(reader))
        writer.close()
    # The big message (maybe in fragments), then one pong for the latest ping, then "after".
    opcodes = [opcode for opcode, _ in frames]
    assert opcodes[0] == 0x2 and set(opcodes[1:-2]) <= {0x0} and opcodes[-2:] == [0xA, 0x1]
    assert b"".join(payload for _, payload in frames[:-2]) == big
    assert frames[-2][1] == struct.pack("!I", 199)
    assert frames[-1][1] == b"after"


# --- failures ---------------------------------------------------------------------------------


async def test_app_error_after_accept_drops_the_connection_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("boom")

    async with uvicorn_server(app) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            with pytest.raises(websockets_exceptions.ConnectionClosedError):
                await ws.recv()
        assert ws.close_code == 1006  # uvicorn's contract (its test_duplicate_handshake)
        assert not server.server_state.tasks
    assert "exception in ASGI application" in caplog.text
    assert "boom" in caplog.text
    assert "never retrieved" not in caplog.text


async def test_app_that_never_accepts_gets_500_on_shutdown() -> None:
    disconnects: list[Message] = []
    connected = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        connected.set()
        disconnects.append(await receive())

    async with uvicorn_server(app) as (server, port):
        reader, writer = await send_upgrade(port)
        await asyncio.wait_for(connected.wait(), 5)
        server.should_exit = True
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert response.startswith(b"HTTP/1.1 500 ")
    assert disconnects == [{"type": "websocket.disconnect", "code": 1006}]


async def test_client_vanishing_mid_message(caplog: pytest.LogCaptureFixture) -> None:
    disconnects: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        disconnects.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.send", "text": "too late"})

    async with uvicorn_server(app) as (server, port):
        _, writer, head = await raw_handshake(port)
        assert head.startswith(b"HTTP/1.1 101 ")
        # A masked binary frame announcing 1000 bytes, of which only 10 arrive.
        writer.write(struct.pack("!BBH", 0x82, 0x80 | 126, 1000) + b"\x00" * 4 + b"x" * 10)
        await writer.drain()
        writer.transport.abort()
        async with asyncio.timeout(5):
            while server.server_state.tasks or not disconnects:
                await asyncio.sleep(0.01)
    assert disconnects == [{"type": "websocket.disconnect", "code": 1006}]
    assert "connection lost without a closing handshake (1006)" in caplog.text


async def test_receive_after_disconnect_returns_disconnect_again() -> None:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        seen.append(await asyncio.wait_for(receive(), 1))

    async with uvicorn_server(app) as (server, port):
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.close(4000, "bye")
        async with asyncio.timeout(5):
            while server.server_state.tasks:
                await asyncio.sleep(0.01)
    expected = {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    assert seen == [expected, expected]


class QuickOpen(UvicornProtocol):
    open_timeout = 0.2


async def test_app_that_never_answers_the_handshake_gets_500_after_open_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome: list[object] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        outcome.append(await receive())  # never accepts; the timeout ends the wait
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            outcome.append(type(exc))

    async with uvicorn_server(app, ws=QuickOpen) as (server, port):
        with pytest.raises(websockets_exceptions.InvalidStatus) as raised:
            await connect(f"ws://127.0.0.1:{port}/")
        async with asyncio.timeout(5):
            while server.server_state.tasks:
                await asyncio.sleep(0.01)
    assert raised.value.response.status_code == 500
    assert outcome == [{"type": "websocket.disconnect", "code": 1006}, ClientDisconnected]
    assert "did not answer the handshake within 0.2 s" in caplog.text


async def test_client_leaving_before_accept_is_noticed() -> None:
    disconnects: list[Message] = []
    connected = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        connected.set()
        disconnects.append(await receive())

    async with uvicorn_server(app) as (server, port):
        _, writer = await send_upgrade(port)
        await asyncio.wait_for(connected.wait(), 5)
        writer.close()
        async with asyncio.timeout(5):
            while not disconnects:
                await asyncio.sleep(0.01)
        assert not server.server_state.connections
    assert disconnects == [{"type": "websocket.disconnect", "code": 1006}]
