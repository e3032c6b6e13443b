"""tether's server against a real browser: Debian's headless Chromium.

The tether server serves ``interop_page.html`` itself (``GET /page`` through
``process_request``) and the WebSocket endpoints the page talks to, on the same port, so the
browser's own ``WebSocket`` object does the handshake: its subprotocol list, its
permessage-deflate offer, its masking and its close handshake. The page reports what it saw in
``window.interopResult``; the server side records what it saw; the test compares both.

Skipped, with the reason shown, only when Chromium or chromedriver is not installed. The
browser harness is blocking, so the asyncio code calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.aio import run as aio_run
from helpers.browser import Browser
from tether import ConnectionClosed, Headers, Request, Response, ServerConnection, serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAGE = Path(__file__).with_name("interop_page.html").read_bytes()


@dataclass
class ServerSide:
    """What the tether server saw, per endpoint."""

    echo: ServerConnection | None = None
    echo_messages: list[str | bytes] = field(default_factory=list)
    echo_close: tuple[int | None, str | None] | None = None
    close: ServerConnection | None = None
    close_close: tuple[int | None, str | None] | None = None
    keepalive_latency: float | None = None
    page_requests: int = 0


def make_server(side: ServerSide, **kwargs: Any) -> Any:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/page":
            side.page_requests += 1
            headers = Headers(
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(PAGE))),
                    ("Cache-Control", "no-store"),
                    ("Connection", "close"),
                ]
            )
            return Response(200, "OK", headers, PAGE)
        return None  # a WebSocket handshake (or a 426 for anything else, e.g. favicon.ico)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/echo":
            side.echo = ws
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    side.echo_messages.append(message)
                    await ws.send(message)
            await ws.wait_closed()
            side.echo_close = (ws.close_code, ws.close_reason)
        elif ws.request.path == "/close":
            side.close = ws
            await ws.send("hello")
            await ws.close(4001, "ciao ☃")
            side.close_close = (ws.close_code, ws.close_reason)
        elif ws.request.path == "/keepalive":
            while ws.latency == 0:  # the browser answers the server's keepalive pings
                await asyncio.sleep(0.01)
            side.keepalive_latency = ws.latency
            await ws.send("pinged")
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
        else:
            await ws.close(4404, "no such endpoint")

    return serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["chat", "v2.chat"],
        process_request=process_request,
        # Chromium may open a spare connection that never sends a request: do not let it
        # hold the server's shutdown for long.
        open_timeout=5,
        ping_interval=0.05,
        ping_timeout=5,
        **kwargs,
    )


async def run_page(browser: Browser, url: str) -> dict[str, Any]:
    page = await asyncio.to_thread(browser.open, url)
    state = await asyncio.to_thread(
        page.wait_for, "document.body.dataset.state !== 'running'", timeout=30
    )
    assert state, "the page never finished"
    error = await asyncio.to_thread(page.eval, "window.interopError || null")
    assert error is None, f"the page failed: {error}\nconsole: {browser.console_log()}"
    result: dict[str, Any] = await asyncio.to_thread(page.eval, "window.interopResult")
    return result


def run(coro: Any) -> Any:
    return aio_run(coro, 90)


def test_chromium_talks_to_tether_server(browser: Browser) -> None:
    side = ServerSide()

    async def main() -> dict[str, Any]:
        async with make_server(side) as server:
            return await run_page(browser, f"http://127.0.0.1:{server.port_number}/page")

    result = run(main())
    assert side.page_requests == 1

    # Subprotocol: the browser listed "v2.chat" first; the server supports both, preferring
    # "chat". RFC 6455 lets the server choose; tether takes the client's first choice.
    assert result["protocol"] == "v2.chat"
    assert side.echo is not None
    assert side.echo.handshake.offered_subprotocols == ["v2.chat", "chat"]
    assert side.echo.subprotocol == "v2.chat"

    # permessage-deflate: Chromium offers it with client_max_window_bits (no value), and
    # sees the same answer that the server recorded.
    offered = side.echo.handshake.offered_extensions
    assert ("permessage-deflate", [("client_max_window_bits", None)]) in offered
    assert "permessage-deflate" in result["extensions"]
    [(name, params)] = side.echo.handshake.accepted_extensions
    assert name == "permessage-deflate"
    answer = "; ".join([name, *(k if v is None else f"{k}={v}" for k, v in params)])
    assert result["extensions"] == answer
    assert [e.name for e in side.echo.extensions] == ["permessage-deflate"]

    # Echoes: text, a small ArrayBuffer, 1 MiB of random bytes (compressed both ways).
    assert result["textOk"] is True
    assert result["textEcho"] == "héllo ☃ from the browser"
    assert result["smallIsArrayBuffer"] is True
    assert result["smallEchoHex"] == result["smallSentHex"] == "0001027f80feff"
    assert result["largeOk"] is True
    assert side.echo_messages[:2] == [
        "héllo ☃ from the browser",
        bytes([0, 1, 2, 127, 128, 254, 255]),
    ]
    assert hashlib.sha256(side.echo_messages[2]).hexdigest() == result["largeSha256"]  # type: ignore[arg-type]

    # Close, browser first: the server saw 4000 "bye"; tether answers with the code.
    assert side.echo_close == (4000, "bye")
    assert result["echoClose"] == {"code": 4000, "reason": "", "clean": True}

    # Close, server first: the browser saw 4001 and the reason; Chromium echoes the code.
    assert result["closeGreeting"] == "hello"
    assert result["serverClose"] == {"code": 4001, "reason": "ciao ☃", "clean": True}
    assert side.close_close is not None and side.close_close[0] == 4001

    # Keepalive: Chromium answered the server's pings.
    assert result["keepalive"] == "pinged"
    assert side.keepalive_latency is not None and 0 < side.keepalive_latency < 5


@pytest.mark.parametrize("preset", ["small", "max"])
def test_chromium_with_tether_compression_presets(browser: Browser, preset: str) -> None:
    """Chromium accepts the tether server's answers for the presets that differ most: no
    context takeover with 10-bit windows ("small") and the bare extension ("max")."""
    side = ServerSide()

    async def main() -> dict[str, Any]:
        async with make_server(side, compression=preset) as server:
            return await run_page(browser, f"http://127.0.0.1:{server.port_number}/page")

    result = run(main())
    expected = {
        "small": "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=10",
        "max": "permessage-deflate",
    }[preset]
    assert result["extensions"] == expected
    assert result["textOk"] is True and result["largeOk"] is True
    assert side.echo is not None
    assert side.echo.extensions[0].local_no_context_takeover is (preset == "small")
