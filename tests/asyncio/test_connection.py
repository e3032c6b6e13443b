"""tether client against tether server on 127.0.0.1: every feature of the asyncio layer.

Determinism: every test runs its own server on an ephemeral port, waits on events rather than
sleeping where it can, and is bounded by asyncio.timeout (pytest-timeout is the last resort).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.aio import run
from tether import (
    ConcurrencyError,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionFailed,
    InvalidStatus,
    Limits,
    Request,
    Response,
    ServerConnection,
    broadcast,
    broadcast_and_wait,
    connect,
    serve,
)
from tether.exceptions import InvalidRedirect
from tether.reads import READ_BUFFER_SIZE
from tether.sansio.frames import FrameParser

pytestmark = pytest.mark.timeout(30)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def uri(server: Any, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port_number}{path}"


def test_echo_text_and_binary() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            await ws.send(bytearray(b"ab"))
            assert await ws.recv() == b"ab"
            big = os.urandom(3 * 2**16)
            await ws.send(big)
            assert await ws.recv() == big

    run(main())


def test_client_builds_large_frames_in_one_recycled_buffer() -> None:
    # A client masks every frame; large ones are built in a buffer that asyncio's socket
    # transport hands back once sent in full, so that a stream of large messages does not
    # allocate (and fault in) a fresh frame-sized object each.
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            async with connect(uri(server), compression=None) as ws:
                assert ws.protocol.reuse_output
                buffers = []
                for _ in range(3):
                    big = os.urandom(2**16)  # SPLIT_WRITE_SIZE: one send() on loopback
                    await ws.send(big)
                    assert await ws.recv() == big
                    buffers.append(ws.protocol._spare)
                assert buffers[0] is not None
                assert buffers[1] is buffers[0] and buffers[2] is buffers[0]

    run(main())


def test_negotiation_is_visible_on_both_sides() -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["path"] = ws.request.path
        seen["subprotocol"] = ws.subprotocol
        seen["extensions"] = [e.name for e in ws.extensions]
        seen["remote"] = ws.remote_address
        await ws.send("ready")

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, subprotocols=["chat", "superchat"]) as server:
            async with connect(uri(server, "/room?x=1"), subprotocols=["superchat", "chat"]) as ws:
                assert await ws.recv() == "ready"
                assert ws.subprotocol == "superchat"  # the client's first choice
                assert [e.name for e in ws.extensions] == ["permessage-deflate"]
                assert ws.handshake.accepted_extensions[0][0] == "permessage-deflate"
        assert seen["path"] == "/room?x=1"
        assert seen["subprotocol"] == "superchat"
        assert seen["extensions"] == ["permessage-deflate"]
        assert seen["remote"][0] == "127.0.0.1"

    run(main())


def test_compression_off() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            async with connect(uri(server)) as ws:
                assert ws.extensions == []
                await ws.send("x" * 1000)
                assert await ws.recv() == "x" * 1000

    run(main())


def test_async_iteration_ends_on_normal_close() -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(3):
            await ws.send(str(i))

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            assert [m async for m in ws] == ["0", "1", "2"]
            assert ws.close_code == 1000

    run(main())


def test_handler_exception_closes_with_1011() -> None:
    async def handler(ws: ServerConnection) -> None:
        raise RuntimeError("secret detail")

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1011
            assert "secret" not in info.value.reason

    run(main())


def test_close_code_and_reason_from_client() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] | None = None

    async def handler(ws: ServerConnection) -> None:
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        await ws.wait_closed()
        assert closed is not None
        closed.set_result((ws.close_code, ws.close_reason))

    async def main() -> None:
        nonlocal closed
        closed = asyncio.get_running_loop().create_future()
        async with serve(handler, "127.0.0.1", 0) as server:
            ws = await connect(uri(server))
            await ws.close(1001, "bye")
            assert await closed == (1001, "bye")
            with pytest.raises(ConnectionClosedOK):
                await ws.send("late")

    run(main())


def test_concurrent_recv_is_an_error() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            first = asyncio.create_task(ws.recv())
            await asyncio.sleep(0)
            with pytest.raises(ConcurrencyError):
                await ws.recv()
            await ws.send("a")
            assert await first == "a"

    run(main())


def test_fragmented_send_is_never_interleaved() -> None:
    async def fragments() -> AsyncIterator[str]:
        for piece in ["a", "b", "c"]:
            yield piece
            await asyncio.sleep(0.01)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            task = asyncio.create_task(ws.send(fragments()))
            await asyncio.sleep(0)
            await ws.send("other")  # waits for the fragmented message to end
            await task
            assert await ws.recv() == "abc"
            assert await ws.recv() == "other"
            await ws.send([b"x", b"y"])
            assert await ws.recv() == b"xy"
            with pytest.raises(TypeError):
                await ws.send({"a": 1})

    run(main())


def test_recv_streaming() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(["one ", "two ", "three"])
        await ws.recv()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            pieces = [p async for p in ws.recv_streaming()]
            assert "".join(map(str, pieces)) == "one two three"
            assert len(pieces) == 3
            await ws.send("done")

    run(main())


def test_ping_measures_latency() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            rtt = await (await ws.ping())
            assert 0 <= rtt < 5
            assert ws.latency == rtt
            await (await ws.ping(b"abc"))

    run(main())


def test_process_request_answers_plain_http() -> None:
    def health(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return ws.respond(200, "OK")
        return None

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, process_request=health) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port_number)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await reader.read()
            writer.close()
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert data.endswith(b"\r\n\r\nOK\n")
            # Without upgrade headers and without the hook's answer: 426.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port_number)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await reader.read()
            writer.close()
            assert data.startswith(b"HTTP/1.1 426 ")
            assert b"Upgrade: websocket" in data

    run(main())


def test_refused_handshake_is_a_clear_error() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, origins=["https://good.example"]) as server:
            with pytest.raises(InvalidStatus) as info:
                await connect(uri(server), origin="https://evil.example")
            assert info.value.response.status == 403
            assert b"Origin" in info.value.response.body
            assert "403" in str(info.value)

    run(main())


def test_redirects_are_followed_with_a_fresh_key() -> None:
    keys: list[str] = []

    def redirect(ws: ServerConnection, request: Request) -> Response | None:
        keys.append(request.headers["Sec-WebSocket-Key"])
        if request.path.startswith("/old"):
            response = ws.respond(302, "moved")
            response.headers["Location"] = "/new"
            return response
        if request.path == "/loop":
            response = ws.respond(307, "again")
            response.headers["Location"] = "/loop"
            return response
        return None

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, process_request=redirect) as server:
            async with connect(uri(server, "/old")) as ws:
                assert ws.request is not None
                assert ws.request.path == "/new"
                await ws.send("x")
                assert await ws.recv() == "x"
            assert len(keys) == 2 and keys[0] != keys[1]
            with pytest.raises(InvalidRedirect):
                await connect(uri(server, "/loop"), max_redirects=2)

    run(main())


def test_tls_with_self_signed_certificate() -> None:
    import trustme  # a test dependency (pyproject.toml): missing must fail, not skip

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
            target = f"wss://127.0.0.1:{server.port_number}/"
            async with connect(target, ssl=client_context) as ws:
                await ws.send("secret")
                assert await ws.recv() == "secret"
            # The default context does not trust our CA: a ConnectionFailed (an OSError) whose
            # cause is the certificate error.
            with pytest.raises(ConnectionFailed) as failed:
                await connect(target)
            assert isinstance(failed.value, OSError)
            assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
            assert "certificate verify failed" in str(failed.value)

    run(main())


def _raw_handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def test_keepalive_timeout_closes_with_1011() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.5
        ) as server:
            sock = await asyncio.to_thread(_raw_handshake, server.port_number)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            parser = FrameParser(mask_expected=False)
            frames = []
            while True:  # read without ever answering the ping
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    break
                parser.feed(data)
                while (frame := parser.next_frame()) is not None:
                    frames.append(frame)
            sock.close()
            assert [f.opcode.name for f in frames] == ["PING", "CLOSE"]
            close = frames[-1].data
            assert int.from_bytes(close[:2], "big") == 1011
            assert b"keepalive ping timeout" in close

    run(main())


def test_backpressure_with_a_slow_reader_stays_bounded() -> None:
    # 400 messages of 64 KiB: 25 MiB, well above what loopback socket buffers hold.
    limits = Limits(max_queue=256 * 1024, write_high_water=64 * 1024, write_low_water=16 * 1024)
    size = 64 * 1024
    sent = 0

    async def producer(ws: ServerConnection) -> None:
        nonlocal sent
        chunk = os.urandom(size)
        for _ in range(400):
            await ws.send(chunk)
            sent += 1
        await ws.close()

    async def main() -> None:
        async with serve(producer, "127.0.0.1", 0, limits=limits, compression=None) as server:
            async with connect(uri(server), limits=limits, compression=None) as ws:
                await asyncio.sleep(0.5)  # don't read: the server must stall
                assert 0 < sent < 400
                # Reading pauses once over max_queue: at most one read (READ_BUFFER_SIZE)
                # more is held, queued or not parsed yet.
                assert ws.bytes_held <= limits.max_queue + READ_BUFFER_SIZE
                received = 0
                async for message in ws:
                    received += len(message)
                assert received == 400 * size
                assert sent == 400

    run(main())


def test_graceful_shutdown_every_client_sees_1001() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        server = await serve(handler, "127.0.0.1", 0)
        target = uri(server)
        clients = [await connect(target) for _ in range(3)]
        assert len(server.connections) == 3
        server.close()
        await server.wait_closed()
        for ws in clients:
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1001
        with pytest.raises(OSError):
            await connect(target, open_timeout=2)

    run(main())


def test_broadcast_reaches_everyone_and_encodes_once() -> None:
    ready = 0
    all_ready: asyncio.Event | None = None

    async def handler(ws: ServerConnection) -> None:
        nonlocal ready
        ready += 1
        if ready == 3 and all_ready is not None:
            all_ready.set()
        await ws.wait_closed()

    async def main() -> None:
        nonlocal all_ready
        all_ready = asyncio.Event()
        compression = "small"  # no context takeover on the server side: compress once
        async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
            clients = [await connect(uri(server)) for _ in range(3)]
            await all_ready.wait()
            message = "broadcast " * 100
            count = broadcast(server.connections, message)
            assert count == 3
            for ws in clients:
                assert await ws.recv() == message
                await ws.close()

    run(main())


def test_broadcast_policy_validation() -> None:
    with pytest.raises(ValueError):
        broadcast([], "x", slow="maybe")  # type: ignore[arg-type]


def test_handshake_timeout_drops_silent_clients() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, open_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port_number)
            writer.write(b"GET / HTTP/1.1\r\n")  # and nothing more
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_handshake_timeout_applies_to_each_connection_from_its_own_start() -> None:
    # One server-wide timer enforces every connection's deadline: it must re-arm for the
    # connections opened after the first, and spare those whose handshake is done.
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, open_timeout=0.3) as server:
            port = server.port_number
            first = await asyncio.open_connection("127.0.0.1", port)
            first[1].write(b"GET / HTTP/1.1\r\n")
            await asyncio.sleep(0.15)
            second = await asyncio.open_connection("127.0.0.1", port)
            second[1].write(b"GET / HTTP/1.1\r\n")
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                assert await first[0].read() == b""
                assert await second[0].read() == b""
                assert not server._opening
                await ws.send("still here")
                assert await ws.recv() == "still here"
            for _, writer in (first, second):
                writer.close()

    run(main())


def test_server_drops_clients_that_keep_the_socket_open_after_a_response() -> None:
    def health(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(200, "OK")

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, process_request=health, close_timeout=0.3) as server:
            sock = socket.create_connection(("127.0.0.1", server.port_number))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            data = b""
            while chunk := await loop.sock_recv(sock, 4096):  # EOF after the response
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            # We never close our side: the server must not wait forever.
            async with asyncio.timeout(3):
                while server.connections:
                    await asyncio.sleep(0.05)
            sock.close()

    run(main())


def _stalled_client(port: int) -> socket.socket:
    """A client that completes the handshake, then never reads: its buffers fill up."""
    sock = _raw_handshake(port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.mark.parametrize("policy", ["skip", "drop"])
def test_broadcast_slow_consumer_policy(policy: str) -> None:
    limits = Limits(write_high_water=32 * 1024, write_low_water=8 * 1024)

    async def main() -> None:
        ready = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            ready.set()
            await ws.wait_closed()

        async with serve(
            handler, "127.0.0.1", 0, limits=limits, compression=None, close_timeout=0.5
        ) as server:
            sock = await asyncio.to_thread(_stalled_client, server.port_number)
            await ready.wait()
            (connection,) = server.connections
            message = os.urandom(256 * 1024)
            counts = []
            for _ in range(64):  # 16 MiB: far more than the socket buffers hold
                counts.append(broadcast(server.connections, message, slow=policy))  # type: ignore[arg-type]
                await asyncio.sleep(0)
                if connection.writing_paused or connection.state.name != "OPEN":
                    break
            assert counts[0] == 1
            # The slow client is now over the high-water mark.
            count = broadcast(server.connections, message, slow=policy)  # type: ignore[arg-type]
            assert count == 0
            if policy == "drop":
                assert connection.protocol.close_sent is not None
                assert connection.protocol.close_sent.code == 1008
            else:
                assert connection.state.name == "OPEN"
            sock.close()

    run(main())


def test_broadcast_wait_policy_waits_for_the_buffer_to_drain() -> None:
    limits = Limits(write_high_water=32 * 1024, write_low_water=8 * 1024)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, limits=limits, compression=None) as server:
            async with connect(uri(server), compression=None) as ws:
                while not server.connections:
                    await asyncio.sleep(0.01)
                message = os.urandom(256 * 1024)
                # Several times the high-water mark: each call waits for the drain, and the
                # client, reading concurrently, receives everything.
                received: list[bytes] = []

                async def read() -> None:
                    for _ in range(8):
                        received.append(await ws.recv())  # type: ignore[arg-type]

                reader = asyncio.create_task(read())
                for _ in range(8):
                    assert await broadcast_and_wait(server.connections, message) == 1
                await reader
                assert received == [message] * 8

    run(main())


def test_works_on_uvloop() -> None:
    import uvloop  # a test dependency (pyproject.toml): missing must fail, not skip

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, connect(uri(server)) as ws:
            assert "uvloop" in type(asyncio.get_running_loop()).__module__
            await ws.send("fast")
            assert await ws.recv() == "fast"
            assert await (await ws.ping()) >= 0

    async def bounded() -> None:
        async with asyncio.timeout(20):
            await main()

    uvloop.run(bounded())


def test_echo_of_a_message_goes_out_before_failing_on_what_follows_it() -> None:
    """Autobahn 3.2 strictly: a valid message and a bad frame arrive together; the server
    answers the message before it fails the connection (1002)."""
    from tether.sansio.codes import Opcode
    from tether.sansio.frames import Frame, serialize_frame

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            sock = await asyncio.to_thread(_raw_handshake, server.port_number)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(
                sock,
                serialize_frame(Frame(Opcode.TEXT, b"Hello"), mask=True)
                + serialize_frame(Frame(Opcode.TEXT, b"bad", rsv2=True), mask=True)
                + serialize_frame(Frame(Opcode.PING, b""), mask=True),
            )
            parser = FrameParser(mask_expected=False)
            frames = []
            while data := await loop.sock_recv(sock, 4096):
                parser.feed(data)
                while (frame := parser.next_frame()) is not None:
                    frames.append(frame)
            sock.close()
            assert [(f.opcode.name, f.data[:5]) for f in frames] == [
                ("TEXT", b"Hello"),
                ("CLOSE", b"\x03\xeareserved bits"[:5]),
            ]

    run(main())


def test_client_open_timeout_bounds_a_silent_server() -> None:
    async def main() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # accept the TCP connection, never answer the request

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        assert loop.time() - start < 3
        assert len(accepted) == 1
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

    run(main())
