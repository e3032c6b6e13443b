"""``route()`` on a real server: handlers get parameters; misses get 404 / 308 / 400."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers.aio import run
from tether import InvalidStatus, Request, Response, ServerConnection, connect
from tether.asyncio.router import Router, route

pytestmark = pytest.mark.timeout(30)


def make_router() -> Router[Any]:
    router: Router[Any] = Router()

    @router.route("/chat/{room}")
    async def chat(ws: ServerConnection, room: str) -> None:
        await ws.send(f"chat:{room}:{ws.request.path if ws.request else ''}")

    @router.route("/users/{id:int}")
    async def user(ws: ServerConnection, id: int) -> None:
        await ws.send(f"user:{id + 1}")

    return router


async def first_message(port: int, path: str) -> str:
    async with connect(f"ws://127.0.0.1:{port}{path}") as ws:
        return str(await ws.recv())


def test_handlers_get_parameters() -> None:
    async def main() -> None:
        async with route(make_router(), "127.0.0.1", 0) as server:
            port = server.port_number
            assert await first_message(port, "/chat/lobby") == "chat:lobby:/chat/lobby"
            assert await first_message(port, "/users/41") == "user:42"
            assert await first_message(port, "/chat/caf%C3%A9?x=1") == (
                "chat:caf\u00e9:/chat/caf%C3%A9?x=1"
            )

    run(main())


def test_unknown_path_is_404_naming_it() -> None:
    async def main() -> None:
        async with route(make_router(), "127.0.0.1", 0) as server:
            with pytest.raises(InvalidStatus) as info:
                await first_message(server.port_number, "/nowhere?x=1")
            response = info.value.response
            assert response.status == 404
            assert response.body == b"No WebSocket route for path /nowhere\n"

    run(main())


def test_trailing_slash_redirect_is_followed_by_the_client() -> None:
    async def main() -> None:
        async with route(make_router(), "127.0.0.1", 0) as server:
            assert await first_message(server.port_number, "/chat/x/?t=1") == "chat:x:/chat/x?t=1"

    run(main())


def test_plain_http_and_bad_encoding() -> None:
    async def status_of(port: int, head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        line = await reader.readline()
        writer.close()
        return line

    async def main() -> None:
        async with route(make_router(), "127.0.0.1", 0) as server:
            port = server.port_number
            plain = b"GET /chat/x HTTP/1.1\r\nHost: h\r\n\r\n"
            assert (await status_of(port, plain)).startswith(b"HTTP/1.1 426 ")
            unknown = b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
            assert (await status_of(port, unknown)).startswith(b"HTTP/1.1 404 ")
            bad = b"GET /chat/%FF HTTP/1.1\r\nHost: h\r\n\r\n"
            assert (await status_of(port, bad)).startswith(b"HTTP/1.1 400 ")

    run(main())


def test_process_request_runs_before_routing() -> None:
    def deny(ws: ServerConnection, request: Request) -> Response | None:
        return ws.respond(401, "token required") if "token" not in request.path else None

    async def main() -> None:
        async with route(make_router(), "127.0.0.1", 0, process_request=deny) as server:
            port = server.port_number
            with pytest.raises(InvalidStatus) as info:
                await first_message(port, "/nowhere")
            assert info.value.response.status == 401
            assert await first_message(port, "/users/1?token=t") == "user:2"

    run(main())
