"""The threading server: refusals (the same as the asyncio server's), hooks, the connection
bound, shutdown, Ctrl-C in a script, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.sync_server import running, uri
from tether import ConnectionClosed, ConnectionClosedOK, InvalidStatus, Limits, Request, Response
from tether import serve as asyncio_serve
from tether.sync import ServerConnection, connect, serve

pytestmark = pytest.mark.timeout(30)

SRC = Path(__file__).resolve().parents[2] / "src"


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        return data


@contextlib.contextmanager
def asyncio_server(**kwargs: Any) -> Iterator[int]:
    """tether's asyncio server with the same options, in a thread of its own; yields its port."""
    started = threading.Event()
    stop: list[Any] = []
    port: list[int] = []

    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with asyncio_serve(handler, "127.0.0.1", 0, **kwargs) as server:
            port.append(server.port_number)
            stop.append((asyncio.get_running_loop(), asyncio.Event()))
            started.set()
            await stop[0][1].wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert started.wait(10)
    try:
        yield port[0]
    finally:
        loop, event = stop[0]
        loop.call_soon_threadsafe(event.set)
        thread.join(10)


UPGRADE = (
    b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
REQUESTS = {
    "plain-http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "post": b"POST / HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n",
    "version-8": b"GET / HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Version: 8\r\n\r\n",
    "no-version": b"GET / HTTP/1.1\r\n" + UPGRADE + b"\r\n",
    "bad-key": b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "origin": b"GET / HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: https://evil.example\r\n\r\n",
    "no-subprotocol": b"GET / HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: https://ok.example\r\nSec-WebSocket-Protocol: other\r\n\r\n",
    "not-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "long-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    "http-1.0": b"GET / HTTP/1.0\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_refusals_are_the_asyncio_servers(name: str) -> None:
    options: dict[str, Any] = {
        "origins": ["https://ok.example"],
        "subprotocols": ["chat"],
        "require_subprotocol": True,
        "close_timeout": 2,
    }
    request = REQUESTS[name]
    with asyncio_server(**options) as port:
        expected = exchange(port, request)
    with running(echo, **options) as server:
        answer = exchange(server.port_number, request)
    assert re.match(rb"HTTP/1.1 [1-5]\d\d ", answer), answer
    assert not answer.startswith(b"HTTP/1.1 101")
    assert answer == expected


def test_process_request_answers_plain_http_and_hook_errors_are_500() -> None:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return ws.respond(200, "OK")
        if request.path == "/boom":
            raise RuntimeError("a bug in the hook")
        return None

    def process_response(ws: ServerConnection, request: Request, response: Response) -> None:
        response.headers["X-Seen"] = "yes"

    with running(echo, process_request=process_request, process_response=process_response) as s:
        answer = exchange(s.port_number, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nOK\n")
        answer = exchange(s.port_number, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")
        with connect(uri(s)) as ws:
            assert ws.response is not None
            assert ws.response.headers["X-Seen"] == "yes"


def test_hooks_answer_with_json_html_and_any_content_type_as_in_asyncio() -> None:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/json":
            return ws.respond_json(401, {"error": "token"}, headers={"WWW-Authenticate": "Bearer"})
        if request.path == "/html":
            return ws.respond_html(200, "<p>hi</p>")
        return ws.respond(404, b"\x00raw", content_type="application/octet-stream")

    with running(echo, process_request=process_request) as server:
        answer = exchange(server.port_number, b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert b"\r\nContent-Type: application/json\r\n" in head
        assert b"\r\nWWW-Authenticate: Bearer\r\n" in head
        assert body == b'{"error": "token"}'
        answer = exchange(server.port_number, b"GET /html HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"\r\nContent-Type: text/html; charset=utf-8\r\n" in head
        assert body == b"<p>hi</p>"
        answer = exchange(server.port_number, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert b"\r\nContent-Type: application/octet-stream\r\n" in head
        assert body == b"\x00raw"


def test_hooks_of_the_wrong_shape_are_refused_at_serve_time() -> None:
    def legacy(path: str, request_headers: Any) -> Any:
        return None

    with pytest.raises(TypeError, match=r"legacy \(path, request_headers\) shape.*request\.path"):
        serve(echo, "127.0.0.1", 0, process_request=legacy)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="process_response must be callable"):
        serve(echo, "127.0.0.1", 0, process_response="not a function")  # type: ignore[arg-type]


def test_max_connections_refuses_extras_with_503_and_retry_after() -> None:
    release = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.send("welcome")
        release.wait(10)

    with running(handler, max_connections=2, retry_after=7) as server:
        first = connect(uri(server))
        second = connect(uri(server))
        assert first.recv(timeout=5) == "welcome"
        assert second.recv(timeout=5) == "welcome"
        with pytest.raises(InvalidStatus) as caught:
            connect(uri(server))
        response = caught.value.response
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        assert b"limit of 2 connections" in response.body
        release.set()
        first.close()
        second.close()
        deadline = time.monotonic() + 5
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(uri(server)) as third:
            assert third.recv(timeout=5) == "welcome"


def test_shutdown_closes_every_connection_with_1001_and_joins_threads() -> None:
    def handler(ws: ServerConnection) -> None:
        for _ in ws:
            pass

    with running(handler, close_timeout=2) as server:
        clients = [connect(uri(server)) for _ in range(5)]
        stubborn = socket.create_connection(("127.0.0.1", server.port_number))
        stubborn.sendall(  # a raw client that never answers the close frame
            b"GET / HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert stubborn.recv(4096).startswith(b"HTTP/1.1 101")
        start = time.monotonic()
        server.shutdown()
        elapsed = time.monotonic() - start
        assert elapsed < 2 + 1.5
        assert not server.connections
        for ws in clients:
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=5)
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
            ws.close()
        stubborn.close()
        with pytest.raises(OSError):
            connect(uri(server), open_timeout=2)


SCRIPT = """
import signal, sys
sys.path.insert(0, {src!r})
from tether.sync import serve

def echo(ws):
    for message in ws:
        ws.send(message)

with serve(echo, "127.0.0.1", 0, close_timeout=3) as server:
    # SIGTERM: shut down from a signal handler, in the thread running serve_forever().
    signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
    print(server.port_number, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    else:
        print("shut down", flush=True)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("signum", "said"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "shut down")]
)
def test_a_signal_in_a_script_closes_connections_with_1001_and_exits(
    signum: int, said: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(src=str(SRC)))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a job started in the background (CI's nohup ... &) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=_default_sigint,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            process.send_signal(signum)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.strip() == said
    assert "Traceback" not in err, err


def test_open_timeout_drops_silent_clients() -> None:
    with running(echo, open_timeout=0.2) as server:
        start = time.monotonic()
        assert exchange(server.port_number, b"GET / HTTP/1.1\r\n") == b""
        assert time.monotonic() - start < 3


def test_refused_client_that_keeps_its_socket_open_is_dropped() -> None:
    def health(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(200, "OK")

    with running(echo, process_request=health, close_timeout=0.3) as server:
        sock = socket.create_connection(("127.0.0.1", server.port_number), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):  # EOF after the response
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 3
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.connections  # though we never closed our side
        sock.close()


def test_limits_apply_to_each_connection() -> None:
    with (
        running(echo, limits=Limits(max_message_size=1000), compression=None) as server,
        connect(uri(server), compression=None) as ws,
    ):
        ws.send(b"x" * 1000)
        assert ws.recv(timeout=5) == b"x" * 1000
        ws.send(os.urandom(1001))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=5)
        assert caught.value.code == 1009
