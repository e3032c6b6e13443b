"""The demo page served by ``tether serve``, driven in headless Chromium.

Two pages load the page from a ``tether serve`` subprocess and join its chat room; a message
typed in one shows up in the other; both show what their browser negotiated (subprotocol and
permessage-deflate); the echo panel gets its message back; and when the server stops, the
pages show the 1001 it closed them with. The tests after it drive the same demo server in a
thread of this process (``tests/helpers/demo.py``), which records what it saw and can close
every connection with a given code or push raw text into the chat room.

Skipped, with the reason in the summary, only when Chromium or chromedriver is missing (see
``tests/conftest.py``; ``TETHER_NO_SKIP=1`` turns the skip into a failure).
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.browser import Browser, Page
from helpers.demo import DemoThread, ServeProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

OPEN = "document.body.dataset.state === 'open'"


def chat_items(page: Page) -> list[str]:
    items = page.eval(
        "Array.from(document.querySelectorAll('#chat-log .msg'), (li) => li.textContent)"
    )
    return [str(item) for item in items]


def test_two_pages_chat_through_tether_serve(browser: Browser, tmp_path: Path) -> None:
    with ServeProcess() as server:
        alice = browser.open(server.url("/", "http"))
        alice.wait_for(OPEN)
        bob = browser.open(server.url("/", "http"))
        bob.wait_for(OPEN)
        # The name Bob's page shows (a random guest-NNNN) when it joined.
        bob_name = str(bob.eval("document.getElementById('chat-name').value"))
        assert bob_name.startswith("guest-")
        alice.type("#chat-name", "alice")
        bob.type("#chat-name", "bob")

        # What each browser negotiated, as the page shows it: the first of its offers
        # ["chat.v2", "chat"] that the server supports, and permessage-deflate.
        for page in (alice, bob):
            assert page.text("#chat-protocol") == "chat.v2"
            assert page.text("#chat-extensions").startswith("permessage-deflate")
            assert page.text("#echo-protocol") == "none"
            assert page.text("#echo-extensions").startswith("permessage-deflate")

        # Alice saw Bob join, under the name Bob's page showed.
        alice.wait_for(
            "Array.from(document.querySelectorAll('#chat-log .notice'))"
            ".some((li) => li.textContent === arguments[0] + ' joined · 2 online')",
            bob_name,
        )

        alice.type("#chat-input", "hello from alice <b>not bold</b>")
        alice.click("#chat-send")
        bob.wait_for(
            "Array.from(document.querySelectorAll('#chat-log .message'))"
            ".some((li) => li.textContent.includes('hello from alice'))"
        )
        message = bob.eval(
            "(() => { const li = Array.from(document.querySelectorAll('#chat-log .message'))"
            ".find((li) => li.textContent.includes('hello from alice'));"
            " return {who: li.querySelector('.who').textContent,"
            " text: li.querySelector('.bubble').textContent,"
            " mine: li.classList.contains('mine'),"
            " bold: li.querySelectorAll('b').length}; })()"
        )
        assert message == {
            "who": "alice",
            "text": "hello from alice <b>not bold</b>",
            "mine": False,
            "bold": 0,
        }
        # The sender gets its own message back from the room, shown as its own.
        alice.wait_for("document.querySelector('#chat-log .message.mine') !== null")

        bob.type("#chat-input", "hi alice")
        bob.click("#chat-send")
        alice.wait_for(
            "Array.from(document.querySelectorAll('#chat-log .message .bubble'))"
            ".some((b) => b.textContent === 'hi alice')"
        )
        assert any(item.startswith("bob") and "hi alice" in item for item in chat_items(alice))

        # The echo panel: text comes back unchanged, and the latency probe reports.
        alice.type("#echo-input", "ping through /echo")
        alice.click("#echo-send")
        alice.wait_for(
            "Array.from(document.querySelectorAll('#echo-log .msg.in'))"
            ".some((li) => li.textContent.includes('ping through /echo'))"
        )
        alice.wait_for("Number(document.querySelector('#latency').dataset.samples) >= 1")
        assert alice.text("#chat-sent") == "1"

        shot = alice.screenshot(tmp_path / "demo-chat.png")
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # The server shuts down: every page sees 1001 (going away) with the server's reason.
        assert server.stop(signal.SIGINT) == 0
        for page in (alice, bob):
            page.wait_for("document.querySelector('#chat-close').textContent.startsWith('1001')")
            assert page.text("#chat-close") == "1001 server shutting down"
            assert page.text("#echo-close") == "1001 server shutting down"
        alice.screenshot(tmp_path / "demo-closed.png")

    severe = [entry for entry in browser.console_log() if entry.get("level") == "SEVERE"]
    # Reconnection attempts after the shutdown fail by design; nothing else may.
    unexpected = [e for e in severe if "WebSocket connection to" not in str(e.get("message"))]
    assert unexpected == []


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoThread]:
    with DemoThread() as server:
        yield server


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- the page against the demo server in a thread of this process ------------------------------


@pytest.mark.browser
def test_demo_page_shows_negotiated_protocol_and_extensions(
    browser: Browser, demo: DemoThread
) -> None:
    page = browser.open(demo.url("/"))
    page.wait_for(OPEN)
    assert page.title == "tether · WebSocket demo"
    # The chat socket offered two subprotocols; the server took the first it supports.
    assert page.text("#chat-protocol") == "chat.v2"
    assert page.text("#echo-protocol") == "none"
    for name in ("chat", "echo"):
        extensions = page.text(f"#{name}-extensions")
        assert extensions.startswith("permessage-deflate"), extensions
    chat_handshake = next(h for h in demo.handshakes if h["path"].startswith("/chat?name="))
    assert chat_handshake["offered_protocols"] == ["chat.v2, chat"]
    assert chat_handshake["protocol"] == "chat.v2"
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
def test_demo_shows_close_code_and_reconnects(browser: Browser, demo: DemoThread) -> None:
    page = browser.open(demo.url("/"))
    page.wait_for(OPEN)
    demo.close_all(4000, "test bye")
    for name in ("chat", "echo"):
        page.wait_for(f"document.getElementById('{name}-close').textContent === '4000 test bye'")
    assert page.eval("document.body.dataset.state") != "open"
    page.wait_for(
        "[...document.querySelectorAll('#chat-log .msg.error')]"
        ".some(e => e.textContent === 'Disconnected: 4000 test bye')"
    )
    # The page reconnects by itself after a second.
    page.wait_for(OPEN, timeout=10)
    assert page.text("#chat-protocol") == "chat.v2"


@pytest.mark.browser
def test_demo_chat_between_two_pages(browser: Browser, demo: DemoThread) -> None:
    alice = browser.open(demo.url("/"))
    alice.wait_for(OPEN)
    bob = browser.open(demo.url("/"))
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
    demo.broadcast_raw(hostile)
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
    browser: Browser, demo: DemoThread, tmp_path: Path
) -> None:
    page = browser.open(demo.url("/"))
    page.wait_for(OPEN)
    page.type("#echo-input", "ping ✓ <b>bold</b>")
    page.click("#echo-send")
    echoed = page.wait_for(
        "[...document.querySelectorAll('#echo-log .msg.in[data-kind=text]')]"
        ".map(e => e.textContent).pop()"
    )
    assert echoed.endswith("ping ✓ <b>bold</b>")
    before = len(demo.binary_received)
    page.click("#echo-binary")
    shown = page.wait_for(
        "(() => { const items = document.querySelectorAll('#echo-log .msg[data-kind=binary]');"
        " return items.length === 2 && [...items].map(e => e.textContent); })()"
    )
    sent_hex = demo.binary_received[before].hex(" ")
    assert len(demo.binary_received[before]) == 16
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
