"""Markers and fixtures for the harnesses in ``tests/helpers`` (Chromium, Node, proxies, Redis).

A test that needs one of them is skipped, with the reason shown in the summary, only when the
tool is not installed. ``TETHER_NO_SKIP=1`` (set by CI, which installs them) makes such a test
fail instead, so that a missing install cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `import helpers` work from any test folder and in every pytest import mode.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from helpers.browser import Browser, chromium_available  # noqa: E402
from helpers.node import node_available, node_ws_dir  # noqa: E402
from helpers.proxies import proxies_available  # noqa: E402
from helpers.redis import RedisServer, redis_available  # noqa: E402
from helpers.sync_server import open_fds  # noqa: E402

_FAILED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: needs headless Chromium and chromedriver (skipped if absent)"
    )
    config.addinivalue_line(
        "markers",
        "node: needs Node.js; installs the npm package ws on first use (skipped if absent)",
    )
    config.addinivalue_line(
        "markers", "proxy: needs tinyproxy and danted (apt: tinyproxy dante-server)"
    )
    config.addinivalue_line(
        "markers", "redis: needs redis-server >= 7 (apt: redis-server) and redis-py"
    )


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("TETHER_NO_SKIP"):
        pytest.fail(f"{reason} (TETHER_NO_SKIP is set)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser"):
        _require(chromium_available())
    if item.get_closest_marker("node"):
        _require(node_available())
    if item.get_closest_marker("proxy"):
        _require(proxies_available())
    if item.get_closest_marker("redis"):
        _require(redis_available())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if call.when == "call" and call.excinfo is not None:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="module")
def browser_session() -> Iterator[Browser]:
    """One headless Chromium shared by the tests of a module (starting one takes ~1 s)."""
    _require(chromium_available())
    with Browser() as started:
        yield started


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, browser_session: Browser, tmp_path: Path
) -> Iterator[Browser]:
    """The module's browser, with no pages open and the console log drained.

    Each page opens in a fresh window; cookies and localStorage are shared within the module
    (use ``Browser()`` directly for a pristine profile). On failure, screenshots of the
    test's pages are saved to tmp_path and their paths printed. Pages are closed afterwards.
    """
    browser_session.console_log()
    yield browser_session
    try:
        if request.node.stash.get(_FAILED, False):
            for index, page in enumerate(browser_session.pages):
                try:
                    shot = page.screenshot(tmp_path / f"failure-page{index}.png")
                except Exception as exc:  # the browser may be what failed
                    print(f"no screenshot of page {index}: {exc}")
                else:
                    print(f"screenshot of page {index} at failure: {shot}")
    finally:
        browser_session.close_pages()


@pytest.fixture
def node_ws() -> Path:
    """Folder whose node_modules holds the npm package ws (installed on first use)."""
    _require(node_available())
    return node_ws_dir()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port of 127.0.0.1 (append-only file, fsync always)."""
    _require(redis_available())
    with RedisServer(tmp_path / "redis") as server:
        yield server


# --- async def tests (tests/asgi and others): run with asyncio.run, bounded in time --------

#: Seconds one ``async def`` test may take (pytest-timeout's limit stays as the outer bound).
ASYNC_TEST_TIMEOUT = 25


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def bounded() -> None:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):
            await pyfuncitem.obj(**kwargs)

    asyncio.run(bounded())
    return True


# --- tests/sync: every test of the threading layer passes a leak check -----------------------

_SYNC_TESTS = Path(_TESTS) / "sync"


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """The threads, sockets and file descriptors a test of ``tests/sync`` started must be gone
    within a few seconds of its end (other tests are not checked)."""
    if _SYNC_TESTS not in Path(request.node.path).parents:
        yield
        return
    threads = set(threading.enumerate())
    fds = open_fds()
    yield
    deadline = time.monotonic() + 5
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        now = open_fds()
        extra_fds = {fd: target for fd, target in now.items() if fds.get(fd) != target}
        if not extra_threads and not extra_fds:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra_threads, f"threads left running: {[t.name for t in extra_threads]}"
    assert not extra_fds, f"file descriptors left open: {extra_fds}"
