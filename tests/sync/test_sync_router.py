"""``tether.sync.route()``: handlers get parameters; misses get 404 / 308 / 400, as with the
asyncio router."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tether import InvalidStatus, Request, Response
from tether.sync import Router, Server, ServerConnection, connect, route

pytestmark = pytest.mark.timeout(30)


def make_router() -> Router[Any]:
    router: Router[Any] = Router()

    @router.route("/chat/{room}")
    def chat(ws: ServerConnection, room: str) -> None:
        ws.send(f"chat:{room}:{ws.request.path if ws.request else ''}")

    @router.route("/users/{id:int}")
    def user(ws: ServerConnection, id: int) -> None:
        ws.send(f"user:{id + 1}")

    return router


@contextmanager
def routed(**kwargs: Any) -> Iterator[Server]:
    server = route(make_router(), "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)


def first_message(server: Server, path: str) -> Any:
    with connect(f"ws://127.0.0.1:{server.port_number}{path}") as ws:
        return ws.recv(timeout=5)


def status_line(server: Server, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port_number), timeout=5) as sock:
        sock.sendall(head)
        return sock.makefile("rb").readline()


def test_handlers_get_parameters_and_trailing_slashes_redirect() -> None:
    with routed() as server:
        assert first_message(server, "/chat/lobby") == "chat:lobby:/chat/lobby"
        assert first_message(server, "/users/41") == "user:42"
        assert first_message(server, "/chat/caf%C3%A9?x=1") == "chat:caf\u00e9:/chat/caf%C3%A9?x=1"
        assert first_message(server, "/chat/x/?t=1") == "chat:x:/chat/x?t=1"


def test_misses_are_404_naming_the_path_and_bad_requests_are_refused() -> None:
    with routed() as server:
        with pytest.raises(InvalidStatus) as info:
            first_message(server, "/nowhere?x=1")
        assert info.value.response.status == 404
        assert info.value.response.body == b"No WebSocket route for path /nowhere\n"
        plain = b"GET /chat/x HTTP/1.1\r\nHost: h\r\n\r\n"
        assert status_line(server, plain).startswith(b"HTTP/1.1 426 ")
        bad = b"GET /chat/%FF HTTP/1.1\r\nHost: h\r\n\r\n"
        assert status_line(server, bad).startswith(b"HTTP/1.1 400 ")


def test_process_request_runs_before_routing() -> None:
    def deny(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(401, "token required") if "token" not in request.path else None

    with routed(process_request=deny) as server:
        with pytest.raises(InvalidStatus) as info:
            first_message(server, "/nowhere")
        assert info.value.response.status == 401
        assert first_message(server, "/users/1?token=t") == "user:2"
