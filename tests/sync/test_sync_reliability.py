"""Issue 16's experiments against the threading server: a healthy peer is never blamed because
the application does not read, a peer's close is answered, and a ping flood whose pongs are
never read costs no memory (the sync equivalents of tests/asyncio/test_reliability.py).

A raw-socket client plays each experiment (it sends exactly the bytes it is told to), against
a tether.sync server on 127.0.0.1. Every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import threading
import time
import tracemalloc

import pytest

from helpers.sync_server import running, tls_contexts
from tether import Limits
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame
from tether.sync import ServerConnection

pytestmark = pytest.mark.timeout(30)


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return serialize_frame(Frame(opcode, data, fin), mask=True)


class RawClient:
    """A WebSocket client on a blocking socket; every read waits at most ``timeout``."""

    def __init__(
        self,
        port: int,
        *,
        timeout: float = 5,
        rcvbuf: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname="127.0.0.1")
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, "connection closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 ")
        self.sock = sock
        self.parser = FrameParser(mask_expected=False, max_frame_size=2**24)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_frame(self) -> Frame | None:
        """The next frame from the server; ``None`` at EOF (``TimeoutError`` if none comes)."""
        while (frame := self.parser.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.parser.feed(data)
        return frame

    def close(self) -> None:
        self.sock.close()


def close_code(frame: Frame) -> int:
    assert frame.opcode is Opcode.CLOSE, frame
    return int.from_bytes(frame.data[:2], "big")


def only_connection(server: object) -> ServerConnection:
    deadline = time.monotonic() + 5
    while not server.connections and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    (connection,) = server.connections  # type: ignore[attr-defined]
    return connection  # type: ignore[no-any-return]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


# --- 1. a handler that only sends does not get a healthy client killed -----------------------


def test_send_only_handler_keeps_a_client_that_answers_pings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()

    def ticker(ws: ServerConnection) -> None:
        while not stop.is_set():
            ws.send("tick")
            time.sleep(0.02)

    with (
        caplog.at_level(logging.INFO, logger="tether"),
        running(ticker, ping_interval=0.05, ping_timeout=0.1, compression=None) as server,
    ):
        client = RawClient(server.port_number, timeout=1)
        try:
            client.send(masked(Opcode.TEXT, b"subscribe"))  # never read by the handler
            pings = 0
            while pings < 10:  # ten keepalive rounds, each answered at once
                frame = client.next_frame()
                assert frame is not None and frame.opcode is not Opcode.CLOSE, frame
                if frame.opcode is Opcode.PING:
                    pings += 1
                    client.send(masked(Opcode.PONG, frame.data))
            assert only_connection(server).state.name == "OPEN"
        finally:
            stop.set()
            client.close()
    no_tracebacks(caplog)


def test_close_behind_an_unread_message_is_answered_with_1000() -> None:
    """The handler waits in wait_closed() (it is not going to read): the close frame behind
    the message it never takes is answered with 1000, long before the close timeout."""

    def never_reads(ws: ServerConnection) -> None:
        ws.wait_closed()

    with running(never_reads, close_timeout=60, compression=None) as server:
        client = RawClient(server.port_number, timeout=2)
        try:
            client.send(masked(Opcode.TEXT, b"unread") + masked(Opcode.CLOSE, b"\x03\xe8"))
            frame = client.next_frame()
            assert frame is not None and close_code(frame) == 1000
            assert client.next_frame() is None  # and the server closes TCP
        finally:
            client.close()


def test_close_behind_an_unread_message_is_answered_while_the_handler_is_busy() -> None:
    """A handler that neither reads nor waits: the held close is acted on once it has stayed
    out of recv() for IDLE_READ_DELAY, well within the peer's close timeout."""
    stop = threading.Event()

    def busy(ws: ServerConnection) -> None:
        stop.wait(10)

    with running(busy, compression=None) as server:
        client = RawClient(server.port_number, timeout=2)
        try:
            client.send(masked(Opcode.TEXT, b"unread") + masked(Opcode.CLOSE, b"\x03\xe8"))
            frame = client.next_frame()
            assert frame is not None and close_code(frame) == 1000
            assert client.next_frame() is None
        finally:
            stop.set()
            client.close()


def test_close_behind_unread_messages_over_max_queue_is_answered() -> None:
    """The queue is over max_queue (reading stops: the bound wins), but the close frame that
    arrived with the messages was parsed and held: it is answered all the same."""
    stop = threading.Event()

    def busy(ws: ServerConnection) -> None:
        stop.wait(10)

    limits = Limits(max_queue=1024)
    with running(busy, limits=limits, close_timeout=60, compression=None) as server:
        client = RawClient(server.port_number, timeout=2)
        try:
            client.send(
                masked(Opcode.BINARY, b"x" * 2048)
                + masked(Opcode.BINARY, b"y" * 2048)
                + masked(Opcode.CLOSE, b"\x03\xe8")
            )
            frame = client.next_frame()
            assert frame is not None and close_code(frame) == 1000
            connection = only_connection(server)
            assert connection._assembler.complete == 2  # unread, still queued
            assert connection.bytes_held == 4096
        finally:
            stop.set()
            client.close()


def test_echo_of_a_message_goes_out_before_the_answer_to_a_close_behind_it() -> None:
    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with running(echo, compression=None) as server:
        client = RawClient(server.port_number)
        try:
            client.send(masked(Opcode.TEXT, b"one") + masked(Opcode.CLOSE, b"\x03\xe8"))
            frames = []
            while (frame := client.next_frame()) is not None:
                frames.append(frame)
            assert [(f.opcode.name, f.data) for f in frames] == [
                ("TEXT", b"one"),
                ("CLOSE", b"\x03\xe8"),
            ]
        finally:
            client.close()


# --- 4. a ping flood whose pongs are never read does not grow memory ------------------------


def test_ping_flood_while_a_send_blocks_defers_pongs(caplog: pytest.LogCaptureFixture) -> None:
    """The handler's send() blocks on a client that does not read, while the client floods
    pings: the background thread reads them all, and answers only the latest once the send is
    done (RFC 6455 5.5.3), as asyncio does above the write buffer's high-water mark."""
    pings = 5_000
    big = os.urandom(4 * 2**20)
    sent = threading.Event()

    def sender(ws: ServerConnection) -> None:
        sock = ws.transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ws.send(big)  # blocks until the client reads
        sent.set()
        ws.wait_closed(10)

    with (
        caplog.at_level(logging.INFO, logger="tether"),
        running(sender, ping_interval=None, compression=None) as server,
    ):
        client = RawClient(server.port_number, timeout=5, rcvbuf=4096)
        try:
            connection = only_connection(server)
            flood = b"".join(masked(Opcode.PING, b"%08d" % n) for n in range(pings))
            client.send(flood)  # 70 KB: the server reads it while its send() is blocked
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with connection._mutex:
                    if connection.protocol.pong_due == b"%08d" % (pings - 1):
                        break
                time.sleep(0.01)
            with connection._mutex:
                assert connection.protocol.pong_due == b"%08d" % (pings - 1)
                assert not sent.is_set()
                # Nothing queued for the blocked writer but what it is writing.
                assert sum(len(data) for data in connection._out) <= 16
            # Read everything: the message, then one pong for the latest ping.
            frames = []
            received = 0
            while True:
                frame = client.next_frame()
                assert frame is not None
                frames.append(frame.opcode)
                if frame.opcode is Opcode.BINARY:
                    received += len(frame.data)
                if frame.opcode is Opcode.PONG:
                    assert frame.data == b"%08d" % (pings - 1)
                    break
            assert received == len(big)
            assert frames.count(Opcode.PONG) == 1
            assert sent.wait(5)
        finally:
            client.close()
    no_tracebacks(caplog)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_ping_flood_with_unread_pongs_does_not_block_recv_or_grow_memory(
    caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """The client floods pings and never reads; the handler is in recv(). Its pongs fill the
    socket buffers at once: recv() must go on reading (a reader never blocks on a write), and
    the pongs it cannot write are not queued one by one (only the latest is kept)."""
    server_context, client_context = tls_contexts() if tls else (None, None)
    pings = 20_000  # 260 KB of pings, 140 KB of pongs that the client never reads
    flood = masked(Opcode.PING, b"p" * 8) * pings + masked(Opcode.TEXT, b"end")
    received: list[object] = []
    grown: list[int] = []

    def handler(ws: ServerConnection) -> None:
        ws.transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            received.append(ws.recv(timeout=10))  # every ping before it was handled
            grown.append(tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()
        ws.wait_closed(10)

    with (
        caplog.at_level(logging.INFO, logger="tether"),
        running(handler, ping_interval=None, compression=None, ssl=server_context) as server,
    ):
        client = RawClient(server.port_number, timeout=10, rcvbuf=4096, ssl_context=client_context)
        try:
            client.send(flood)
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.01)
            assert received == ["end"]
            # The bound: the socket buffers hold the pongs written; memory does not grow with
            # the pongs that could not be written.
            assert grown[0] < 256 * 1024, grown
        finally:
            client.close()
    no_tracebacks(caplog)
