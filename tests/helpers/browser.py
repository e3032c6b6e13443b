"""Drive Debian's headless Chromium from tests, with the standard library only.

We talk to ``chromedriver`` over its W3C WebDriver HTTP API with :mod:`urllib`, so the harness
needs no WebSocket client of its own (it would otherwise depend on the very thing under test)
and no Python automation package that downloads a browser build. Debian's ``chromium`` and
``chromium-driver`` packages provide ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``; the
``TETHER_CHROMIUM`` and ``TETHER_CHROMEDRIVER`` environment variables point elsewhere.

Usage::

    with Browser() as browser:
        page = browser.open("http://127.0.0.1:8765/")
        page.wait_for("document.body.dataset.state === 'open'")
        page.type("#chat-input", "hello")
        page.click("#chat-send")
        page.screenshot(tmp_path / "page.png")

Every call is bounded in time, and :meth:`Browser.close` (run by the context manager, also when
the body raises) ends chromedriver and every Chromium process it started.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM_FLAGS",
    "Browser",
    "BrowserError",
    "Page",
    "WebDriverError",
    "chromium_available",
    "find_chromedriver",
    "find_chromium",
]

#: Flags for running as root in a sandbox without network access. The background-networking
#: family stops Chromium from calling home (updates, sync, safe browsing, ...), which would
#: otherwise flood the closed network; the throttling family keeps timers and sockets in
#: background tabs running at full speed, so two pages can talk to each other.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--mute-audio",
    "--disable-breakpad",
    "--disable-crash-reporter",
    # Let pages from data: or file: URLs reach servers on loopback (Local Network Access would
    # block them). chromedriver merges this list with its own --disable-features.
    "--disable-features=LocalNetworkAccessChecks",
    # Even so, Chromium still looks up a few Google and search-engine names; answer every name
    # but localhost with "not found" from inside the browser, so no DNS query leaves it.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
)

# W3C WebDriver's key for element references (section 12.1 of the specification).
_ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
_PORT_LINE = re.compile(rb"was started successfully on port (\d+)")

#: Set TETHER_BROWSER_TRACE=1 to print every WebDriver command and its duration to stderr.
_TRACE = bool(os.environ.get("TETHER_BROWSER_TRACE"))

#: Seconds allowed for one HTTP call to chromedriver, unless a call says otherwise.
HTTP_TIMEOUT = 30.0
#: Seconds allowed for chromedriver to start listening, and for Chromium to start.
START_TIMEOUT = 30.0
#: how many times chromedriver is started when it loses the race for its port (see _start_driver)
_DRIVER_ATTEMPTS = 3


class BrowserError(RuntimeError):
    """The harness could not start, reach or use the browser."""


class WebDriverError(BrowserError):
    """chromedriver answered a command with a W3C error (``error`` is its error code)."""

    def __init__(self, error: str, message: str, command: str) -> None:
        super().__init__(error, message, command)
        self.error = error
        self.message = message
        self.command = command

    def __str__(self) -> str:
        # chromedriver appends a native stack trace and session info we do not need.
        first_line = self.message.splitlines()[0] if self.message else ""
        return f"{self.command}: {self.error}: {first_line}"


def find_chromium() -> str | None:
    """Path of the Chromium executable, or ``None``."""
    configured = os.environ.get("TETHER_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def find_chromedriver() -> str | None:
    """Path of the chromedriver executable, or ``None``."""
    configured = os.environ.get("TETHER_CHROMEDRIVER")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("chromedriver")


def chromium_available() -> str | None:
    """Return ``None`` when the browser harness can run, else the reason why it cannot."""
    missing = []
    if find_chromium() is None:
        missing.append("chromium")
    if find_chromedriver() is None:
        missing.append("chromedriver")
    if missing:
        return (
            f"{' and '.join(missing)} not found "
            "(apt-get install -y chromium chromium-driver, or set TETHER_CHROMIUM / "
            "TETHER_CHROMEDRIVER)"
        )
    return None


class Browser:
    """One headless Chromium, driven through its own chromedriver process.

    Args:
        width: Window width in CSS pixels; screenshots have this size.
        height: Window height in CSS pixels.
        timeout: Default seconds for page loads, scripts and :meth:`Page.wait_for`.
        extra_args: More Chromium flags, appended to :data:`CHROMIUM_FLAGS`.
    """

    def __init__(
        self,
        *,
        width: int = 1280,
        height: int = 900,
        timeout: float = 15.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.width = width
        self.height = height
        self.timeout = timeout
        self.extra_args = tuple(extra_args)
        self._driver: subprocess.Popen[bytes] | None = None
        self._driver_output: collections.deque[str] = collections.deque(maxlen=200)
        self._base_url = ""
        self._session = ""
        self._chromium_pid: int | None = None
        self._profile: str | None = None
        self._pages: list[Page] = []
        self._current: str | None = None
        # The first window stays blank and belongs to no page: WebDriver ends the session when
        # its last window closes, and every page gets a fresh window (fresh sessionStorage).
        self._anchor: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start chromedriver and a Chromium session; on any failure, clean up and raise."""
        if self._driver is not None:
            raise BrowserError("browser already started")
        reason = chromium_available()
        if reason is not None:
            raise BrowserError(reason)
        # Also on interpreter exit, for a Browser someone forgot to close.
        atexit.register(self.close)
        try:
            self._start_driver()
            self._start_session()
        except BaseException:
            self.close()
            raise

    def _start_driver(self) -> None:
        # chromedriver --port=0 takes a free port for one address family and then binds the
        # same number for the other; when another process holds that number there, it exits
        # with "bind() failed". That is a race with the machine's other sockets, not a broken
        # chromedriver: start it again (a few times) instead of failing the test.
        for attempt in range(1, _DRIVER_ATTEMPTS + 1):
            port = self._launch_driver()
            if port is not None:
                self._base_url = f"http://127.0.0.1:{port}"
                return
            output = self.driver_output()
            if attempt == _DRIVER_ATTEMPTS or "bind() failed" not in output:
                raise BrowserError(
                    f"chromedriver did not report its port within {START_TIMEOUT} s"
                    f" (attempt {attempt}):\n{output}"
                )
            assert self._driver is not None
            self._driver.kill()
            self._driver.wait()
            self._driver = None
            self._driver_output.clear()

    def _launch_driver(self) -> int | None:
        """Start chromedriver; its port, or None when it exits or stays silent."""
        driver = find_chromedriver()
        assert driver is not None
        # A session of its own, so that close() can kill chromedriver and Chromium together.
        self._driver = subprocess.Popen(
            [driver, "--port=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ports: queue.Queue[int | None] = queue.Queue()
        threading.Thread(
            target=self._drain_driver_output,
            args=(self._driver, ports),
            name="chromedriver-output",
            daemon=True,
        ).start()
        try:
            return ports.get(timeout=START_TIMEOUT)
        except queue.Empty:
            return None

    def _drain_driver_output(
        self, process: subprocess.Popen[bytes], ports: queue.Queue[int | None]
    ) -> None:
        # Read until EOF so that the pipe never fills up and blocks chromedriver or Chromium.
        assert process.stdout is not None
        for line in process.stdout:
            match = _PORT_LINE.search(line)
            if match:
                ports.put(int(match.group(1)))
            self._driver_output.append(line.decode("utf-8", "replace").rstrip())
        ports.put(None)  # chromedriver exited (after its port, this is never read)

    def _start_session(self) -> None:
        chromium = find_chromium()
        assert chromium is not None
        self._profile = tempfile.mkdtemp(prefix="tether-chromium-")
        args = [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            *self.extra_args,
        ]
        timeout_ms = int(self.timeout * 1000)
        capabilities = {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": timeout_ms, "script": timeout_ms, "implicit": 0},
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        value = self._command(
            "POST",
            "/session",
            {"capabilities": {"alwaysMatch": capabilities}},
            timeout=START_TIMEOUT + 10,
        )
        self._session = value["sessionId"]
        pid = value["capabilities"].get("goog:processID")
        self._chromium_pid = pid if isinstance(pid, int) else None
        self._current = self._command("GET", self._path("/window"))
        self._anchor = self._current

    def close(self) -> None:
        """End the session, chromedriver and Chromium; safe to call more than once."""
        atexit.unregister(self.close)
        driver, self._driver = self._driver, None
        if self._session and driver is not None and driver.poll() is None:
            with contextlib.suppress(Exception):
                self._command("DELETE", self._path(""), timeout=10)
        self._session = ""
        if driver is not None:
            _stop_process_group(driver)
        if self._profile is not None:
            # Chromium processes that left the process group still name our profile.
            _kill_processes_mentioning(f"--user-data-dir={self._profile}")
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
        self._pages.clear()
        self._anchor = None

    @property
    def chromium_pid(self) -> int | None:
        """Process id of the main Chromium process (for tests of the harness)."""
        return self._chromium_pid

    @property
    def profile_dir(self) -> str | None:
        """The fresh ``--user-data-dir`` of this browser while it runs."""
        return self._profile

    @property
    def driver_pid(self) -> int | None:
        """Process id of chromedriver while it runs."""
        return self._driver.pid if self._driver is not None else None

    def driver_output(self) -> str:
        """The last lines chromedriver and Chromium printed, for error messages."""
        return "\n".join(self._driver_output)

    # -- pages ------------------------------------------------------------------------------

    @property
    def pages(self) -> list[Page]:
        """Pages opened so far and not closed, in order."""
        return list(self._pages)

    def open(self, url: str) -> Page:
        """Load ``url`` in a new page and return it."""
        if not self._session:
            raise BrowserError("browser not started")
        value = self._command("POST", self._path("/window/new"), {"type": "tab"})
        handle = str(value["handle"])
        page = Page(self, handle)
        self._pages.append(page)
        page.resize(self.width, self.height)
        page.goto(url)
        return page

    def close_pages(self) -> None:
        """Close every page, leaving the browser as if just started (for shared browsers)."""
        for page in reversed(self._pages):
            page.close()

    def console_log(self) -> list[dict[str, Any]]:
        """Console messages and page errors since the last call (all pages together).

        Each entry has ``level`` (``"SEVERE"`` for errors), ``message`` and ``timestamp``.
        """
        value = self._command("POST", self._path("/se/log"), {"type": "browser"})
        return list(value)

    # -- transport --------------------------------------------------------------------------

    def _path(self, suffix: str) -> str:
        return f"/session/{self._session}{suffix}"

    def _switch_to(self, handle: str) -> None:
        if self._current != handle:
            self._command("POST", self._path("/window"), {"handle": handle})
            self._current = handle

    def _command(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = HTTP_TIMEOUT,
    ) -> Any:
        """Send one WebDriver command and return its ``value``, or raise WebDriverError."""
        if not self._base_url:
            raise BrowserError("chromedriver is not running")
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            self._base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        command = f"{method} {re.sub(r'^/session/[^/]+', '', path) or path}"
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
        except (OSError, TimeoutError) as exc:
            raise BrowserError(f"{command}: chromedriver unreachable: {exc}") from exc
        finally:
            if _TRACE:
                elapsed = time.monotonic() - started
                print(f"[browser] {command} {elapsed * 1000:.0f} ms", file=sys.stderr)
        try:
            value = json.loads(payload)["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BrowserError(f"{command}: malformed answer {payload[:200]!r}") from exc
        if isinstance(value, dict) and "error" in value:
            raise WebDriverError(str(value["error"]), str(value.get("message", "")), command)
        return value


class Page:
    """One browser window. Each method switches the browser to this window first."""

    def __init__(self, browser: Browser, handle: str) -> None:
        self.browser = browser
        self.handle = handle

    def _command(
        self, method: str, suffix: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        self.browser._switch_to(self.handle)
        return self.browser._command(method, self.browser._path(suffix), body, **kwargs)

    def goto(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event."""
        self._command("POST", "/url", {"url": url}, timeout=self.browser.timeout + 10)

    @property
    def url(self) -> str:
        return str(self._command("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self._command("GET", "/title"))

    def resize(self, width: int, height: int) -> None:
        """Size the window so that its viewport (and so a screenshot) is ``width`` x ``height``.

        The window rectangle includes the browser's own frame, so we measure that and add it.
        """
        frame = self.eval("[outerWidth - innerWidth, outerHeight - innerHeight]")
        size = {"width": width + int(frame[0]), "height": height + int(frame[1])}
        self._command("POST", "/window/rect", size)

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` as the body of a function called with ``args`` (``arguments[i]``).

        Its ``return`` value comes back as JSON; a returned promise is awaited.
        """
        return self._command(
            "POST",
            "/execute/sync",
            {"script": script, "args": list(args)},
            timeout=self.browser.timeout + 10,
        )

    def eval(self, expression: str, *args: Any) -> Any:
        """Evaluate one JavaScript expression (may use ``arguments[i]``) and return its value."""
        return self.run(f"return ({expression});", *args)

    def wait_for(
        self,
        expression: str,
        *args: Any,
        timeout: float | None = None,
        interval: float = 0.05,
    ) -> Any:
        """Poll ``expression`` until it is truthy and return that value.

        Raises:
            TimeoutError: It stayed falsy for ``timeout`` seconds (the browser's default when
                ``None``); the message shows the last value and the page's body state.
        """
        limit = self.browser.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            value = self.eval(expression, *args)
            if value:
                return value
            if time.monotonic() >= deadline:
                state = self.eval("document.body ? document.body.dataset.state : null")
                raise TimeoutError(
                    f"waited {limit} s for {expression!r}; last value {value!r}, "
                    f"body data-state {state!r}"
                )
            time.sleep(interval)

    def find(self, selector: str) -> str:
        """Return the WebDriver id of the first element matching the CSS ``selector``."""
        value = self._command("POST", "/element", {"using": "css selector", "value": selector})
        return str(value[_ELEMENT_KEY])

    def click(self, selector: str) -> None:
        """Click the element matching ``selector`` as a user would (it must be interactable)."""
        element = self.find(selector)
        self._command("POST", f"/element/{element}/click")

    def type(self, selector: str, text: str, *, clear: bool = True) -> None:
        """Type ``text`` into the input matching ``selector``, clearing it first by default."""
        element = self.find(selector)
        if clear:
            self._command("POST", f"/element/{element}/clear")
        self._command("POST", f"/element/{element}/value", {"text": text})

    def text(self, selector: str) -> str:
        """The rendered text of the element matching ``selector``."""
        element = self.find(selector)
        return str(self._command("GET", f"/element/{element}/text"))

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the window's viewport to ``path`` and return the path."""
        data = base64.b64decode(self._command("GET", "/screenshot"))
        target = Path(path)
        target.write_bytes(data)
        return target

    def cdp(self, command: str, params: dict[str, Any] | None = None) -> Any:
        """Send a Chrome DevTools Protocol command to this page (through chromedriver)."""
        body = {"cmd": command, "params": params or {}}
        return self._command("POST", "/goog/cdp/execute", body)

    def emulate_color_scheme(self, scheme: str) -> None:
        """Make ``prefers-color-scheme`` match ``"light"`` or ``"dark"`` in this page."""
        feature = {"name": "prefers-color-scheme", "value": scheme}
        self.cdp("Emulation.setEmulatedMedia", {"features": [feature]})

    def close(self) -> None:
        """Close this page; the browser keeps running."""
        browser = self.browser
        self._command("DELETE", "/window")
        browser._pages.remove(self)
        browser._current = None
        # WebDriver needs a current window for commands such as "new window".
        if browser._anchor is not None:
            browser._switch_to(browser._anchor)


def _kill_processes_mentioning(marker: str) -> None:
    """SIGKILL every process whose command line contains ``marker`` (Linux /proc only)."""
    needle = marker.encode()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "cmdline"), "rb") as file:
                    if needle not in file.read():
                        continue
                os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Terminate a process started with ``start_new_session`` and everything in its group."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            # The leader is gone; children may linger in the group for a moment.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return
