"""The server behind ``tether serve``: a demo page, an echo endpoint and a chat room.

Routes, on one port:

- ``GET /`` without an upgrade: the demo page (``demo.html``, self-contained);
- ``GET /healthz``: ``200 ok``, for load balancers and scripts;
- WebSocket ``/echo`` (and ``/``): every message comes back unchanged;
- WebSocket ``/chat``: a room; every message goes to everyone in it, and joins and leaves are
  announced.

The chat speaks JSON text messages. A client sends ``{"type": "message", "name", "text"}``;
the server sends ``{"type": "message", "name", "text", "time"}`` (``time`` in seconds since
the epoch) and ``{"type": "join" | "leave", "name", "count"}``. A text message that is not such
JSON is taken as the text of a message from the sender, so that ``tether connect`` can chat too.

Only the public asyncio API is used: :func:`tether.serve`, :func:`tether.broadcast`, and a
``process_request`` hook for the plain HTTP routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import json
import logging
import signal
import ssl as ssl_module
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from .. import Headers, Request, Response, Server, ServerConnection, __version__, broadcast, serve

__all__ = [
    "DEFAULT_SUBPROTOCOLS",
    "DemoServer",
    "ServeOptions",
    "load_page",
    "run",
    "tls_context",
    "urls",
]

#: Subprotocols offered by the demo page, supported unless ``--subprotocol`` says otherwise.
DEFAULT_SUBPROTOCOLS = ("chat.v2", "chat")

#: Longest name and text relayed in the chat room, in characters.
MAX_NAME = 32
MAX_TEXT = 4000

logger = logging.getLogger("tether.serve")


@dataclasses.dataclass
class ServeOptions:
    """What ``tether serve`` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 8765
    subprotocols: Sequence[str] = DEFAULT_SUBPROTOCOLS
    #: ``"deflate"``, a preset name or ``None`` (see ``tether.serve``).
    compression: str | None = "deflate"
    #: Allowed ``Origin`` values; ``None`` allows any.
    origins: Sequence[str] | None = None
    certfile: str | None = None
    keyfile: str | None = None


def load_page() -> bytes:
    """The demo page, from the installed package."""
    return importlib.resources.files("tether.cli").joinpath("demo.html").read_bytes()


def _is_upgrade(request: Request) -> bool:
    return any("websocket" in value.lower() for value in request.headers.get_all("Upgrade"))


class DemoServer:
    """Routes and handlers; :func:`run` puts them behind :func:`tether.serve`."""

    def __init__(self, page: bytes | None = None) -> None:
        self.page = page if page is not None else load_page()
        #: Open connections to /chat.
        self.room: set[ServerConnection] = set()
        self._guests = 0

    # --- plain HTTP ------------------------------------------------------------------------------

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Answer the plain HTTP routes and unknown paths; ``None`` lets the handshake go on."""
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return ws.respond(200, "ok")
        if _is_upgrade(request):
            if path in ("/", "/echo", "/chat"):
                return None
            return ws.respond(404, f"No WebSocket endpoint at {path}; try /echo or /chat.")
        if path == "/":
            if request.method not in ("GET", "HEAD"):
                return ws.respond(405, f"Method {request.method} not allowed; use GET.")
            return self._page(head=request.method == "HEAD")
        if path in ("/echo", "/chat"):
            return None  # a WebSocket endpoint: tether answers 426 with Upgrade: websocket
        return ws.respond(404, f"Nothing at {path}; the demo page is at /.")

    def _page(self, *, head: bool) -> Response:
        headers = Headers(
            [
                ("Server", f"tether/{__version__}"),
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(self.page))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, b"" if head else self.page)

    # --- WebSocket -------------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        request = ws.request
        path = "/" if request is None else request.path.partition("?")[0]
        try:
            if path == "/chat":
                await self.chat(ws)
            else:
                await self.echo(ws)
        finally:
            logger.info(
                "%s %s closed: %s",
                _peer(ws),
                path,
                f"{ws.close_code} {ws.close_reason}".strip()
                if ws.close_code is not None
                else "open",
            )

    async def echo(self, ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def chat(self, ws: ServerConnection) -> None:
        name = self._join_name(ws)
        self.room.add(ws)
        logger.info("%s joined the chat as %r (%d online)", _peer(ws), name, len(self.room))
        await self._announce("join", name)
        try:
            async for message in ws:
                relayed = self._relay(message, name)
                if relayed is None:
                    continue
                name = relayed["name"]
                broadcast(self.room, json.dumps(relayed, ensure_ascii=False))
        finally:
            self.room.discard(ws)
            await self._announce("leave", name)

    def _join_name(self, ws: ServerConnection) -> str:
        """The name to announce: the page's own (``/chat?name=...``), else ``guest-N``.

        The page sends the name it shows in its name field, so that the join notice and the
        messages that follow carry the same name.
        """
        self._guests += 1
        guest = f"guest-{self._guests}"
        request = ws.request
        if request is None:
            return guest
        query = urllib.parse.parse_qs(request.path.partition("?")[2])
        name = query.get("name", [""])[0].strip()[:MAX_NAME]
        return name or guest

    def _relay(self, message: str | bytes, guest: str) -> dict[str, Any] | None:
        """The chat message to send to everyone for ``message``, or ``None`` to drop it."""
        if isinstance(message, bytes):
            return None
        try:
            data = json.loads(message)
        except ValueError:
            data = {"type": "message", "text": message}
        if not isinstance(data, dict) or data.get("type") != "message":
            return None
        name = str(data.get("name") or guest).strip()[:MAX_NAME] or guest
        text = str(data.get("text", ""))[:MAX_TEXT]
        return {"type": "message", "name": name, "text": text, "time": time.time()}

    async def _announce(self, kind: str, name: str) -> None:
        notice = {"type": kind, "name": name, "count": len(self.room)}
        broadcast(self.room, json.dumps(notice, ensure_ascii=False))


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        return f"{host}:{address[1]}"
    return "-"


def tls_context(certfile: str, keyfile: str | None) -> ssl_module.SSLContext:
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def urls(server: Server, secure: bool) -> list[str]:
    """Base URLs (``http://host:port``) of every socket the server listens on."""
    scheme = "https" if secure else "http"
    found = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        found.append(f"{scheme}://{host}:{port}")
    return found


async def run(
    options: ServeOptions,
    *,
    ready: Callable[[Server, DemoServer], None] | None = None,
    page: bytes | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection with 1001 and return.

    A second signal stops waiting for connections to close.
    """
    demo = DemoServer(page)
    ssl = tls_context(options.certfile, options.keyfile) if options.certfile else None
    kwargs: dict[str, Any] = {}
    if options.origins is not None:
        kwargs["origins"] = list(options.origins)
    server = serve(
        demo.handler,
        options.host,
        options.port,
        subprotocols=list(options.subprotocols),
        compression=options.compression,
        process_request=demo.process_request,
        ssl=ssl,
        server_header=f"tether/{__version__}",
        # Browsers open spare connections that may never send a request; do not let them
        # hold shutdown for long.
        open_timeout=5,
        **kwargs,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logger.info("received %s: closing connections with 1001", signal.Signals(signum).name)
            stop.set()
        elif main is not None:
            main.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not on this platform or thread
            pass
    try:
        if ready is not None:
            ready(server, demo)
        await stop.wait()
        server.close()
        await server.wait_closed()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if not stop.is_set():
            server.close()
