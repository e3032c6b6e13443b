"""tether.sync client against tether.sync server on 127.0.0.1: the connection's features.

Every test runs its own server on an ephemeral port and is bounded by timeouts on each wait;
the folder's leak check runs after each one.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from typing import Any

import pytest

from helpers.sync_server import running, uri
from tether import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Limits,
)
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame
from tether.sync import ServerConnection, connect

pytestmark = pytest.mark.timeout(30)


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def raw_handshake(port: int, extra: bytes = b"") -> socket.socket:
    """A raw client socket after a successful opening handshake."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def read_frames(sock: socket.socket) -> list[Frame]:
    """Every frame the server sends until it closes the TCP connection."""
    parser = FrameParser(mask_expected=False)
    frames = []
    while data := sock.recv(65536):
        parser.feed(data)
        while (frame := parser.next_frame()) is not None:
            frames.append(frame)
    return frames


def close_code(frame: Frame) -> int:
    assert frame.opcode is Opcode.CLOSE
    return int.from_bytes(frame.data[:2], "big")


# --- messages -------------------------------------------------------------------------------------


def test_echo_text_binary_and_iteration_ends_on_normal_close() -> None:
    with running(echo) as server, connect(uri(server)) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        ws.send(bytearray(b"ba"))
        assert ws.recv() == b"ba"
        ws.send(memoryview(b"mv"))
        assert ws.recv() == b"mv"
        big = os.urandom(300_000)
        ws.send(big)
        assert ws.recv() == big
        ws.close()
        assert list(ws) == []
        assert ws.close_code == 1000
        assert ws.close_reason == ""


def test_negotiation_is_visible_on_both_sides() -> None:
    seen: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        seen.append((ws.subprotocol, [e.name for e in ws.extensions], ws.request))
        echo(ws)

    with (
        running(handler, subprotocols=["chat.v2", "chat"]) as server,
        connect(uri(server, "/room?x=1"), subprotocols=["chat", "chat.v2"]) as ws,
    ):
        ws.send("x")
        ws.recv()
        assert ws.subprotocol == "chat"
        assert [e.name for e in ws.extensions] == ["permessage-deflate"]
        assert ws.response is not None and ws.response.status == 101
        [(subprotocol, extensions, request)] = seen
        assert subprotocol == "chat"
        assert extensions == ["permessage-deflate"]
        assert request.path == "/room?x=1"


@pytest.mark.parametrize("preset", ["deflate", "balanced", "small", "fast", "max", None])
def test_compression_presets(preset: str | None) -> None:
    text = '{"user": "alice", "text": "hello"}\n' * 2000
    with (
        running(echo, compression=preset) as server,
        connect(uri(server), compression=preset) as ws,
    ):
        ws.send(text)
        assert ws.recv() == text
        assert bool(ws.extensions) == (preset is not None)


def test_fragmented_send_from_an_iterable_and_recv_streaming() -> None:
    def handler(ws: ServerConnection) -> None:
        for _ in range(2):
            pieces = list(ws.recv_streaming())
            ws.send(pieces)  # echo fragment by fragment
        ws.send(["a", b"b"])  # mixed types: a TypeError in the handler -> 1011

    with running(handler) as server, connect(uri(server)) as ws:
        ws.send(["hé", "ll", "o"])
        assert list(ws.recv_streaming()) == ["hé", "ll", "o"]
        ws.send(iter([b"\x00", b"\x01"]))
        assert ws.recv() == b"\x00\x01"
        assert ws.recv() == "a"  # the message was finished with an empty fragment
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv()
        assert caught.value.code == 1011


def test_recv_decode_and_send_text_as_in_asyncio() -> None:
    """recv(decode=...) and send(text=...) with the asyncio layer's names and meaning: the
    handler reports each message's type as it arrived, then echoes as asked."""

    def handler(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(type(message).__name__)
            ws.send(message)

    with running(handler) as server, connect(uri(server)) as ws:
        ws.send(b"caf\xc3\xa9", text=True)  # bytes sent as text
        assert ws.recv() == "str"
        assert ws.recv(decode=False) == b"caf\xc3\xa9"  # and received back as bytes
        ws.send("café", text=False)  # str sent as binary
        assert ws.recv() == "bytes"
        assert ws.recv(timeout=5, decode=True) == "café"
        ws.send("plain")
        assert ws.recv() == "str"
        assert ws.recv(None, None) == "plain"  # positional: timeout, then decode
        # Fragmented: text=False sends str fragments as one binary message; the é is split
        # across fragments, and recv_streaming(decode=True) decodes it whole.
        ws.send(["caf", "\u00e9!"], text=False)
        assert ws.recv() == "bytes"
        assert ws.recv() == "café!".encode()
        ws.send([b"caf\xc3", b"\xa9"], text=True)
        assert ws.recv() == "str"
        assert ws.recv() == "café"
        ws.send([b"caf\xc3", b"\xa9"])
        assert ws.recv() == "bytes"
        assert ws.recv() == "café".encode()

    def streamer(ws: ServerConnection) -> None:
        ws.send([b"caf\xc3", b"\xa9"])  # a binary message, é split across two fragments
        ws.send(["caf", "é"])
        ws.send(b"\xff")  # not UTF-8
        ws.send("after")
        ws.wait_closed(5)

    with running(streamer) as server, connect(uri(server)) as ws:
        assert list(ws.recv_streaming(decode=True)) == ["caf", "é"]
        assert list(ws.recv_streaming(timeout=5, decode=False)) == [b"caf", "é".encode()]
        with pytest.raises(UnicodeDecodeError):
            ws.recv(decode=True)
        assert ws.recv() == "after"  # the bad message was consumed; the connection is usable


def test_send_rejects_what_is_not_a_message() -> None:
    with running(echo) as server, connect(uri(server)) as ws:
        with pytest.raises(TypeError, match=r"json\.dumps"):
            ws.send({"a": 1})
        with pytest.raises(TypeError):
            ws.send(42)  # type: ignore[arg-type]
        ws.send("still open")
        assert ws.recv() == "still open"


# --- timeouts and threads -------------------------------------------------------------------------


def test_recv_timeout_leaves_the_connection_usable() -> None:
    release = threading.Event()

    def fragments() -> Any:
        # The first half of a fragmented message, then a pause longer than the timeout.
        yield "hel"
        yield ""
        release.wait(5)
        yield "lo"

    def handler(ws: ServerConnection) -> None:
        ws.recv()
        ws.send(fragments())
        echo(ws)

    with running(handler) as server, connect(uri(server)) as ws:
        ws.send("go")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        assert time.monotonic() - start >= 0.2
        release.set()
        assert ws.recv(timeout=5) == "hello"
        ws.send("again")
        assert ws.recv(timeout=5) == "again"


def test_concurrent_recv_is_an_error() -> None:
    with running(echo) as server, connect(uri(server)) as ws:
        errors: list[Any] = []
        blocked = threading.Thread(target=lambda: errors.append(ws.recv()))
        blocked.start()
        deadline = time.monotonic() + 5
        while not ws._recv_busy and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(ConcurrencyError):
            ws.recv()
        with pytest.raises(ConcurrencyError):
            next(ws.recv_streaming())
        ws.send("for the blocked thread")
        blocked.join(5)
        assert errors == ["for the blocked thread"]


def test_send_from_other_threads_while_one_thread_blocks_in_recv() -> None:
    with running(echo) as server, connect(uri(server)) as ws:
        received: list[Any] = []
        reader = threading.Thread(target=lambda: received.extend(ws.recv() for _ in range(40)))
        reader.start()

        def send_ten(n: int) -> None:
            for i in range(10):
                ws.send(f"{n}-{i}")

        senders = [threading.Thread(target=send_ten, args=(n,)) for n in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(10)
        reader.join(10)
        assert sorted(received) == sorted(f"{n}-{i}" for n in range(4) for i in range(10))


def test_fragmented_messages_from_many_threads_are_never_interleaved() -> None:
    with running(echo, compression=None) as server, connect(uri(server), compression=None) as ws:

        def sender(n: int) -> None:
            for i in range(20):
                if i % 2:
                    ws.send([f"<{n}.{i}", "-" * 100, f"{n}.{i}>"])
                else:
                    ws.send(f"<{n}.{i}-{n}.{i}>")

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        messages = [ws.recv(timeout=10) for _ in range(80)]
        for thread in threads:
            thread.join(10)
        for message in messages:
            assert isinstance(message, str)
            head, tail = message[1:].split("-", 1)
            assert tail.strip("-")[:-1] == head


# --- ping, pong, keepalive ------------------------------------------------------------------------


def test_ping_returns_a_future_of_the_round_trip_time() -> None:
    with running(echo) as server, connect(uri(server)) as ws:
        latency = ws.ping().result(timeout=5)
        assert 0 < latency < 5
        assert ws.latency == latency
        assert ws.ping("custom").result(timeout=5) > 0
        ws.pong("heartbeat")  # unsolicited: no answer expected
        ws.send("still fine")
        assert ws.recv() == "still fine"
    pending = ws._pings
    assert pending == {}


def test_a_ping_callback_may_use_the_connection() -> None:
    """Futures run their callbacks where they are resolved: in a thread that was reading.
    They are resolved outside the connection's lock, so a callback may send."""
    with running(echo) as server, connect(uri(server)) as ws:
        sent = threading.Event()

        def callback(future: Any) -> None:
            ws.send(f"pong after {future.result():.0f} s")
            sent.set()

        ws.ping().add_done_callback(callback)
        assert sent.wait(5)
        assert ws.recv(timeout=5) == "pong after 0 s"


def test_keepalive_is_answered_while_neither_application_reads() -> None:
    """Both ends ping every 0.1 s and give up after 0.5 s; neither application reads for 1 s.
    The background threads answer the pings, so the connection stays open."""
    done = threading.Event()
    latencies: list[float] = []

    def handler(ws: ServerConnection) -> None:
        done.wait(5)
        latencies.append(ws.latency)
        ws.send("bye")

    with (
        running(handler, ping_interval=0.1, ping_timeout=0.5) as server,
        connect(uri(server), ping_interval=0.1, ping_timeout=0.5) as ws,
    ):
        time.sleep(1)
        assert ws.state.name == "OPEN"
        assert ws.latency > 0
        done.set()
        assert ws.recv(timeout=5) == "bye"
    assert latencies and latencies[0] > 0


def test_keepalive_timeout_closes_with_1011() -> None:
    closed = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.wait_closed(5)
        closed.set()

    with running(handler, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.5) as server:
        sock = raw_handshake(server.port_number)
        frames = read_frames(sock)  # never answering the ping
        sock.close()
        assert [f.opcode.name for f in frames] == ["PING", "CLOSE"]
        assert close_code(frames[-1]) == 1011
        assert b"keepalive ping timeout" in frames[-1].data
        assert closed.wait(5)


# --- closing --------------------------------------------------------------------------------------


def test_close_codes_and_reasons_both_ways() -> None:
    seen: list[tuple[int | None, str | None]] = []

    def handler(ws: ServerConnection) -> None:
        message = ws.recv()
        if message == "close me":
            ws.close(4000, "as asked")
        else:
            with pytest.raises(ConnectionClosedOK):
                ws.recv()
            seen.append((ws.close_code, ws.close_reason))

    with running(handler) as server:
        with connect(uri(server)) as ws:
            ws.send("close me")
            with pytest.raises(ConnectionClosedError) as caught:
                ws.recv()
            assert (caught.value.code, caught.value.reason) == (4000, "as asked")
            assert (ws.close_code, ws.close_reason) == (4000, "as asked")
        with connect(uri(server)) as ws:
            ws.send("wait")
            ws.close(1001, "going")
            with pytest.raises(ConnectionClosedOK):
                ws.send("too late")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [(1001, "going")]


def test_handler_exception_closes_with_1011() -> None:
    def handler(ws: ServerConnection) -> None:
        raise RuntimeError("boom")

    with running(handler) as server, connect(uri(server)) as ws:
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv(timeout=5)
        assert caught.value.code == 1011


def test_close_is_bounded_by_close_timeout_when_the_peer_never_answers() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def fake_server() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        from tether.sansio.handshake import accept_key

        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
        )

    thread = threading.Thread(target=fake_server)
    thread.start()
    ws = connect(f"ws://127.0.0.1:{port}/", close_timeout=0.3, compression=None)
    thread.join(5)
    waiter = ws.ping("unanswered")
    with pytest.raises(ConcurrencyError):
        ws.ping("unanswered")
    time.sleep(0.2)  # the background thread now waits in the socket (until the next ping, 20 s)
    start = time.monotonic()
    ws.close()  # the fake server never answers the close frame
    assert time.monotonic() - start < 2
    assert ws.close_code == 1006
    with pytest.raises(ConnectionClosedError):
        waiter.result(timeout=1)
    for conn in accepted:
        conn.close()
    listener.close()


def test_send_after_the_peer_reset_raises() -> None:
    """A send() blocked on a peer that does not read fails when the peer goes away, instead
    of reporting success for bytes that were dropped."""
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def handler(ws: ServerConnection) -> None:
        chunk = os.urandom(64 * 1024)
        started.set()
        try:
            for _ in range(10_000):
                ws.send(chunk)
        except ConnectionClosed as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    with running(handler, compression=None) as server:
        sock = raw_handshake(server.port_number)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert started.wait(5)
        time.sleep(0.3)  # the handler now blocks in send(): the kernel buffers are full
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedError)


# --- flow control ---------------------------------------------------------------------------------


def test_a_slow_reader_bounds_memory_and_a_slow_peer_blocks_send() -> None:
    limits = Limits(max_queue=256 * 1024)
    size = 64 * 1024
    sent = 0
    server_side: list[ServerConnection] = []

    def producer(ws: ServerConnection) -> None:
        nonlocal sent
        server_side.append(ws)
        chunk = os.urandom(size)
        for _ in range(400):  # 25 MiB: far more than the socket buffers hold
            ws.send(chunk)
            sent += 1
        ws.close()

    with (
        running(producer, limits=limits, compression=None) as server,
        connect(uri(server), limits=limits, compression=None) as ws,
    ):
        time.sleep(0.5)  # don't read: the background thread stops reading, the server stalls
        assert 0 < sent < 400
        # The client holds at most max_queue and one message; the blocked server holds at most
        # the message it is sending.
        assert ws._assembler.size + ws.protocol.buffered <= limits.max_queue + size
        assert sum(len(data) for data in server_side[0]._out) <= size + 16
        received = 0
        for message in ws:
            received += len(message)
        assert received == 400 * size
        assert sent == 400


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (serialize_frame(Frame(Opcode.TEXT, b"\xff\xfe"), mask=True), 1007),
        (serialize_frame(Frame(Opcode.TEXT, b"ok", rsv2=True), mask=True), 1002),
        (serialize_frame(Frame(Opcode.CONT, b"orphan"), mask=True), 1002),
        (serialize_frame(Frame(Opcode.BINARY, b"x" * 2000), mask=True), 1009),
        (b"\x89\xfe\x00\x7e\x00\x00\x00\x00" + b"x" * 126, 1002),  # a 126-byte ping
        (serialize_frame(Frame(Opcode.TEXT, b"x"), mask=False), 1002),  # not masked
    ],
    ids=["invalid-utf8", "reserved-bit", "orphan-continuation", "too-big", "long-ping", "unmasked"],
)
def test_bad_frames_close_with_the_asyncio_codes(data: bytes, code: int) -> None:
    limits = Limits(max_message_size=1000)
    with running(echo, limits=limits, compression=None) as server:
        sock = raw_handshake(server.port_number)
        try:
            sock.sendall(data)
            received = read_frames(sock)
        finally:
            sock.close()
        assert close_code(received[-1]) == code


def test_the_echo_of_a_message_goes_out_before_failing_on_what_follows_it() -> None:
    """Autobahn 3.2 strictly: a valid message and a bad frame arrive together; the server
    answers the message before it fails the connection (1002)."""
    with running(echo, compression=None) as server:
        sock = raw_handshake(server.port_number)
        sock.sendall(
            serialize_frame(Frame(Opcode.TEXT, b"Hello"), mask=True)
            + serialize_frame(Frame(Opcode.TEXT, b"bad", rsv2=True), mask=True)
            + serialize_frame(Frame(Opcode.PING, b""), mask=True)
        )
        frames = read_frames(sock)
        sock.close()
        assert [(f.opcode.name, f.data[:5]) for f in frames] == [
            ("TEXT", b"Hello"),
            ("CLOSE", b"\x03\xeareserved bits"[:5]),
        ]


def test_abrupt_resets_leave_nothing_behind() -> None:
    """Clients that reset in the middle of a message, after the handshake and during it: the
    server's threads and sockets go away (the folder's leak check counts them)."""
    with running(echo, compression=None) as server:
        for n in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port_number), timeout=5)
            if n % 2:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a partial request
            else:
                sock.close()
                sock = raw_handshake(server.port_number)
                frame = serialize_frame(Frame(Opcode.BINARY, os.urandom(100_000)), mask=True)
                sock.sendall(frame[:50_000])  # half a frame
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()
        deadline = time.monotonic() + 5
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.connections


def test_recv_waiting_for_the_background_read_is_woken_when_that_read_times_out() -> None:
    # The background thread reads for an application away from recv(), with a timeout (its next
    # keepalive deadline). An application that came back to recv() meanwhile waits for that
    # read; when it times out with nothing read, the application must take over the reading,
    # or the message that arrives next is never read (a lost wakeup: recv() timed out with the
    # message in the socket, and keepalive pongs went unread).
    go = threading.Event()

    def late(ws: ServerConnection) -> None:
        go.wait(10)
        ws.send("late")
        for _ in ws:
            pass

    with running(late) as server, connect(uri(server), ping_interval=None) as ws:
        # Every read of the background thread times out after 0.3 s.
        ws._next_deadline = lambda now: 0.3  # type: ignore[method-assign]
        for _ in range(500):  # until the background thread holds the read role
            with ws._mutex:
                if ws._reading and not ws._recv_busy:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the background thread never read")
        # recv() waits for the background read, which times out; the message comes after.
        threading.Timer(1.0, go.set).start()
        assert ws.recv(timeout=5) == "late"
