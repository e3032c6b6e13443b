"""Tests of the test harnesses themselves: headless Chromium and Node's ws.

The browser and Node harnesses (``tests/helpers/browser.py``, ``tests/helpers/node.py``) are
checked here against tether's own demo server (``tests/helpers/demo.py``) and, for the Node
server harness, against the ``websockets`` client. The demo page itself is tested in
``tests/cli/test_demo_page.py``.

Determinism rules: every server listens on 127.0.0.1 port 0; every wait has a bound; the
browser and Node processes are ended by context managers, also when a test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from conftest import _require
from helpers.browser import (
    Browser,
    BrowserError,
    WebDriverError,
    chromium_available,
    find_chromedriver,
)
from helpers.demo import DemoThread
from helpers.node import NodeWsServer, run_node_client


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoThread]:
    with DemoThread() as server:
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


def _fake_chromedriver(tmp_path: Path, failures: int) -> Path:
    """A chromedriver that loses the race for its port ``failures`` times, then is the real one."""
    real = find_chromedriver()
    assert real is not None
    script = tmp_path / "chromedriver"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{tmp_path}" | grep -c "^tried-")\n'
        f'touch "{tmp_path}/tried-$n"\n'
        f'if [ "$n" -lt {failures} ]; then\n'
        '  echo "[1.0][SEVERE]: bind() failed: Address already in use (98)"\n'
        '  echo "IPv4 port not available. Exiting..."\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.browser
def test_browser_starts_chromedriver_again_when_it_loses_its_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require(chromium_available())
    monkeypatch.setenv("TETHER_CHROMEDRIVER", str(_fake_chromedriver(tmp_path, failures=2)))
    with Browser() as started:
        started.open("data:text/html,<p id=out>hi</p>")
        assert started.pages[0].text("#out") == "hi"
    assert len(list(tmp_path.glob("tried-*"))) == 3


@pytest.mark.browser
def test_browser_gives_up_after_three_lost_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require(chromium_available())
    monkeypatch.setenv("TETHER_CHROMEDRIVER", str(_fake_chromedriver(tmp_path, failures=5)))
    started = time.monotonic()
    with pytest.raises(BrowserError, match=r"attempt 3\):\n.*bind\(\) failed"):
        Browser().start()
    assert len(list(tmp_path.glob("tried-*"))) == 3
    assert time.monotonic() - started < 20  # an exited driver is noticed, not waited out


@pytest.mark.browser
def test_browser_requires_a_subprotocol_it_offered(browser: Browser, demo: DemoThread) -> None:
    # A data: page may reach loopback (Local Network Access checks are off in the harness).
    page = browser.open("data:text/html,<title>probe</title>")
    attempt = """new Promise(resolve => {
        const ws = new WebSocket(arguments[0], arguments[1]);
        ws.onopen = () => { resolve("open " + ws.protocol); ws.close(); };
        ws.onclose = (event) => resolve("closed " + event.code);
    })"""
    url = demo.url("/echo", "ws")
    assert page.eval(attempt, url, ["chat"]) == "open chat"
    assert page.eval(attempt, url, []) == "open "
    # The server accepted without choosing one, and Chromium fails such a handshake, as the
    # WHATWG WebSocket standard says it must: for browsers, "no overlap" is a failed connection.
    assert page.eval(attempt, url, ["nope"]) == "closed 1006"
    messages = [entry["message"] for entry in browser.console_log()]
    assert any("Sent non-empty 'Sec-WebSocket-Protocol' header" in m for m in messages)


# -- the Node ws harness ----------------------------------------------------------------------


@pytest.mark.node
def test_node_client_against_the_demo_server(node_ws: Path, demo: DemoThread) -> None:
    payload = bytes(range(256)) * 4
    result = run_node_client(
        demo.url("/echo", "ws"),
        ["hello", payload, "a" * 10_000],
        protocols=["chat.v2", "chat"],
    )
    assert result.error is None
    assert result.status == 101
    assert result.protocol == "chat.v2"  # the client's first that the server supports
    assert result.extensions is not None
    assert result.extensions.startswith("permessage-deflate")
    assert result.received == ["hello", payload, "a" * 10_000]
    # The client closed with (1000, "done"); tether's answer echoes the code without the reason.
    assert (result.close_code, result.close_reason) == (1000, "")
    handshake = demo.handshakes[-1]
    assert handshake["protocol"] == "chat.v2"
    assert handshake["extensions"] == result.extensions


@pytest.mark.node
def test_node_client_reports_options_and_failures(node_ws: Path, demo: DemoThread) -> None:
    plain = run_node_client(demo.url("/echo", "ws"), ["x"], per_message_deflate=False)
    assert plain.error is None
    assert plain.extensions is None
    assert plain.protocol == ""
    assert demo.handshakes[-1]["offered_extensions"] == []
    rejected = run_node_client(demo.url("/missing", "ws"), ["x"])
    assert rejected.status == 404
    assert rejected.error == "unexpected response 404"
    assert rejected.body == "No WebSocket endpoint at /missing; try /echo or /chat.\n"
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
