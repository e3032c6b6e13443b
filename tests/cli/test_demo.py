"""The demo server's chat: the join notice uses the name the page shows."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import re
from typing import Any

import pytest

from tether import connect, serve
from tether.cli.demo import DEFAULT_SUBPROTOCOLS, MAX_NAME, DemoServer


async def joined_as(path: str) -> dict[str, Any]:
    demo = DemoServer(page=b"<!doctype html>")
    async with serve(demo.handler, "127.0.0.1", 0, process_request=demo.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}{path}") as ws:
            notice = json.loads(str(await asyncio.wait_for(ws.recv(), 5)))
            assert notice["type"] == "join"
            # Messages carry the same name when the page sends it back.
            await ws.send(json.dumps({"type": "message", "name": notice["name"], "text": "hi"}))
            message = json.loads(str(await asyncio.wait_for(ws.recv(), 5)))
            assert message["name"] == notice["name"]
            # Every chat message carries the room's offset and epoch (for reconnecting pages).
            assert message["offset"] == notice["offset"] + 1
            assert message["epoch"] == notice["epoch"]
            return {k: v for k, v in notice.items() if k not in ("offset", "epoch")}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/chat?name=alice", "alice"),
        ("/chat?name=%20b%C3%B6b%20", "böb"),
        ("/chat?name=" + "x" * (MAX_NAME + 10), "x" * MAX_NAME),
        ("/chat?other=1&name=carol", "carol"),
    ],
)
def test_join_notice_uses_the_name_the_page_sends(path: str, name: str) -> None:
    notice = asyncio.run(asyncio.wait_for(joined_as(path), 10))
    assert notice == {"type": "join", "name": name, "count": 1}


@pytest.mark.parametrize("path", ["/chat", "/chat?name=", "/chat?name=%20%20"])
def test_without_a_name_the_server_names_a_guest(path: str) -> None:
    notice = asyncio.run(asyncio.wait_for(joined_as(path), 10))
    assert notice == {"type": "join", "name": "guest-1", "count": 1}


def test_the_page_offers_what_the_server_supports_by_default() -> None:
    """The page's list and ``DEFAULT_SUBPROTOCOLS`` are one list written in two languages."""
    page = importlib.resources.files("tether.cli").joinpath("demo.html").read_text()
    offered = re.search(r"const CHAT_PROTOCOLS = (\[.*?\]);", page)
    assert offered is not None
    assert json.loads(offered[1]) == list(DEFAULT_SUBPROTOCOLS)
