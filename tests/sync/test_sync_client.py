"""The threading client: redirects, TLS, timeouts, refusals."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import Any

import pytest

from helpers.sync_server import running, running_on, tls_contexts, uri
from tether import (
    ConnectionFailed,
    ConnectionLostDuringHandshake,
    InvalidRedirect,
    InvalidStatus,
    OpenTimeout,
    Request,
    Response,
    TetherError,
)
from tether import connect as asyncio_connect
from tether import serve as asyncio_serve
from tether.sync import ServerConnection, connect

pytestmark = pytest.mark.timeout(30)


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def redirect_to(target: str, status: int = 302) -> Any:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/final":
            return None
        response = ws.respond(status, "moved")
        response.headers["Location"] = target
        return response

    return process_request


def test_redirects_are_followed_with_a_fresh_key() -> None:
    keys: list[str] = []

    def record(ws: ServerConnection, request: Request) -> Response | None:
        keys.append(request.headers["Sec-WebSocket-Key"])
        response: Response | None = redirect_to("/final")(ws, request)
        return response

    with running(echo, process_request=record) as server:
        with connect(uri(server, "/start")) as ws:
            assert ws.request is not None and ws.request.path == "/final"
            ws.send("here")
            assert ws.recv(timeout=5) == "here"
        assert len(keys) == 2 and keys[0] != keys[1]
        with pytest.raises(InvalidRedirect, match="more than 0 redirects"):
            connect(uri(server, "/start"), max_redirects=0)


def test_redirect_loops_and_refusals_are_clear_errors() -> None:
    with running(echo, process_request=redirect_to("/again", 307)) as server:
        with pytest.raises(InvalidRedirect, match="more than 3 redirects"):
            connect(uri(server, "/again"), max_redirects=3)

    def refuse(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(403, "Go away.")

    with running(echo, process_request=refuse) as server:
        with pytest.raises(InvalidStatus) as caught:
            connect(uri(server))
        assert caught.value.response.status == 403
        assert "Go away." in str(caught.value)


def test_a_given_socket_follows_no_redirect() -> None:
    with running(echo, process_request=redirect_to("/final")) as server:
        sock = socket.create_connection(("127.0.0.1", server.port_number))
        with pytest.raises(InvalidStatus) as caught:
            connect(uri(server, "/start"), sock=sock)
        assert caught.value.response.status == 302
        assert caught.value.location == "/final"


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_contexts()


def test_tls_between_sync_peers(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    with running(echo, ssl=server_context) as server:
        target = f"wss://127.0.0.1:{server.port_number}/"
        with connect(target, ssl=client_context) as ws:
            ws.send("secret")
            assert ws.recv(timeout=5) == "secret"
            big = b"x" * 1_000_000
            ws.send(big)
            assert ws.recv(timeout=5) == big
            assert ws.ping().result(5) > 0
        assert ws.close_code == 1000
        with pytest.raises(ssl.SSLError) as untrusted:
            connect(target)  # the default context does not trust our CA
        assert isinstance(untrusted.value, ConnectionFailed)
        assert isinstance(untrusted.value.__cause__, ssl.SSLCertVerificationError)
        with pytest.raises(ValueError, match="wss://"):
            connect(uri(server), ssl=client_context)


def test_a_redirect_from_wss_to_ws_is_refused(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    with running(
        echo, process_request=redirect_to("ws://127.0.0.1:9/final"), ssl=server_context
    ) as s:
        with pytest.raises(InvalidRedirect, match=r"from wss:// to ws://") as caught:
            connect(f"wss://127.0.0.1:{s.port_number}/start", ssl=client_context)
        assert caught.value.response is not None
        assert caught.value.response.status == 302
        assert isinstance(caught.value.__cause__, InvalidStatus)


def test_max_connections_over_tls_answers_503(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    release = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.send("in")
        release.wait(10)

    with running(handler, ssl=server_context, max_connections=1) as server:
        target = f"wss://127.0.0.1:{server.port_number}/"
        with connect(target, ssl=client_context) as first:
            assert first.recv(timeout=5) == "in"
            with pytest.raises(InvalidStatus) as caught:
                connect(target, ssl=client_context)
            assert caught.value.response.status == 503
            assert caught.value.response.headers["Retry-After"] == "5"
            release.set()


def test_tls_with_the_asyncio_layer_both_ways(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls

    async def aecho(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def sync_client_against_asyncio_server() -> None:
        async with asyncio_serve(aecho, "127.0.0.1", 0, ssl=server_context) as server:
            target = f"wss://127.0.0.1:{server.port_number}/"

            def client() -> tuple[Any, int | None]:
                with connect(target, ssl=client_context) as ws:
                    ws.send("one way")
                    reply = ws.recv(timeout=5)
                return reply, ws.close_code

            assert await asyncio.to_thread(client) == ("one way", 1000)

    asyncio.run(sync_client_against_asyncio_server())

    async def asyncio_client(port: int) -> tuple[Any, int | None]:
        async with asyncio_connect(f"wss://127.0.0.1:{port}/", ssl=client_context) as ws:
            await ws.send("other way")
            reply = await ws.recv()
        return reply, ws.close_code

    with running(echo, ssl=server_context) as server:
        assert asyncio.run(asyncio_client(server.port_number)) == ("other way", 1000)


def test_open_timeout_bounds_a_silent_server() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    start = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.3)
    assert isinstance(caught.value, OpenTimeout)
    assert "open_timeout=0.3 s" in str(caught.value)
    assert time.monotonic() - start < 3
    thread.join(5)
    for sock in accepted:
        sock.close()
    listener.close()


def test_a_server_hanging_up_during_the_handshake_is_named() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching")  # and nothing more
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    with pytest.raises(ConnectionLostDuringHandshake) as caught:
        connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
    assert caught.value.received == len("HTTP/1.1 101 Switching")
    thread.join(5)
    listener.close()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        probe = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    probe.close()
    with running_on("::1") as server, connect(f"ws://[::1]:{server.port_number}/") as ws:
        ws.send("six")
        assert ws.recv(timeout=5) == "six"
        assert ws.remote_address[0] == "::1"


def test_connection_refused_is_an_oserror() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionRefusedError) as refused:
        connect(f"ws://127.0.0.1:{port}/")
    # A ConnectionFailed (a TetherError and an OSError), as in the asyncio layer.
    assert isinstance(refused.value, ConnectionFailed) and isinstance(refused.value, TetherError)
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    assert f"could not connect to 127.0.0.1:{port}" in str(refused.value)


def test_a_connected_socket_can_be_given() -> None:
    with running(echo) as server:
        sock = socket.create_connection(("127.0.0.1", server.port_number))
        with connect("ws://example.invalid/", sock=sock) as ws:
            assert ws.request is not None and ws.request.headers["Host"] == "example.invalid"
            ws.send("via my socket")
            assert ws.recv(timeout=5) == "via my socket"
