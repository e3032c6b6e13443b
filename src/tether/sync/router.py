"""``route()``: serve several WebSocket endpoints by path from one threading server.

::

    router = Router()

    @router.route("/chat/{room}")
    def chat(ws, room):
        ...

    with route(router, "127.0.0.1", 8765) as server:
        server.serve_forever()

Path matching is sans-I/O (:mod:`tether.sansio.routing`), as for ``tether.asyncio.router``:
a ``process_request`` step answers 404 (or 308, or 400) before the handshake, and the handler
is called as ``handler(ws, **params)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sansio.http11 import Request, Response
from ..sansio.routing import Match, Router
from .server import ProcessRequest, Server, ServerConnection, serve

__all__ = ["RoutedHandler", "Router", "route"]

#: ``def handler(ws, **params)``: the route's parameters come as keyword arguments.
RoutedHandler = Callable[..., None]


def route(
    router: Router[RoutedHandler],
    host: str | None = None,
    port: int | None = None,
    *,
    process_request: ProcessRequest | None = None,
    **kwargs: Any,
) -> Server:
    """Create a server that dispatches each connection by its request path.

    An unknown path is answered with 404 and a body naming the path; a path that only differs
    from a route by a trailing slash with a 308 to that route; the query string plays no part.

    Args:
        router: the routes; each handler is called as ``handler(ws, **params)``.
        host, port: where to listen.
        process_request: runs first, as with :func:`serve`; a response it returns is sent
            instead of routing.
        kwargs: every other :func:`serve` option.
    """

    def dispatch(ws: ServerConnection, request: Request) -> Response | None:
        if process_request is not None:
            result = process_request(ws, request)
            if result is not None:
                return result
        found = router.answer(ws.protocol, request.path)
        return found if isinstance(found, Response) else None

    def handler(ws: ServerConnection) -> None:
        # Routed again rather than kept from dispatch(): no state shared between connection
        # threads, and nothing left behind by a connection refused after routing.
        assert ws.request is not None
        found = router.resolve(ws.request.path)
        if not isinstance(found, Match):  # the router changed since the handshake
            raise LookupError(f"no route for {ws.request.path} any more")
        found.handler(ws, **found.params)

    return serve(handler, host, port, process_request=dispatch, **kwargs)
