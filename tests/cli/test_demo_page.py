"""The demo page served by ``tether serve``, driven in headless Chromium.

Two pages load the page from a ``tether serve`` subprocess and join its chat room; a message
typed in one shows up in the other; both show what their browser negotiated (subprotocol and
permessage-deflate); the echo panel gets its message back; and when the server stops, the
pages show the 1001 it closed them with.

Skipped, with the reason in the summary, only when Chromium or chromedriver is missing (see
``tests/conftest.py``; ``TETHER_NO_SKIP=1`` turns the skip into a failure).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_main import ServeProcess

from helpers.browser import Browser, Page

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
