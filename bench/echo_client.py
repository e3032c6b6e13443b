"""Load generator for ``bench/echo.py``: closed-loop echo round trips against one server.

Usage (normally started by echo.py, which talks to it over stdin/stdout)::

    python bench/echo_client.py --port N [--client raw|websockets|tether|aiohttp]
        [--compression] [--text]

Control lines on stdin, answers on stdout:

- ``CELL {"size": S, "conns": C}``: open C connections (handshake included), build the
  message; answer ``READY``.
- ``GO``: every connection starts its closed loop: send one message, wait for the whole echo,
  count it, send the next.
- ``MARK``: answer ``MARK {"count": n, "time": t, "cpu": c}`` (messages echoed so far, monotonic
  time, this process's CPU seconds). The rate of a cell is taken between two marks, so the
  warm-up before the first mark is not measured.
- ``STOP``: stop sending, wait for the echoes in flight, close every connection (close frame,
  then TCP); answer ``DONE``.
- EOF: exit.

The ``raw`` client (the default) is the fixed, cheap client used to compare servers. It is a
bare ``asyncio.Protocol``: the masked frame is built once per cell (one random masking key per
cell, shared by all connections; the key does not change the server's work), and replies are
not unmasked, decoded or copied: the client reads each frame header and counts payload bytes
until the frame ends. Per round trip that is a few dozen bytecodes plus one ``write``, which
keeps the client well below the server's CPU use (echo.py shows both). With ``--compression``
it offers ``permessage-deflate; client_no_context_takeover``, sends a message compressed once
in advance (RSV1 set), and counts the compressed replies without inflating them, so the
server's inflate and deflate are measured and the client's are not.

The library clients (``websockets``, ``tether``, ``aiohttp``) run ``send(); recv()`` in one
task per connection; they are there to compare clients against one fixed server. The threading
clients (``tether-sync``, ``websockets-sync``, and ``websocket-client``, which has no
permessage-deflate) run ``send(); recv()`` in one thread per connection; their CPU time is the
whole process's, every thread included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

# The tether under test: this checkout, unless echo.py --tether-src points elsewhere.
sys.path.insert(
    0, os.environ.get("TETHER_BENCH_SRC") or str(Path(__file__).resolve().parent.parent / "src")
)

#: Same limit as the servers (echo_servers.MAX_SIZE).
MAX_SIZE = 2 * 2**20

CLIENTS = (
    "raw",
    "raw-asyncio",
    "websockets",
    "tether",
    "tether-callback",
    "aiohttp",
    "picows",
    "tether-sync",
    "websockets-sync",
    "websocket-client",
)
#: Clients that block: one thread per connection, no event loop.
THREADED_CLIENTS = ("tether-sync", "websockets-sync", "websocket-client")


def make_payload(size: int, *, text: bool, compressible: bool) -> bytes:
    """The message sent in a cell: random bytes, or for compression rows (and text) a
    deterministic, somewhat repetitive ASCII text (JSON-like records)."""
    if not text and not compressible:
        return os.urandom(size)
    records = []
    total = 0
    i = 0
    while total < size:
        record = f'{{"id":{i},"name":"user{i % 97}","score":{(i * 7919) % 1000},"ok":true}}\n'
        records.append(record)
        total += len(record)
        i += 1
    return "".join(records).encode()[:size]


def masked_frame(payload: bytes, *, opcode: int, rsv1: bool) -> bytes:
    """One client frame (5.2): FIN, opcode, mask bit, the shortest length, a random key."""
    key = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", b0, 0x80 | n)
    elif n < 0x10000:
        header = struct.pack("!BBH", b0, 0xFE, n)
    else:
        header = struct.pack("!BBQ", b0, 0xFF, n)
    # Integer XOR of the whole payload with the repeated key: built once per cell.
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )
    return header + key + masked


class Stats:
    """What every connection of this process shares."""

    def __init__(self) -> None:
        self.count = 0  # messages echoed back, since the process started
        self.running = False  # whether connections send again after an echo
        self.in_flight = 0  # connections waiting for an echo
        self.idle: asyncio.Event | None = None  # set when in_flight drops to 0 after STOP

    def finished_one(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.idle is not None:
            self.idle.set()


# --- the raw client ------------------------------------------------------------------------------


class RawConnection(asyncio.Protocol):
    """A minimal WebSocket client connection that only counts what comes back."""

    def __init__(self, host: str, port: int, compression: bool, stats: Stats) -> None:
        self.stats = stats
        key = base64.b64encode(os.urandom(16)).decode()
        extensions = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
            if compression
            else ""
        )
        self.request = (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
        ).encode()
        self.compression = compression
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""  # HTTP response head, then a partial frame header
        self.handshaking = True
        self.remaining = 0  # payload bytes of the current frame still to come
        self.frame_fin = False
        self.frame_opcode = 0
        self.frame = b""  # the message to send, as one masked frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection lost during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            self.head = b""
            self.handshaking = False
            self._check_response(head)
            if rest:
                self._frames(rest)
            return
        self._frames(data)

    def _check_response(self, head: str) -> None:
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self.opened.set_exception(ConnectionError(f"handshake failed: {lines[0]}"))
            return
        negotiated = any(
            line.lower().startswith("sec-websocket-extensions:")
            and "permessage-deflate" in line.lower()
            for line in lines[1:]
        )
        if negotiated != self.compression:
            self.opened.set_exception(
                ConnectionError(f"compression negotiated: {negotiated}, wanted {self.compression}")
            )
            return
        self.opened.set_result(None)

    def _frames(self, data: bytes) -> None:
        # Count frames in data without copying payloads: only headers are looked at.
        pos = 0
        end = len(data)
        while pos < end:
            remaining = self.remaining
            if remaining:
                take = end - pos
                if take < remaining:
                    self.remaining = remaining - take
                    return
                pos += remaining
                self.remaining = 0
                self._frame_done()
                continue
            head = self.head + data[pos : pos + 14] if self.head else data[pos : pos + 14]
            if len(head) < 2:
                self.head = head
                return
            length = head[1] & 0x7F
            hlen = 2 if length < 126 else 4 if length == 126 else 10
            if len(head) < hlen:
                self.head = head
                return
            if length == 126:
                length = struct.unpack_from("!H", head, 2)[0]
            elif length == 127:
                length = struct.unpack_from("!Q", head, 2)[0]
            pos += hlen - len(self.head)
            self.head = b""
            self.frame_fin = bool(head[0] & 0x80)
            self.frame_opcode = head[0] & 0x0F
            self.remaining = length
            if length == 0:
                self._frame_done()

    def _frame_done(self) -> None:
        opcode = self.frame_opcode
        if opcode < 3:
            if self.frame_fin:
                stats = self.stats
                stats.count += 1
                if stats.running:
                    self.transport.write(self.frame)  # type: ignore[union-attr]
                else:
                    stats.finished_one()
        elif opcode == 8 and self.transport is not None:
            # The server closes (or answers our close): the TCP close follows.
            self.transport.close()

    def start(self) -> None:
        self.stats.in_flight += 1
        self.transport.write(self.frame)  # type: ignore[union-attr]

    async def close(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            payload = struct.pack("!H", 1000)
            key = os.urandom(4)
            masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            self.transport.write(bytes([0x88, 0x80 | len(payload)]) + key + masked)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            self.transport.abort()


class RawClient:
    def __init__(self, host: str, port: int, compression: bool, text: bool) -> None:
        self.host = host
        self.port = port
        self.compression = compression
        self.text = text
        self.stats = Stats()
        self.connections: list[RawConnection] = []

    async def open(self, size: int, conns: int) -> None:
        loop = asyncio.get_running_loop()
        payload = make_payload(size, text=self.text, compressible=self.compression)
        opcode = 1 if self.text else 2
        if self.compression:
            compressor = zlib.compressobj(wbits=-15)
            body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert body.endswith(b"\x00\x00\xff\xff")
            frame = masked_frame(body[:-4], opcode=opcode, rsv1=True)
        else:
            frame = masked_frame(payload, opcode=opcode, rsv1=False)
        self.connections = []
        for _ in range(conns):
            _, connection = await loop.create_connection(
                lambda: RawConnection(self.host, self.port, self.compression, self.stats),
                self.host,
                self.port,
            )
            await connection.opened
            connection.frame = frame
            self.connections.append(connection)

    def go(self) -> None:
        self.stats.running = True
        self.stats.idle = None
        for connection in self.connections:
            connection.start()

    async def stop(self) -> None:
        stats = self.stats
        stats.running = False
        stats.idle = asyncio.Event()
        if stats.in_flight:
            await asyncio.wait_for(stats.idle.wait(), 30)
        await asyncio.gather(*(connection.close() for connection in self.connections))
        self.connections = []


# --- the raw client without asyncio ---------------------------------------------------------------


def _handshake_request(host: str, port: int, compression: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    extensions = (
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        if compression
        else ""
    )
    return (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
    ).encode()


def _check_head(head: bytes, compression: bool) -> None:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise ConnectionError(f"handshake failed: {lines[0]}")
    negotiated = any(
        line.lower().startswith("sec-websocket-extensions:")
        and "permessage-deflate" in line.lower()
        for line in lines[1:]
    )
    if negotiated != compression:
        raise ConnectionError(f"compression negotiated: {negotiated}, wanted {compression}")


def build_frame(size: int, *, text: bool, compression: bool) -> bytes:
    """The message of a cell as one masked client frame (compressed once if asked)."""
    payload = make_payload(size, text=text, compressible=compression)
    opcode = 1 if text else 2
    if compression:
        compressor = zlib.compressobj(wbits=-15)
        body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert body.endswith(b"\x00\x00\xff\xff")
        return masked_frame(body[:-4], opcode=opcode, rsv1=True)
    return masked_frame(payload, opcode=opcode, rsv1=False)


class SyncConnection:
    """One connection of :class:`SyncRawClient`: a non-blocking socket and a frame counter."""

    __slots__ = ("fin", "head", "opcode", "pending", "remaining", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""  # a partial frame header
        self.remaining = 0  # payload bytes of the current frame still to come
        self.fin = False
        self.opcode = 0
        self.pending: memoryview | None = None  # what a short send() left to write


class SyncRawClient:
    """The default client: the raw client's frame counting on a bare ``selectors`` loop.

    No asyncio: per round trip the client does one ``select`` (epoll on Linux), one ``recv``,
    a header parse and one ``send``, so that the figures depend on the server as much as a
    Python client allows. Commands arrive on stdin through the same selector.
    """

    def __init__(self, host: str, port: int, compression: bool, text: bool) -> None:
        self.host = host
        self.port = port
        self.compression = compression
        self.text = text
        self.selector = selectors.DefaultSelector()
        self.connections: list[SyncConnection] = []
        self.frame = b""
        self.count = 0
        self.running = False
        self.in_flight = 0
        self.stdin = sys.stdin.fileno()
        self.buffer = bytearray(262144)
        self.commands = b""

    def open(self, size: int, conns: int) -> None:
        self.frame = build_frame(size, text=self.text, compression=self.compression)
        for _ in range(conns):
            sock = socket.create_connection((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(_handshake_request(self.host, self.port, self.compression))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("connection closed during the handshake")
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            _check_head(head, self.compression)
            if rest:
                raise ConnectionError("unexpected data after the handshake")
            sock.setblocking(False)
            connection = SyncConnection(sock)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            self.connections.append(connection)

    def _send(self, connection: SyncConnection, data: bytes | memoryview) -> None:
        try:
            sent = connection.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            connection.pending = memoryview(data)[sent:]
            self.selector.modify(
                connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection
            )

    def _writable(self, connection: SyncConnection) -> None:
        pending = connection.pending
        assert pending is not None
        try:
            sent = connection.sock.send(pending)
        except BlockingIOError:
            return
        if sent < len(pending):
            connection.pending = pending[sent:]
        else:
            connection.pending = None
            self.selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def _readable(self, connection: SyncConnection) -> None:
        # recv_into a buffer kept for the whole run: recv(262144) would cost an mmap, a page
        # fault and an munmap per call (see echo.py's run_all).
        data = self.buffer
        try:
            end = connection.sock.recv_into(data)
        except BlockingIOError:
            return
        if not end:
            raise ConnectionError("the server closed the connection")
        # Count frames in data without copying payloads: only headers are looked at.
        pos = 0
        while pos < end:
            remaining = connection.remaining
            if remaining:
                if end - pos < remaining:
                    connection.remaining = remaining - (end - pos)
                    return
                pos += remaining
                connection.remaining = 0
            else:
                piece = bytes(data[pos : min(pos + 14, end)])
                head = connection.head + piece if connection.head else piece
                if len(head) < 2:
                    connection.head = head
                    return
                length = head[1] & 0x7F
                hlen = 2 if length < 126 else 4 if length == 126 else 10
                if len(head) < hlen:
                    connection.head = head
                    return
                if length == 126:
                    length = struct.unpack_from("!H", head, 2)[0]
                elif length == 127:
                    length = struct.unpack_from("!Q", head, 2)[0]
                pos += hlen - len(connection.head)
                connection.head = b""
                connection.fin = bool(head[0] & 0x80)
                connection.opcode = head[0] & 0x0F
                if length:
                    connection.remaining = length
                    continue
            # A frame ended.
            if connection.opcode < 3 and connection.fin:
                self.count += 1
                if self.running:
                    self._send(connection, self.frame)
                else:
                    self.in_flight -= 1

    def go(self) -> None:
        self.running = True
        self.in_flight = len(self.connections)
        for connection in self.connections:
            self._send(connection, self.frame)

    def close_all(self) -> None:
        for connection in self.connections:
            self.selector.unregister(connection.sock)
            sock = connection.sock
            sock.setblocking(True)
            sock.settimeout(5)
            key = os.urandom(4)
            payload = struct.pack("!H", 1000)
            masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            try:
                sock.sendall(bytes([0x88, 0x80 | len(payload)]) + key + masked)
                while sock.recv(65536):  # the server's close frame, then EOF
                    pass
            except OSError:
                pass
            sock.close()
        self.connections = []

    def _command(self, line: str) -> bool:
        command, _, argument = line.partition(" ")
        if command == "CELL":
            cell = json.loads(argument)
            self.open(cell["size"], cell["conns"])
            _say("READY")
        elif command == "GO":
            self.go()
        elif command == "MARK":
            mark = {"count": self.count, "time": time.perf_counter(), "cpu": time.process_time()}
            _say("MARK " + json.dumps(mark))
        elif command == "STOP":
            self.running = False
            while self.in_flight:
                self._poll()
            self.close_all()
            _say("DONE")
        return True

    def _poll(self) -> bool:
        """Wait for events and handle them; False at EOF on stdin."""
        commands = False
        for key, events in self.selector.select():
            connection = key.data
            if connection is None:
                commands = True
                continue
            if events & selectors.EVENT_WRITE and connection.pending is not None:
                self._writable(connection)
            if events & selectors.EVENT_READ:
                self._readable(connection)
        if commands:
            # Last, since a command may close the connections that the events are about.
            chunk = os.read(self.stdin, 4096)
            if not chunk:
                return False
            self.commands += chunk
            while b"\n" in self.commands:
                line, _, self.commands = self.commands.partition(b"\n")
                self._command(line.decode().strip())
        return True

    def run(self) -> None:
        self.selector.register(self.stdin, selectors.EVENT_READ, None)
        while self._poll():
            pass
        self.close_all()


# --- library clients -----------------------------------------------------------------------------


class LibraryClient:
    """``await send(); await recv()`` in one task per connection, for a given library."""

    def __init__(self, name: str, host: str, port: int, compression: bool, text: bool) -> None:
        self.name = name
        self.uri = f"ws://{host}:{port}/"
        self.compression = compression
        self.text = text
        self.stats = Stats()
        self.connections: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.message: str | bytes = b""
        self.session: Any = None

    async def _connect(self) -> Any:
        if self.name == "websockets":
            from websockets.asyncio.client import connect as ws_connect

            return await ws_connect(
                self.uri,
                compression="deflate" if self.compression else None,
                ping_interval=None,
                max_size=MAX_SIZE,
            )
        if self.name == "tether":
            from tether import Limits
            from tether import connect as tether_connect

            return await tether_connect(
                self.uri,
                compression="deflate" if self.compression else None,
                ping_interval=None,
                limits=Limits(max_frame_size=MAX_SIZE, max_message_size=MAX_SIZE),
            )
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        return await self.session.ws_connect(
            self.uri, compress=15 if self.compression else 0, max_msg_size=MAX_SIZE, autoping=True
        )

    async def open(self, size: int, conns: int) -> None:
        payload = make_payload(size, text=self.text, compressible=self.compression)
        self.message = payload.decode() if self.text else payload
        self.connections = [await self._connect() for _ in range(conns)]

    async def _loop(self, connection: Any) -> None:
        stats = self.stats
        message = self.message
        if self.name == "aiohttp":
            send = connection.send_str if self.text else connection.send_bytes
            receive = connection.receive
        else:
            send = connection.send
            receive = connection.recv
        while stats.running:
            await send(message)
            await receive()
            stats.count += 1

    def go(self) -> None:
        self.stats.running = True
        self.tasks = [asyncio.create_task(self._loop(c)) for c in self.connections]

    async def stop(self) -> None:
        self.stats.running = False
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
        await asyncio.gather(*(connection.close() for connection in self.connections))
        self.connections = []
        self.tasks = []


class PicowsClient:
    """picows' client in its own style: a listener whose ``on_ws_frame`` sends the next message
    (no task, no future per message). The clients send and receive whole messages as single
    frames, so a frame is a message here."""

    def __init__(self, host: str, port: int, compression: bool, text: bool) -> None:
        if compression:
            raise SystemExit("picows has no permessage-deflate")
        self.uri = f"ws://{host}:{port}/"
        self.text = text
        self.stats = Stats()
        self.transports: list[Any] = []
        self.message = b""

    async def open(self, size: int, conns: int) -> None:
        from picows import WSListener, WSMsgType, ws_connect

        stats = self.stats
        self.message = make_payload(size, text=self.text, compressible=False)
        msg_type = WSMsgType.TEXT if self.text else WSMsgType.BINARY

        class Loop(WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == WSMsgType.CLOSE:
                    return
                stats.count += 1
                if stats.running:
                    transport.send(msg_type, message)
                else:
                    stats.finished_one()

        message = self.message
        self.msg_type = msg_type
        for _ in range(conns):
            transport, _listener = await ws_connect(Loop, self.uri, max_frame_size=MAX_SIZE)
            self.transports.append(transport)

    def go(self) -> None:
        self.stats.running = True
        self.stats.in_flight = len(self.transports)
        for transport in self.transports:
            transport.send(self.msg_type, self.message)

    async def stop(self) -> None:
        self.stats.idle = asyncio.Event()
        self.stats.running = False
        if self.stats.in_flight:
            await asyncio.wait_for(self.stats.idle.wait(), 30)
        for transport in self.transports:
            transport.send_close()
            transport.disconnect()
        for transport in self.transports:
            await asyncio.wait_for(transport.wait_disconnected(), 10)
        self.transports = []


class TetherCallbackClient:
    """tether's client in picows' style: ``set_message_callback`` with a callback that sends
    the next message with ``send_nowait`` (no task, no future per message)."""

    def __init__(self, host: str, port: int, compression: bool, text: bool) -> None:
        self.uri = f"ws://{host}:{port}/"
        self.compression = compression
        self.text = text
        self.stats = Stats()
        self.connections: list[Any] = []
        self.message: str | bytes = b""

    async def open(self, size: int, conns: int) -> None:
        from tether import Limits
        from tether import connect as tether_connect

        payload = make_payload(size, text=self.text, compressible=self.compression)
        self.message = message = payload.decode() if self.text else payload
        stats = self.stats
        for _ in range(conns):
            ws = await tether_connect(
                self.uri,
                compression="deflate" if self.compression else None,
                ping_interval=None,
                limits=Limits(max_frame_size=MAX_SIZE, max_message_size=MAX_SIZE),
            )
            send = ws.send_nowait

            def on_message(_: Any, send: Any = send) -> None:
                stats.count += 1
                if stats.running:
                    send(message)
                else:
                    stats.finished_one()

            ws.set_message_callback(on_message)
            self.connections.append(ws)

    def go(self) -> None:
        self.stats.running = True
        self.stats.in_flight = len(self.connections)
        for ws in self.connections:
            ws.send_nowait(self.message)

    async def stop(self) -> None:
        self.stats.idle = asyncio.Event()
        self.stats.running = False
        if self.stats.in_flight:
            await asyncio.wait_for(self.stats.idle.wait(), 30)
        await asyncio.gather(*(ws.close() for ws in self.connections))
        self.connections = []


# --- threading clients ---------------------------------------------------------------------------


class ThreadedClient:
    """``send(); recv()`` in one thread per connection, for a library that blocks."""

    def __init__(self, name: str, host: str, port: int, compression: bool, text: bool) -> None:
        if name == "websocket-client" and compression:
            raise SystemExit("websocket-client has no permessage-deflate")
        self.name = name
        self.uri = f"ws://{host}:{port}/"
        self.compression = compression
        self.text = text
        self.message: str | bytes = b""
        self.connections: list[Any] = []
        self.counts: list[int] = []
        self.threads: list[threading.Thread] = []
        self.running = False
        self.closers = contextlib.ExitStack()

    def _connect(self) -> tuple[Any, Any, Any]:
        """A connection, its send and its recv."""
        if self.name == "tether-sync":
            from tether import Limits
            from tether.sync import connect as tether_connect

            ws = tether_connect(
                self.uri,
                compression="deflate" if self.compression else None,
                ping_interval=None,
                limits=Limits(max_frame_size=MAX_SIZE, max_message_size=MAX_SIZE),
            )
            return ws, ws.send, ws.recv
        if self.name == "websockets-sync":
            from websockets.sync.client import connect as ws_connect

            ws = self.closers.enter_context(
                ws_connect(
                    self.uri,
                    compression="deflate" if self.compression else None,
                    max_size=MAX_SIZE,
                )
            )
            return ws, ws.send, ws.recv
        import websocket  # websocket-client

        ws = websocket.create_connection(self.uri, skip_utf8_validation=False)
        send = ws.send if self.text else ws.send_binary
        return ws, send, ws.recv

    def open(self, size: int, conns: int) -> None:
        payload = make_payload(size, text=self.text, compressible=self.compression)
        self.message = payload.decode() if self.text else payload
        self.connections = [self._connect() for _ in range(conns)]
        self.counts = [0] * conns

    def _loop(self, index: int) -> None:
        _, send, recv = self.connections[index]
        message = self.message
        counts = self.counts
        while self.running:
            send(message)
            recv()
            counts[index] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def go(self) -> None:
        self.running = True
        self.threads = [
            threading.Thread(target=self._loop, args=(i,)) for i in range(len(self.connections))
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(30)
        for ws, _, _ in self.connections:
            ws.close()
        self.closers.close()
        self.connections = []
        self.threads = []


def threaded_control(client: ThreadedClient) -> None:
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            break
        command, _, argument = line.partition(" ")
        if command == "CELL":
            cell = json.loads(argument)
            client.open(cell["size"], cell["conns"])
            _say("READY")
        elif command == "GO":
            client.go()
        elif command == "MARK":
            mark = {"count": client.count, "time": time.perf_counter(), "cpu": time.process_time()}
            _say("MARK " + json.dumps(mark))
        elif command == "STOP":
            client.stop()
            _say("DONE")


# --- control loop --------------------------------------------------------------------------------


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def control(
    client: RawClient | LibraryClient | PicowsClient | TetherCallbackClient,
) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            break
        command, _, argument = line.partition(" ")
        if command == "CELL":
            cell = json.loads(argument)
            await client.open(cell["size"], cell["conns"])
            _say("READY")
        elif command == "GO":
            client.go()
        elif command == "MARK":
            mark = {
                "count": client.stats.count,
                "time": time.perf_counter(),
                "cpu": time.process_time(),
            }
            _say("MARK " + json.dumps(mark))
        elif command == "STOP":
            await client.stop()
            _say("DONE")
    session = getattr(client, "session", None)
    if session is not None:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", choices=CLIENTS, default="raw")
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--text", action="store_true")
    args = parser.parse_args()
    client: RawClient | LibraryClient | PicowsClient | TetherCallbackClient
    if args.client == "raw":
        SyncRawClient(args.host, args.port, args.compression, args.text).run()
        return
    if args.client in THREADED_CLIENTS:
        threaded_control(
            ThreadedClient(args.client, args.host, args.port, args.compression, args.text)
        )
        return
    if args.client == "raw-asyncio":
        client = RawClient(args.host, args.port, args.compression, args.text)
    elif args.client == "picows":
        client = PicowsClient(args.host, args.port, args.compression, args.text)
    elif args.client == "tether-callback":
        client = TetherCallbackClient(args.host, args.port, args.compression, args.text)
    else:
        client = LibraryClient(args.client, args.host, args.port, args.compression, args.text)
    asyncio.run(control(client))


if __name__ == "__main__":
    main()
