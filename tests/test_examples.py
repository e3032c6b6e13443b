"""The programs in examples/, written as websockets' documentation writes them, run on tether
with only the changes that docs/from-websockets.md lists (their import lines)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers.aio import run as aio_run
from tether import ClientConnection, InvalidStatus, Server, ServerConnection, connect, serve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.timeout(60)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 40)


async def start(
    example: ModuleType,
) -> tuple[asyncio.Task[None], asyncio.Future[None], str]:
    """Run the example's ``main()`` on a free port; return its task, its stop future, its URI."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    started: asyncio.Future[Server] = loop.create_future()
    task = asyncio.create_task(example.main(0, ready=started.set_result, stop=stop))
    server = await started
    return task, stop, f"ws://127.0.0.1:{server.port_number}"


@pytest.mark.parametrize("name", ["chat_broadcast", "token_auth", "reconnecting_client"])
def test_examples_differ_from_websockets_only_in_their_imports(name: str) -> None:
    """Each line that differs is an import, next to a comment quoting websockets' line."""
    source = (EXAMPLES / f"{name}.py").read_text()
    comments = re.findall(r"^# websockets: (from websockets\.[\w.]+ import [\w, ]+)", source, re.M)
    assert comments, "the websockets import is quoted"
    assert "websockets" not in re.sub(r"^#.*$|^\"\"\"[\s\S]*?\"\"\"", "", source, flags=re.M)


def test_broadcast_chat() -> None:
    chat = load("chat_broadcast")

    async def main() -> None:
        task, stop, uri = await start(chat)
        clients: list[ClientConnection] = [await connect(uri) for _ in range(3)]
        while len(chat.CLIENTS) < 3:
            await asyncio.sleep(0.01)
        await clients[0].send("hello everyone")
        for ws in clients:
            assert await ws.recv() == "hello everyone"
        await clients[2].send(b"\x01binary too")
        for ws in clients:
            assert await ws.recv() == b"\x01binary too"
        for ws in clients:
            await ws.close()
        stop.set_result(None)
        await task
        assert not chat.CLIENTS

    run(main())


def test_token_checking_server_answers_401() -> None:
    auth = load("token_auth")

    async def main() -> None:
        task, stop, uri = await start(auth)
        for query, text in [("", "Missing token\n"), ("?token=wrong", "Invalid token\n")]:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{uri}/{query}")
            response = refused.value.response
            assert (response.status, response.reason) == (401, "Unauthorized")
            assert response.body == text.encode()
        async with connect(f"{uri}/?token=secret") as ws:
            assert await ws.recv() == "Hello alice!"
            await ws.send("echo")
            assert await ws.recv() == "echo"
        stop.set_result(None)
        await task

    run(main())


def test_reconnecting_client_survives_a_server_restart() -> None:
    client = load("reconnecting_client")

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        received: list[str] = []
        arrived = asyncio.Event()

        def on_message(message: str) -> None:
            received.append(message)
            arrived.set()

        server = await serve(echo, "127.0.0.1", 0)
        port = server.port_number
        consumer = asyncio.create_task(
            client.consume(f"ws://127.0.0.1:{port}/", on_message, rounds=2)
        )

        async def next_message() -> None:
            # The client's own failure, if any, rather than waiting forever.
            waiter = asyncio.ensure_future(arrived.wait())
            await asyncio.wait([consumer, waiter], return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                consumer.result()
            arrived.clear()

        await next_message()
        assert received == ["hello"]
        # Restart the server: the client sees 1001, fails to connect a few times, and gets in
        # again once the new server listens on the same port.
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.3)
        server = await serve(echo, "127.0.0.1", port)
        await next_message()
        assert received == ["hello", "hello"]
        server.close()
        await server.wait_closed()
        assert await consumer == 2

    run(main())
