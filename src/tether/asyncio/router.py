"""``route()``: serve several WebSocket endpoints by path from one asyncio server.

::

    router = Router()

    @router.route("/chat/{room}")
    async def chat(ws, room):
        ...

    async with route(router, "127.0.0.1", 8765) as server:
        await server.serve_forever()

Path matching is sans-I/O (:mod:`tether.sansio.routing`); this module only plugs it into
:func:`~tether.asyncio.server.serve` as a ``process_request`` step that answers 404 (or 308,
or 400) before the handshake, and a handler that calls ``handler(ws, **params)``, the calling
convention of websockets' ``route()``.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..sansio.http11 import Request, Response
from ..sansio.routing import Match, Router
from .server import ProcessRequest, Server, ServerConnection, serve

__all__ = ["RoutedHandler", "Router", "route"]

#: ``async def handler(ws, **params)``: the route's parameters come as keyword arguments.
RoutedHandler = Callable[..., Awaitable[None]]


def route(
    router: Router[RoutedHandler],
    host: str | None = None,
    port: int | None = None,
    *,
    process_request: ProcessRequest | None = None,
    **kwargs: Any,
) -> Server:
    """Create a server that dispatches each connection by its request path.

    An unknown path is answered with 404 and a body naming the path; a path that only
    differs from a route by a trailing slash with a 308 to that route (see
    :class:`~tether.sansio.routing.Router`); the query string plays no part. Other requests
    are checked as :func:`serve` checks them (method, ``Upgrade``, version...).

    Args:
        router: the routes; each handler is called as ``await handler(ws, **params)``.
        host, port: where to listen.
        process_request: runs first, as with :func:`serve`; a response it returns is sent
            instead of routing.
        kwargs: every other :func:`serve` option.
    """
    matches: weakref.WeakKeyDictionary[ServerConnection, Match[RoutedHandler]] = (
        weakref.WeakKeyDictionary()
    )

    async def dispatch(ws: ServerConnection, request: Request) -> Response | None:
        if process_request is not None:
            result = process_request(ws, request)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        found = router.answer(ws.protocol, request.path)
        if isinstance(found, Response):
            return found
        matches[ws] = found
        return None

    async def handler(ws: ServerConnection) -> None:
        found = matches.pop(ws)
        await found.handler(ws, **found.params)

    return serve(handler, host, port, process_request=dispatch, **kwargs)
