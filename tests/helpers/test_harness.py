"""Tests of the test harnesses themselves, and of the demo page they will drive.

Until tether's own server exists, ``StandInServer`` (built on the ``websockets`` package) plays
its part: it serves ``demo.html`` on ``GET /`` and the ``/echo`` and ``/chat`` endpoints on the
same port, picks subprotocols by server preference and negotiates permessage-deflate.

Determinism rules: every server listens on 127.0.0.1 port 0; every wait has a bound; the
browser and Node processes are ended by context managers, also when a test fails.
"""

from __future__ import annotations

import asyncio
import http
import importlib.util
import json
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from helpers.browser import Browser, BrowserError, WebDriverError, chromium_available
from helpers.node import NodeWsServer, run_node_client


def _demo_html() -> bytes:
    # Locate the installed package without importing it: the page must not depend on the
    # rest of tether being importable.
    spec = importlib.util.find_spec("tether")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0], "cli", "demo.html").read_bytes()


DEMO_HTML = _demo_html()
OPEN = "document.body.dataset.state === 'open'"


class StandInServer:
    """The planned ``tether serve`` in miniature, running its own event loop in a thread."""

    def __init__(self, subprotocols: Sequence[str] = ("chat",)) -> None:
        self.subprotocols = list(subprotocols)
        self.port = 0
        self.handshakes: list[dict[str, Any]] = []
        self.binary_received: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stand-in-server", daemon=True)
        self._room: set[ServerConnection] = set()
        self._guests = 0

    def __enter__(self) -> StandInServer:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("stand-in server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def broadcast_raw(self, text: str) -> None:
        """Send ``text`` as is to everyone in the chat room (from the test's thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(broadcast, list(self._room), text)

    def close_all(self, code: int, reason: str) -> None:
        """Close every WebSocket connection with ``code`` and ``reason``; keep serving."""
        assert self._loop is not None and self._server is not None
        server = self._server

        async def close_them() -> None:
            await asyncio.gather(*(c.close(code, reason) for c in server.connections))

        asyncio.run_coroutine_threadsafe(close_them(), self._loop)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol(p) for p in self.subprotocols],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            # Chromium opens a spare TCP connection that never sends a request; shutdown waits
            # for it to time out, so keep that short.
            open_timeout=2,
        ) as server:
            self._loop = asyncio.get_running_loop()
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await server.wait_closed()

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        # Server preference; no overlap means no header, not a failed handshake.
        return next((Subprotocol(p) for p in self.subprotocols if p in offered), None)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade and path == "/":
            headers = Headers(
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(DEMO_HTML))),
                    ("Cache-Control", "no-store"),
                    ("Connection", "close"),
                ]
            )
            return Response(200, "OK", headers, DEMO_HTML)
        if not upgrade and path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path not in ("/", "/echo", "/chat"):
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"no endpoint at {path}\n")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        request = connection.request
        response = connection.response
        assert request is not None and response is not None
        self.handshakes.append(
            {
                "path": request.path,
                "offered_protocols": request.headers.get_all("Sec-WebSocket-Protocol"),
                "offered_extensions": request.headers.get_all("Sec-WebSocket-Extensions"),
                "protocol": connection.subprotocol,
                "extensions": response.headers.get("Sec-WebSocket-Extensions"),
            }
        )
        if request.path.partition("?")[0] == "/chat":
            await self._chat(connection)
        else:
            async for message in connection:
                if isinstance(message, bytes):
                    self.binary_received.append(message)
                await connection.send(message)

    async def _chat(self, connection: ServerConnection) -> None:
        self._guests += 1
        guest = f"guest-{self._guests}"
        self._room.add(connection)
        broadcast(self._room, json.dumps({"type": "join", "name": guest, "count": len(self._room)}))
        try:
            async for message in connection:
                try:
                    data = json.loads(message)
                except ValueError:
                    data = None
                if isinstance(data, dict) and data.get("type") == "message":
                    message = json.dumps(
                        {
                            "type": "message",
                            "name": str(data.get("name", guest))[:32],
                            "text": str(data.get("text", "")),
                            "time": time.time(),
                        }
                    )
                broadcast(self._room, message)
        finally:
            self._room.discard(connection)
            leave = {"type": "leave", "name": guest, "count": len(self._room)}
            broadcast(self._room, json.dumps(leave))


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInServer]:
    with StandInServer() as server:
        yield server


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(pid, 0); it has exited all the same.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _processes_using(profile: str) -> list[int]:
    """Live processes whose command line mentions ``profile``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if profile.encode() in cmdline and not _process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- the browser harness ----------------------------------------------------------------------


def test_chromium_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("TETHER_CHROMEDRIVER", "/nonexistent/chromedriver")
    reason = chromium_available()
    assert reason is not None
    assert "chromium and chromedriver not found" in reason
    with pytest.raises(BrowserError, match="not found"):
        Browser().start()


@pytest.mark.browser
def test_browser_api_on_two_pages(browser: Browser) -> None:
    first = browser.open("data:text/html,<title>one</title><input id=box><p id=out>first</p>")
    second = browser.open("data:text/html,<title>two</title><p id=out>second</p>")
    assert browser.pages == [first, second]
    # Each call acts on its own window, whichever was used last.
    assert first.title == "one"
    assert second.text("#out") == "second"
    assert first.text("#out") == "first"
    assert first.eval("arguments[0] + arguments[1]", 2, 3) == 5
    assert second.run("return {a: [1, 'x', null]};") == {"a": [1, "x", None]}
    assert first.eval("Promise.resolve(7)") == 7
    first.type("#box", "typed")
    assert first.eval("document.getElementById('box').value") == "typed"
    first.run("setTimeout(() => { document.title = 'later'; }, 100);")
    assert first.wait_for("document.title === 'later' && document.title", timeout=5) == "later"
    with pytest.raises(TimeoutError, match=r"waited 0\.2 s for 'false'; last value False"):
        first.wait_for("false", timeout=0.2)
    with pytest.raises(WebDriverError, match="no such element"):
        second.click("#missing")
    with pytest.raises(WebDriverError, match="javascript error"):
        second.eval("undefinedName.property")
    second.close()
    assert browser.pages == [first]
    assert first.text("#out") == "first"


@pytest.mark.browser
def test_browser_processes_end_even_when_the_test_fails() -> None:
    pids: list[int] = []
    profiles: list[str] = []
    with pytest.raises(ValueError, match="boom"), Browser() as started:
        assert started.chromium_pid is not None and started.driver_pid is not None
        assert started.profile_dir is not None
        pids += [started.chromium_pid, started.driver_pid]
        profiles.append(started.profile_dir)
        started.open("data:text/html,<p>hi</p>")
        assert _processes_using(profiles[0]) != []
        raise ValueError("boom")
    assert len(pids) == 2
    for pid in pids:
        assert _wait_gone(pid), f"process {pid} still running after close()"
    # Renderers, GPU and utility processes too: everything started with our profile.
    deadline = time.monotonic() + 10
    while (left := _processes_using(profiles[0])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
    assert not Path(profiles[0]).exists()


@pytest.mark.browser
def test_browser_requires_a_subprotocol_it_offered(
    browser: Browser, standin: StandInServer
) -> None:
    # A data: page may reach loopback (Local Network Access checks are off in the harness).
    page = browser.open("data:text/html,<title>probe</title>")
    attempt = """new Promise(resolve => {
        const ws = new WebSocket(arguments[0], arguments[1]);
        ws.onopen = () => { resolve("open " + ws.protocol); ws.close(); };
        ws.onclose = (event) => resolve("closed " + event.code);
    })"""
    url = standin.url("/echo", "ws")
    assert page.eval(attempt, url, ["chat"]) == "open chat"
    assert page.eval(attempt, url, []) == "open "
    # The server accepted without choosing one, and Chromium fails such a handshake, as the
    # WHATWG WebSocket standard says it must: for browsers, "no overlap" is a failed connection.
    assert page.eval(attempt, url, ["nope"]) == "closed 1006"
    messages = [entry["message"] for entry in browser.console_log()]
    assert any("Sent non-empty 'Sec-WebSocket-Protocol' header" in m for m in messages)


# -- the demo page, against the stand-in server -----------------------------------------------


@pytest.mark.browser
def test_demo_page_shows_negotiated_protocol_and_extensions(
    browser: Browser, standin: StandInServer
) -> None:
    page = browser.open(standin.url("/"))
    page.wait_for(OPEN)
    assert page.title == "tether · WebSocket demo"
    # The chat socket offered two subprotocols; the server preferred "chat".
    assert page.text("#chat-protocol") == "chat"
    assert page.text("#echo-protocol") == "none"
    for name in ("chat", "echo"):
        extensions = page.text(f"#{name}-extensions")
        assert extensions.startswith("permessage-deflate"), extensions
    chat_handshake = next(h for h in standin.handshakes if h["path"] == "/chat")
    assert chat_handshake["offered_protocols"] == ["chat.v2, chat"]
    assert chat_handshake["protocol"] == "chat"
    assert page.text("#chat-extensions") == chat_handshake["extensions"]
    # The page fetched nothing but itself: no stylesheets, scripts, fonts or images.
    assert page.eval("performance.getEntriesByType('resource').length") == 0
    page.wait_for("Number(document.getElementById('latency').dataset.samples) >= 1", timeout=10)
    assert float(page.eval("document.getElementById('latency').dataset.lastMs")) >= 0
    assert "ms" in page.text("#latency")
    errors = [entry for entry in browser.console_log() if entry["level"] == "SEVERE"]
    assert errors == []
    # Light and dark themes follow prefers-color-scheme.
    background = "getComputedStyle(document.body).backgroundColor"
    assert page.eval(background) == "rgb(244, 245, 248)"
    page.emulate_color_scheme("dark")
    assert page.eval(background) == "rgb(15, 17, 23)"
    # Side by side on a wide window, stacked on a phone-sized one.
    panels = "[...document.querySelectorAll('section.panel')].map(e => e.getBoundingClientRect())"
    chat_box, echo_box = page.eval(panels)
    assert chat_box["top"] == echo_box["top"] and chat_box["right"] <= echo_box["left"]
    page.resize(390, 800)
    chat_box, echo_box = page.eval(panels)
    assert chat_box["bottom"] <= echo_box["top"]
    assert page.eval("document.documentElement.scrollWidth") <= 390


@pytest.mark.browser
def test_demo_shows_close_code_and_reconnects(browser: Browser, standin: StandInServer) -> None:
    page = browser.open(standin.url("/"))
    page.wait_for(OPEN)
    standin.close_all(4000, "test bye")
    for name in ("chat", "echo"):
        page.wait_for(f"document.getElementById('{name}-close').textContent === '4000 test bye'")
    assert page.eval("document.body.dataset.state") != "open"
    page.wait_for(
        "[...document.querySelectorAll('#chat-log .msg.error')]"
        ".some(e => e.textContent === 'Disconnected: 4000 test bye')"
    )
    # The page reconnects by itself after a second.
    page.wait_for(OPEN, timeout=10)
    assert page.text("#chat-protocol") == "chat"


@pytest.mark.browser
def test_demo_chat_between_two_pages(browser: Browser, standin: StandInServer) -> None:
    alice = browser.open(standin.url("/"))
    alice.wait_for(OPEN)
    bob = browser.open(standin.url("/"))
    bob.wait_for(OPEN)
    # Alice sees Bob join, in the muted notice style.
    alice.wait_for(
        "[...document.querySelectorAll('#chat-log .msg.notice')]"
        ".some(e => e.textContent.includes('joined · 2 online'))"
    )
    alice.type("#chat-name", "alice")
    alice.type("#chat-input", "hello from alice")
    alice.click("#chat-send")
    found = (
        "[...document.querySelectorAll('#chat-log .msg.message')]"
        ".map(e => e.textContent).find(t => t.includes(arguments[0]))"
    )
    line = bob.wait_for(found, "hello from alice")
    assert line.startswith("alice")
    assert alice.eval("document.getElementById('chat-input').value") == ""
    # Alice's own message is marked as hers on her page only.
    alice.wait_for("document.querySelector('#chat-log .msg.message.mine')")
    assert bob.eval("document.querySelector('#chat-log .msg.mine')") is None
    # Text that is not JSON, or is hostile HTML, shows up raw and inert.
    hostile = "<img src=x id=injected onerror=\"document.title='pwned'\"> not json"
    standin.broadcast_raw(hostile)
    bob.wait_for(
        "[...document.querySelectorAll('#chat-log .msg.raw')]"
        ".some(e => e.textContent.includes(arguments[0]))",
        hostile,
    )
    assert bob.eval("document.getElementById('injected')") is None
    assert bob.title == "tether · WebSocket demo"
    assert int(alice.text("#chat-sent")) == 1
    assert int(bob.text("#chat-received")) >= 2
    bob.close()
    alice.wait_for(
        "[...document.querySelectorAll('#chat-log .msg.notice')]"
        ".some(e => e.textContent.includes('left · 1 online'))"
    )


@pytest.mark.browser
def test_demo_echo_round_trips_text_and_binary(
    browser: Browser, standin: StandInServer, tmp_path: Path
) -> None:
    page = browser.open(standin.url("/"))
    page.wait_for(OPEN)
    page.type("#echo-input", "ping ✓ <b>bold</b>")
    page.click("#echo-send")
    echoed = page.wait_for(
        "[...document.querySelectorAll('#echo-log .msg.in[data-kind=text]')]"
        ".map(e => e.textContent).pop()"
    )
    assert echoed.endswith("ping ✓ <b>bold</b>")
    before = len(standin.binary_received)
    page.click("#echo-binary")
    shown = page.wait_for(
        "(() => { const items = document.querySelectorAll('#echo-log .msg[data-kind=binary]');"
        " return items.length === 2 && [...items].map(e => e.textContent); })()"
    )
    sent_hex = standin.binary_received[before].hex(" ")
    assert len(standin.binary_received[before]) == 16
    assert sent_hex in shown[0]
    assert sent_hex in shown[1]
    assert "✓ identical" in shown[1]
    assert int(page.text("#echo-received")) >= 2

    # Some chat traffic too, then a screenshot of the whole thing for people to look at.
    page.type("#chat-name", "alice")
    for text in ("Hi there! Is the deflate extension on?", "It is: see the status cards."):
        page.type("#chat-input", text)
        page.click("#chat-send")
    page.wait_for("document.querySelectorAll('#chat-log .msg.message').length >= 2")
    shot = page.screenshot(tmp_path / "demo.png")
    data = shot.read_bytes()
    assert _png_size(data) == (browser.width, browser.height)
    assert len(data) > 20_000, f"screenshot suspiciously small: {len(data)} bytes"
    if os.environ.get("TETHER_SCREENSHOT_DIR"):
        Path(os.environ["TETHER_SCREENSHOT_DIR"], "demo.png").write_bytes(data)


def test_standin_serves_the_page_and_health() -> None:
    import urllib.request

    with StandInServer() as server:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(server.url("/"), timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.read() == DEMO_HTML
        with opener.open(server.url("/healthz"), timeout=5) as response:
            assert response.status == 200


# -- the Node ws harness ----------------------------------------------------------------------


@pytest.mark.node
def test_node_client_against_websockets_server(node_ws: Path, standin: StandInServer) -> None:
    payload = bytes(range(256)) * 4
    result = run_node_client(
        standin.url("/echo", "ws"),
        ["hello", payload, "a" * 10_000],
        protocols=["chat.v2", "chat"],
    )
    assert result.error is None
    assert result.status == 101
    assert result.protocol == "chat"
    assert result.extensions is not None
    assert result.extensions.startswith("permessage-deflate")
    assert result.received == ["hello", payload, "a" * 10_000]
    assert (result.close_code, result.close_reason) == (1000, "done")
    handshake = standin.handshakes[-1]
    assert handshake["protocol"] == "chat"
    assert handshake["extensions"] == result.extensions


@pytest.mark.node
def test_node_client_reports_options_and_failures(node_ws: Path, standin: StandInServer) -> None:
    plain = run_node_client(standin.url("/echo", "ws"), ["x"], per_message_deflate=False)
    assert plain.error is None
    assert plain.extensions is None
    assert plain.protocol == ""
    assert standin.handshakes[-1]["offered_extensions"] == []
    rejected = run_node_client(standin.url("/missing", "ws"), ["x"])
    assert rejected.status == 404
    assert rejected.error == "unexpected response 404"
    assert rejected.body == "no endpoint at /missing\n"
    assert rejected.received == []


@pytest.mark.node
def test_websockets_client_against_node_server(node_ws: Path) -> None:
    with NodeWsServer(protocols=["chat", "chat.v2"]) as server:
        with connect(
            server.url("/room"),
            subprotocols=[Subprotocol("chat.v2"), Subprotocol("chat")],
            # Chromium opens a spare TCP connection that never sends a request; shutdown waits
            # for it to time out, so keep that short.
            open_timeout=2,
            close_timeout=5,
            proxy=None,
        ) as client:
            assert client.subprotocol == "chat"  # server preference, not client order
            assert client.response is not None
            extensions = client.response.headers["Sec-WebSocket-Extensions"]
            assert extensions.startswith("permessage-deflate")
            client.send("hello node")
            assert client.recv(timeout=5) == "hello node"
            client.send(b"\x00\xff" * 100)
            assert client.recv(timeout=5) == b"\x00\xff" * 100
            seen = server.wait_event("connection")
            assert seen["path"] == "/room"
            assert seen["protocol"] == "chat"
            assert seen["request_protocols"] == "chat.v2, chat"
            assert seen["extensions"] == extensions
        closed = server.wait_event("close")
        assert closed["code"] == 1000


@pytest.mark.node
def test_node_server_without_deflate_or_common_subprotocol(node_ws: Path) -> None:
    with NodeWsServer(protocols=["other"], per_message_deflate=False) as server:
        result = run_node_client(server.url(), ["one", b"two"])
        assert result.error is None
        assert result.protocol == ""
        assert result.extensions is None
        assert result.received == ["one", b"two"]
        seen = server.wait_event("connection")
        assert seen["protocol"] == ""
        assert seen["extensions"] == ""
        assert seen["request_extensions"].startswith("permessage-deflate")  # offered, declined
        # Like browsers, ws fails the connection when it offered subprotocols and the server
        # chose none, although RFC 6455 section 4.1 lets the server leave the header out.
        strict = run_node_client(server.url(), ["one"], protocols=["chat"])
        assert strict.status == 101
        assert strict.error == "Server sent no subprotocol"
        assert strict.received == []
