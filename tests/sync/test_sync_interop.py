"""tether.sync against other libraries on 127.0.0.1, both ways: websockets (asyncio and
threading), aiohttp, and Node's ``ws``.

Each peer's server echoes, supports the subprotocol "chat" and permessage-deflate, and records
the close code it received; each peer's client sends messages, collects the echoes and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers.node import NodeWsServer, node_available, run_node_client
from helpers.sync_server import running, uri
from tether import ConnectionClosed
from tether.sync import ServerConnection, connect

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
TEXT = "héllo, wörld " * 100
BINARY = os.urandom(MiB)


@dataclass
class Peer:
    url: str
    closes: list[tuple[int | None, str | None]] = field(default_factory=list)
    wait_close: Callable[[], tuple[int | None, str | None]] | None = None


def _in_loop_thread(main: Callable[[asyncio.Event, list[Any]], Any]) -> Iterator[Any]:
    """Run ``main(stop, out)`` on an event loop in a thread; yield what it puts in ``out``."""
    ready = threading.Event()
    out: list[Any] = []
    holder: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def runner() -> None:
        stop = asyncio.Event()
        holder.append((asyncio.get_running_loop(), stop))
        await main(stop, out)

    def target() -> None:
        try:
            asyncio.run(runner())
        finally:
            ready.set()

    thread = threading.Thread(target=target)
    thread.start()
    deadline_ok = False
    for _ in range(200):
        if out or not thread.is_alive():
            deadline_ok = True
            break
        ready.wait(0.05)
    assert deadline_ok and out, "the peer server did not start"
    try:
        yield out[0]
    finally:
        loop, stop = holder[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@contextlib.contextmanager
def websockets_asyncio_server() -> Iterator[Peer]:
    from websockets.asyncio.server import serve

    closes: list[tuple[int | None, str | None]] = []

    async def handler(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                await ws.send(message)
        closes.append((ws.close_code, ws.close_reason))

    async def main(stop: asyncio.Event, out: list[Any]) -> None:
        async with serve(handler, "127.0.0.1", 0, subprotocols=["chat"], max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            out.append(Peer(f"ws://127.0.0.1:{port}/", closes))
            await stop.wait()

    yield from _in_loop_thread(main)


@contextlib.contextmanager
def websockets_sync_server() -> Iterator[Peer]:
    from websockets.sync.server import serve

    closes: list[tuple[int | None, str | None]] = []

    def handler(ws: Any) -> None:
        with contextlib.suppress(Exception):
            for message in ws:
                ws.send(message)
        closes.append((ws.close_code, ws.close_reason))

    with serve(handler, "127.0.0.1", 0, subprotocols=["chat"], max_size=None) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield Peer(f"ws://127.0.0.1:{server.socket.getsockname()[1]}/", closes)
        finally:
            server.shutdown()
            thread.join(10)
    # websockets 17's serve_forever() leaves its selector to the garbage collector.
    gc.collect()


@contextlib.contextmanager
def aiohttp_server() -> Iterator[Peer]:
    closes: list[tuple[int | None, str | None]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["chat"], max_msg_size=0, compress=True)
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        closes.append((ws.close_code, None))
        return ws

    async def main(stop: asyncio.Event, out: list[Any]) -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        out.append(Peer(f"ws://127.0.0.1:{port}/", closes))
        await stop.wait()
        await runner.cleanup()

    yield from _in_loop_thread(main)


@contextlib.contextmanager
def node_server() -> Iterator[Peer]:
    reason = node_available()
    if reason is not None:
        from conftest import _require

        _require(reason)
    with NodeWsServer(protocols=["chat"]) as server:

        def wait_close() -> tuple[int | None, str | None]:
            event = server.wait_event("close")
            return event["code"], event["reason"]

        yield Peer(server.url(), wait_close=wait_close)


SERVERS = {
    "websockets-asyncio": websockets_asyncio_server,
    "websockets-sync": websockets_sync_server,
    "aiohttp": aiohttp_server,
    "node-ws": node_server,
}


@pytest.mark.parametrize("peer", sorted(SERVERS))
def test_sync_client_with_peer_server(peer: str) -> None:
    with SERVERS[peer]() as server:
        with connect(server.url, subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            assert [e.name for e in ws.extensions] == ["permessage-deflate"]
            ws.send(TEXT)
            assert ws.recv(timeout=10) == TEXT
            ws.send(BINARY)
            assert ws.recv(timeout=10) == BINARY
            ws.send(["frag", "men", "ted"])
            assert ws.recv(timeout=10) == "fragmented"
            assert ws.ping().result(10) > 0
            ws.close(4001, "bye")
        # The peer's answer: the same code, but aiohttp answers any close with 1000.
        assert ws.close_code == (1000 if peer == "aiohttp" else 4001)
        if server.wait_close is not None:
            assert server.wait_close() == (4001, "bye")
        else:
            for _ in range(200):
                if server.closes:
                    break
                threading.Event().wait(0.02)
            code, reason = server.closes[0]
            assert code == 4001 and reason in (None, "bye")


# --- peers' clients against the sync server ---------------------------------------------------


def websockets_asyncio_client(url: str) -> tuple[list[Any], str | None, bool]:
    from websockets.asyncio.client import connect as ws_connect

    async def main() -> tuple[list[Any], str | None, bool]:
        async with ws_connect(url, subprotocols=["chat"], max_size=None) as ws:  # type: ignore[list-item]
            replies = []
            for message in (TEXT, BINARY):
                await ws.send(message)
                replies.append(await ws.recv())
            await ws.send(["frag", "men", "ted"])
            replies.append(await ws.recv())
            await ws.close(4002, "done")
            return replies, ws.subprotocol, bool(ws.protocol.extensions)

    return asyncio.run(main())


def websockets_sync_client(url: str) -> tuple[list[Any], str | None, bool]:
    from websockets.sync.client import connect as ws_connect

    with ws_connect(url, subprotocols=["chat"], max_size=None) as ws:  # type: ignore[list-item]
        replies = []
        for message in (TEXT, BINARY):
            ws.send(message)
            replies.append(ws.recv(timeout=10))
        ws.send(["frag", "men", "ted"])
        replies.append(ws.recv(timeout=10))
        ws.close(4002, "done")
        return replies, ws.subprotocol, bool(ws.protocol.extensions)


def aiohttp_client(url: str) -> tuple[list[Any], str | None, bool]:
    async def main() -> tuple[list[Any], str | None, bool]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=["chat"], max_msg_size=0, compress=15) as ws,
        ):
            replies = []
            await ws.send_str(TEXT)
            replies.append((await ws.receive()).data)
            await ws.send_bytes(BINARY)
            replies.append((await ws.receive()).data)
            await ws.send_str("fragmented")
            replies.append((await ws.receive()).data)
            await ws.close(code=4002, message=b"done")
            return replies, ws.protocol, bool(ws.compress)

    return asyncio.run(main())


CLIENTS = {
    "websockets-asyncio": websockets_asyncio_client,
    "websockets-sync": websockets_sync_client,
    "aiohttp": aiohttp_client,
}


@pytest.mark.parametrize("peer", sorted(CLIENTS))
def test_peer_client_with_sync_server(peer: str) -> None:
    closes: list[tuple[int | None, str | None]] = []
    done = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            for message in ws:
                ws.send(message)
        finally:
            closes.append((ws.close_code, ws.close_reason))
            done.set()

    with running(handler, subprotocols=["chat"], limits=_big_limits()) as server:
        replies, subprotocol, compressed = CLIENTS[peer](uri(server))
        assert replies == [TEXT, BINARY, "fragmented"]
        assert subprotocol == "chat"
        assert compressed
        assert done.wait(10)
        assert closes == [(4002, "done")]


def _big_limits() -> Any:
    from tether import Limits

    return Limits(max_message_size=2 * MiB)


@pytest.mark.node
def test_node_client_with_sync_server() -> None:
    closes: list[tuple[int | None, str | None]] = []

    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                ws.send(message)
        closes.append((ws.close_code, ws.close_reason))

    with running(handler, subprotocols=["chat"], limits=_big_limits()) as server:
        result = run_node_client(
            uri(server), [TEXT, BINARY[:20_000], "x" * 30_000], protocols=["chat"]
        )
        assert result.error is None
        assert result.received == [TEXT, BINARY[:20_000], "x" * 30_000]
        assert result.protocol == "chat"
        assert result.extensions is not None and "permessage-deflate" in result.extensions
        assert result.close_code == 1000
        for _ in range(200):
            if closes:
                break
            threading.Event().wait(0.02)
        assert closes == [(1000, "done")]
