"""Hub test tools: a hub behind a real tether server on 127.0.0.1, and a wire-protocol client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from tether import ClientConnection, ServerConnection, connect, serve
from tether.hub import Backend, Hub, MemoryBackend, RedisBackend
from tether.limits import Limits
from tether.sansio.backoff import Backoff

FAST = Backoff(first_delay=0, initial=0.05, factor=1.5, max_delay=0.2, jitter=0)


def make_backend(kind: str, url: str | None, **kwargs: Any) -> Backend:
    if kind == "memory":
        return MemoryBackend(**kwargs)
    assert url is not None
    return RedisBackend(url, backoff=FAST, block=1.0, connect_timeout=0.5, **kwargs)


@contextlib.asynccontextmanager
async def hub_server(
    hub: Hub, *, allow_publish: bool = True, limits: Limits | None = None
) -> AsyncIterator[int]:
    """Start ``hub`` and a server whose connections speak the wire protocol; yield the port."""

    async def handler(ws: ServerConnection) -> None:
        await hub.serve(ws, allow_publish=allow_publish)

    async with hub, serve(handler, "127.0.0.1", 0, compression=None, limits=limits) as server:
        yield server.port_number


class Client:
    """A wire-protocol client that records what it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def request(self, **fields: Any) -> None:
        await self.ws.send(json.dumps(fields))

    async def next(self) -> dict[str, Any]:
        data = await self.ws.recv()
        assert isinstance(data, str)
        result: dict[str, Any] = json.loads(data)
        return result

    async def pubs(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` messages of type pub (failing on anything else)."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            item = await self.next()
            assert item["type"] == "pub", item
            got.append(item)
        return got

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Everything received up to and including the first item matching ``predicate``."""
        got = []
        while True:
            item = await self.next()
            got.append(item)
            if predicate(item):
                return got


@contextlib.asynccontextmanager
async def client(port: int, **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(f"ws://127.0.0.1:{port}/", compression=None, **kwargs) as ws:
        yield Client(ws)
