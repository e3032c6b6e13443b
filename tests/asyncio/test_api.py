"""The public asyncio surface: broadcast, respond*, headers, addresses, connect()'s errors."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import tempfile
from typing import Any

import pytest

from helpers.aio import run
from tether import (
    ConnectionFailed,
    InvalidHandshake,
    InvalidState,
    InvalidStatus,
    OpenTimeout,
    Request,
    Response,
    ServerConnection,
    TetherError,
    broadcast,
    broadcast_and_wait,
    connect,
    serve,
)
from tether.extensions.permessage_deflate import ServerPerMessageDeflateFactory

pytestmark = pytest.mark.timeout(30)


async def wait(ws: ServerConnection) -> None:
    async for _ in ws:  # read (and drop) what clients send, so their close is seen
        pass


def uri(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port_number}/"


# --- broadcast -------------------------------------------------------------------------------


def test_broadcast_is_synchronous_and_the_waiting_one_is_a_coroutine() -> None:
    assert not inspect.iscoroutinefunction(broadcast)
    assert inspect.iscoroutinefunction(broadcast_and_wait)
    assert broadcast([], "nobody") == 0
    with pytest.raises(ValueError, match="broadcast_and_wait"):
        broadcast([], "x", slow="wait")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot broadcast dict"):
        broadcast([], {"a": 1})  # type: ignore[arg-type]


def test_broadcast_counts_open_connections_and_skips_closed_ones() -> None:
    async def main() -> None:
        async with serve(wait, "127.0.0.1", 0) as server:
            clients = [await connect(uri(server)) for _ in range(3)]
            while len(server.connections) < 3:
                await asyncio.sleep(0.01)
            await clients[0].close()
            while len(server.connections) > 2:
                await asyncio.sleep(0.01)
            assert broadcast(server.connections, b"\x00bin") == 2
            for ws in clients[1:]:
                assert await ws.recv() == b"\x00bin"
            # Client connections too (they mask: each encodes for itself).
            assert broadcast(clients[1:], "up") == 2
            for ws in clients[1:]:
                await ws.close()

    run(main())


def test_broadcast_skips_a_connection_sending_a_fragmented_message() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def fragments() -> Any:
            yield "part 1, "
            yield "part 2, "  # send() looks one fragment ahead: now part 1 is out
            await release.wait()
            yield "part 3"

        async with serve(wait, "127.0.0.1", 0) as server:
            async with connect(uri(server)) as ws:
                while not server.connections:
                    await asyncio.sleep(0.01)
                (conn,) = server.connections
                sending = asyncio.create_task(conn.send(fragments()))
                while not conn.protocol.sending_fragmented:
                    await asyncio.sleep(0.01)
                assert broadcast(server.connections, "interleaved?") == 0
                release.set()
                await sending
                assert broadcast(server.connections, "after") == 1
                assert await ws.recv() == "part 1, part 2, part 3"
                assert await ws.recv() == "after"

    run(main())


# --- extensions mean one thing -----------------------------------------------------------------


def test_server_keeps_factories_and_connections_list_agreed_extensions() -> None:
    async def main() -> None:
        async with serve(wait, "127.0.0.1", 0) as server:
            assert [type(f) for f in server.extension_factories] == [ServerPerMessageDeflateFactory]
            assert not hasattr(server, "extensions")
            async with connect(uri(server)) as ws:
                assert [e.name for e in ws.extensions] == ["permessage-deflate"]
                (conn,) = server.connections
                assert [e.name for e in conn.extensions] == ["permessage-deflate"]

    run(main())


# --- HTTP responses and headers ------------------------------------------------------------


def test_respond_json_html_and_401_with_headers() -> None:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/json":
            return ws.respond_json(200, {"ok": True}, headers={"Cache-Control": "no-store"})
        if request.path == "/html":
            return ws.respond_html(200, "<h1>hi</h1>")
        if request.headers.get("Authorization") != "Bearer good":
            return ws.respond(401, "Missing token.", headers=[("WWW-Authenticate", "Bearer")])
        return None

    async def fetch(port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    async def main() -> None:
        async with serve(wait, "127.0.0.1", 0, process_request=process_request) as server:
            port = server.port_number
            assert port is not None
            data = await fetch(port, "/json")
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Content-Type: application/json" in head
            assert b"Cache-Control: no-store" in head
            assert json.loads(body) == {"ok": True}
            html = await fetch(port, "/html")
            assert b"Content-Type: text/html; charset=utf-8" in html
            with pytest.raises(InvalidStatus) as refused:
                await connect(uri(server))
            response = refused.value.response
            assert (response.status, response.reason) == (401, "Unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.body == b"Missing token.\n"
            # additional_headers as a mapping, as websockets takes it.
            headers = {"Authorization": "Bearer good"}
            async with connect(uri(server), additional_headers=headers) as ws:
                assert ws.request is not None
                assert ws.request.headers["Authorization"] == "Bearer good"

    run(main())


# --- addresses -------------------------------------------------------------------------------


def test_port_number_and_addresses_on_a_unix_socket() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "ws.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            async with serve(wait, sock=sock) as server:
                with pytest.raises(InvalidState, match=r"server\.addresses"):
                    server.port_number  # noqa: B018
                assert server.addresses == [path]
        async with serve(wait, "127.0.0.1", 0) as server:
            assert server.addresses[0][0] == "127.0.0.1"
            assert server.addresses[0][1] == server.port_number

    run(main())


# --- connect() fails with TetherErrors ---------------------------------------------------------


def test_refused_connection_is_a_connection_failed_and_an_oserror() -> None:
    async def main() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        with pytest.raises(ConnectionFailed) as failed:
            await connect(f"ws://127.0.0.1:{port}/")
        assert isinstance(failed.value, OSError) and isinstance(failed.value, TetherError)
        assert isinstance(failed.value.__cause__, ConnectionRefusedError)
        assert f"127.0.0.1:{port}" in str(failed.value)

    run(main())


def test_open_timeout_is_an_open_timeout_and_a_timeout_error() -> None:
    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts in the kernel, never answers the handshake
        port = listener.getsockname()[1]
        try:
            with pytest.raises(OpenTimeout) as timed_out:
                await connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2)
            assert isinstance(timed_out.value, TimeoutError)
            assert "open_timeout=0.2" in str(timed_out.value)
        finally:
            listener.close()

    run(main())


def test_every_connect_failure_in_the_docstring_is_a_tether_error() -> None:
    import tether.exceptions

    doc = connect.__doc__ or ""
    raises = doc.split("Raises:", 1)[1]
    names = [
        line.split(":")[0].strip()
        for line in raises.splitlines()
        if line[:9].strip()
        and ":" in line
        and line.startswith("        ")
        and not line.startswith("         ")
    ]
    assert {
        "ConnectionFailed",
        "OpenTimeout",
        "InvalidStatus",
        "InvalidHandshake",
        "ConnectionLostDuringHandshake",
        "InvalidURI",
        "InvalidProxy",
    } <= set(names)
    for name in names:
        assert issubclass(getattr(tether.exceptions, name), TetherError), name
    assert issubclass(InvalidStatus, InvalidHandshake)
