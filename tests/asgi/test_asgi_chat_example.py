"""examples/asgi_chat: the FastAPI chat served by ``uvicorn --ws tether.asgi:UvicornProtocol``.

One uvicorn subprocess for the module; clients are headless Chromium (two pages chatting), the
websockets library and Node's ``ws``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.asgi import UvicornProcess, require_module
from helpers.browser import Browser
from helpers.node import run_node_client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "asgi_chat"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def chat_server() -> Iterator[UvicornProcess]:
    require_module("fastapi")
    with UvicornProcess.running("app:app", EXAMPLE) as server:
        yield server


@pytest.mark.browser
def test_two_browser_pages_chat(chat_server: UvicornProcess, browser: Browser) -> None:
    alice = browser.open(chat_server.url("/?name=alice"))
    alice.wait_for("document.body.dataset.state === 'open'")
    bob = browser.open(chat_server.url("/?name=bob"))
    bob.wait_for("document.body.dataset.state === 'open'")
    # What Chromium negotiated with tether: the subprotocol it asked for, and compression.
    assert bob.eval("document.body.dataset.protocol") == "chat.v1"
    assert "permessage-deflate" in bob.eval("document.body.dataset.extensions")
    alice.wait_for("document.getElementById('log').textContent.includes('bob joined')")

    alice.type("#text", "hello bob ☃")
    alice.click("#send")
    bob.wait_for("document.getElementById('log').textContent.includes('alice: hello bob ☃')")
    bob.type("#text", "hi alice")
    bob.click("#send")
    alice.wait_for("document.getElementById('log').textContent.includes('bob: hi alice')")

    bob.close()
    alice.wait_for("document.getElementById('log').textContent.includes('bob left')")


@pytest.mark.node
def test_websockets_and_node_clients_chat(chat_server: UvicornProcess) -> None:
    client = require_module("websockets.asyncio.client")

    async def main() -> None:
        url = chat_server.url("/chat?name=py", scheme="ws")
        async with client.connect(url, subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            assert ws.response.headers["server"] == "uvicorn"
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            assert json.loads(await ws.recv())["type"] == "join"  # our own

            node = asyncio.create_task(
                asyncio.to_thread(
                    run_node_client,
                    chat_server.url("/chat?name=node", scheme="ws"),
                    ["hello from node"],
                    protocols=["chat.v1"],
                    expect=3,
                )
            )
            assert json.loads(await ws.recv()) == {"type": "join", "name": "node", "count": 2}
            message = json.loads(await ws.recv())
            assert message == {"type": "message", "name": "node", "text": "hello from node"}
            await ws.send("hello from python")
            result = await node
            assert result.error is None, result.error
            assert result.protocol == "chat.v1"
            assert result.extensions is not None and "permessage-deflate" in result.extensions
            replies = [json.loads(item) for item in result.received]
            assert replies[2] == {"type": "message", "name": "py", "text": "hello from python"}
            assert result.close_code == 1000
            own = json.loads(await ws.recv())
            assert own == {"type": "message", "name": "py", "text": "hello from python"}
            left = json.loads(await ws.recv())
            assert left == {"type": "leave", "name": "node", "count": 1}

    asyncio.run(asyncio.wait_for(main(), 30))


def test_page_and_refusals(chat_server: UvicornProcess) -> None:
    websockets = require_module("websockets.asyncio.client")
    exceptions = require_module("websockets.exceptions")

    async def main() -> None:
        # A too-long chat line: the app closes with 1009 and says why.
        url = chat_server.url("/chat?name=big", scheme="ws")
        async with websockets.connect(url) as ws:
            await ws.recv()  # join
            await ws.send("x" * 3000)
            with pytest.raises(exceptions.ConnectionClosedError) as raised:
                while True:
                    await ws.recv()
        assert raised.value.rcvd.code == 1009
        assert "2000 characters" in raised.value.rcvd.reason
        # A path with no WebSocket route: the application denies it (Starlette sends 403).
        with pytest.raises(exceptions.InvalidStatus) as denied:
            await websockets.connect(chat_server.url("/nowhere", scheme="ws"))
        assert denied.value.response.status_code == 403

    asyncio.run(asyncio.wait_for(main(), 20))
