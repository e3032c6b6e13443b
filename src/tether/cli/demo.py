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

The room is the hub channel ``chat`` (:mod:`tether.hub`): in-process by default, or shared by
every worker and host on the same Redis with ``--redis``. Every message the server sends carries
the channel's ``offset`` and ``epoch``; a page that reconnects to ``/chat?since=OFFSET&epoch=E``
first gets what it missed, in order, or ``{"type": "unrecoverable", "reason"}``. While the hub
has lost Redis, the room gets ``{"type": "down", "reason"}`` and then ``{"type": "up"}``.

Only public APIs are used: :func:`tether.serve`, :class:`tether.hub.Hub` for the room, a
``process_request`` hook for the plain HTTP routes, and :mod:`tether.asyncio.workers` for
``--workers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.resources
import json
import logging
import signal
import ssl as ssl_module
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from .. import Headers, Request, Response, Server, ServerConnection, __version__, serve
from ..asyncio.workers import WorkerInfo, read_status
from ..exceptions import HubError, HubUnavailable
from ..hub import Hub, JsonCodec, MemoryBackend, Message, RedisBackend

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
    #: Processes sharing the port (SO_REUSEPORT); see ``tether.asyncio.workers``.
    workers: int = 1
    #: ``redis://...``: the chat room's hub backend, shared across workers and hosts.
    redis: str | None = None
    #: Chat messages kept for reconnecting pages.
    history: int = 1000


#: The hub channel of the chat room.
CHAT = "chat"


class ChatCodec(JsonCodec):
    """Chat messages as the page expects them: the chat JSON object itself, plus the channel's
    ``offset`` and ``epoch``; signals as in :mod:`tether.hub.wire`."""

    def message(self, message: Message) -> str:
        try:
            fields = json.loads(message.data)
        except (TypeError, ValueError):
            fields = None
        if not isinstance(fields, dict):
            return super().message(message)
        fields["offset"] = message.offset
        fields["epoch"] = message.epoch
        return json.dumps(fields, ensure_ascii=False)


def make_hub(options: ServeOptions) -> Hub:
    """The chat room's hub for ``options`` (not started)."""
    if options.redis:
        backend: Any = RedisBackend(options.redis, history_size=options.history)
    else:
        backend = MemoryBackend(history_size=options.history)
    return Hub(backend, codec=ChatCodec(), max_message_size=4 * MAX_TEXT + 1024)


def _recovery(path: str) -> tuple[int | None, str | None]:
    """``since`` and ``epoch`` from ``/chat?since=N&epoch=E`` (``None`` when absent or bad)."""
    query = urllib.parse.parse_qs(path.partition("?")[2])
    since = query.get("since", [""])[0]
    epoch = query.get("epoch", [None])[0]
    if not since.isdigit() or len(since) > 18:
        return None, None
    return int(since), epoch


def load_page() -> bytes:
    """The demo page, from the installed package."""
    return importlib.resources.files("tether.cli").joinpath("demo.html").read_bytes()


def _is_upgrade(request: Request) -> bool:
    return any("websocket" in value.lower() for value in request.headers.get_all("Upgrade"))


class DemoServer:
    """Routes and handlers; :func:`run` puts them behind :func:`tether.serve`."""

    def __init__(
        self,
        page: bytes | None = None,
        hub: Hub | None = None,
        worker: WorkerInfo | None = None,
    ) -> None:
        self.page = page if page is not None else load_page()
        #: The chat room's hub (started by :func:`run`).
        self.hub = hub if hub is not None else make_hub(ServeOptions())
        self.worker = worker
        #: Open connections to /chat.
        self.room: set[ServerConnection] = set()
        self._guests = 0

    # --- plain HTTP ------------------------------------------------------------------------------

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Answer the plain HTTP routes and unknown paths; ``None`` lets the handshake go on."""
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return self._health(ws)
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

    def _health(self, ws: ServerConnection) -> Response:
        """``200 ok`` for one process on the in-process hub; else JSON: the hub's state and,
        with workers, every worker's (503 when something is wrong)."""
        if self.worker is None and self.hub.backend.kind == "memory":
            return ws.respond(200, "ok")
        report: dict[str, Any] = {"hub": self.hub.health()}
        ok = bool(report["hub"]["ok"])
        if self.worker is not None:
            report["worker"] = self.worker.index
            report.update(read_status(self.worker.status_dir))
            ok = ok and bool(report["ok"])
        report["ok"] = ok
        body = json.dumps(report, indent=2).encode() + b"\n"
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
            ]
        )
        status = 200 if ok else 503
        return Response(status, "OK" if ok else "Service Unavailable", headers, body)

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
        since, epoch = _recovery("" if ws.request is None else ws.request.path)
        try:
            await self.hub.start()  # once; run() starts it before serving
            await self.hub.subscribe(ws, CHAT, since=since, epoch=epoch)
        except HubError as exc:
            logger.warning("%s cannot join the chat: %s", _peer(ws), exc)
            await ws.close(1011, "the chat room is unavailable; retry later")
            return
        self.room.add(ws)
        logger.info("%s joined the chat as %r (%d online)", _peer(ws), name, len(self.room))
        await self._announce("join", name)
        try:
            async for message in ws:
                relayed = self._relay(message, name)
                if relayed is None:
                    continue
                name = relayed["name"]
                try:
                    await self.hub.publish(CHAT, json.dumps(relayed, ensure_ascii=False))
                except HubUnavailable as exc:
                    error = {"type": "error", "reason": f"message not sent: {exc.reason}"}
                    await ws.send(json.dumps(error))
        finally:
            self.room.discard(ws)
            self.hub.unsubscribe(ws)
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
        notice: dict[str, Any] = {"type": kind, "name": name}
        if self.worker is None and self.hub.backend.kind == "memory":
            notice["count"] = len(self.room)  # only one process knows everyone
        try:
            await self.hub.publish(CHAT, json.dumps(notice, ensure_ascii=False))
        except HubUnavailable as exc:
            logger.warning("chat: %s of %s not announced: %s", kind, name, exc)


def _authority(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return _authority(str(address[0]), address[1])
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
        found.append(f"{scheme}://{_authority(host, port)}")
    return found


async def run(
    options: ServeOptions,
    *,
    ready: Callable[[Server, DemoServer], None] | None = None,
    page: bytes | None = None,
    worker: WorkerInfo | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection with 1001 and return.

    A second signal stops waiting for connections to close. As one of several ``worker``
    processes, listen with ``SO_REUSEPORT`` and report state for ``/healthz`` every second.
    """
    demo = DemoServer(page, make_hub(options), worker)
    ssl = tls_context(options.certfile, options.keyfile) if options.certfile else None
    kwargs: dict[str, Any] = {}
    if options.origins is not None:
        kwargs["origins"] = list(options.origins)
    if worker is not None:
        kwargs["reuse_port"] = True
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
    await demo.hub.start()
    try:
        await server.start()
    except BaseException:
        await demo.hub.close()
        raise
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
    # A worker leaves SIGINT to its supervisor, which turns it into one SIGTERM.
    for signum in (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not on this platform or thread
            pass
    reporting = None
    if worker is not None:
        reporting = loop.create_task(_report(worker, server, demo, stop))
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
        if reporting is not None:
            reporting.cancel()
        await demo.hub.close()


async def _report(
    worker: WorkerInfo, server: Server, demo: DemoServer, stop: asyncio.Event
) -> None:
    while True:
        if worker.orphaned and not stop.is_set():
            logger.error("worker %d: the supervisor is gone; stopping", worker.index)
            stop.set()
        health = demo.hub.health()
        worker.report(
            {
                "state": "closing" if stop.is_set() else "serving",
                "ok": bool(health["ok"]),
                "connections": len(server.connections),
                "chat": len(demo.room),
                "hub": health["backend"],
            }
        )
        await asyncio.sleep(1.0)


def serve_workers(options: ServeOptions, *, banner: Callable[[list[str]], None]) -> int:
    """``tether serve --workers N``: N processes on one port; returns the exit status."""
    from ..asyncio.workers import free_reuse_port, supervise

    reserved = None
    port = options.port
    if port == 0:  # one free port for all, not one each
        reserved, port = free_reuse_port(options.host)
    options = dataclasses.replace(options, port=port)
    base = f"{'https' if options.certfile else 'http'}://{_authority(options.host, port)}"

    started = False

    def ready(info: WorkerInfo | None, status_dir: str) -> None:
        nonlocal started
        if reserved is not None:
            reserved.close()
        banner([base])
        started = True

    try:
        code = supervise(functools.partial(run_worker, options), options.workers, ready=ready)
    finally:
        if reserved is not None:
            reserved.close()
    if started:
        print("Server stopped.", flush=True)
    return code


def run_worker(options: ServeOptions, worker: WorkerInfo) -> None:
    """A worker process's body (see :func:`tether.asyncio.workers.supervise`)."""
    try:
        asyncio.run(run(options, worker=worker))
    except (OSError, ssl_module.SSLError, ValueError, HubError) as exc:
        logger.error("worker %d cannot serve: %s", worker.index, exc)
        raise SystemExit(1) from None
