"""Every Python code block in docs/**/*.md and README.md runs, as shown, in these tests.

A page's blocks run in order, each as its own program (``python block.py``) in a temporary
folder, with a time limit. An HTML comment on the line before a block says how:

=================================  ===========================================================
(none)                             a complete program: it must exit with status 0
``<!-- test: server -->``          a server: started in the background, ready once it accepts
                                   TCP connections; the page's later ``client`` blocks run
                                   against it, and it is stopped when the page ends (or the
                                   next server starts); it must not have logged a traceback
``<!-- test: client -->``          a program that talks to the page's server (the tutorial's
                                   echo server when the page has none); it must exit with 0
``<!-- test: skip REASON -->``     not run; the reason is required, and skips are kept rare
=================================  ===========================================================

The docs use port 8765 throughout, as ``tether serve`` does; the tests use free ports instead
(the text ``8765`` is replaced in the code before it runs), one for a page's server and its
clients and one for each complete program, so that tests never meet a server someone started
by hand, nor each other.

A ``{literalinclude}`` of a Python file counts as a block with the file's content: it takes a
marker the same way and runs from a copy of its folder, so that files it reads beside itself
(the tutorial's ``page.html``) are there. Every literalinclude must name a file under
``examples/``, and every file under ``examples/`` must be run here or by another test.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.browser import Browser
from helpers.net import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
#: The server that ``client`` blocks talk to on a page without a server of its own.
DEFAULT_SERVER = EXAMPLES / "tutorial" / "echo_server.py"
#: Seconds a program may run; a server, to start listening.
RUN_TIMEOUT = 60
START_TIMEOUT = 20
#: Skipped blocks, all pages together: a skip is the exception, never the habit.
MAX_SKIPS = 2

PYTHON_LANGUAGES = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>.*?)\s*$")
MARKER = re.compile(r"^<!--\s*test:\s*(?P<mode>[\w-]+)(?:\s+(?P<reason>.*?))?\s*-->$")
MODES = {"run", "server", "client", "skip"}

pytestmark = pytest.mark.timeout(300)

HINT = (
    "Every Python block in the docs runs as a program (tests/docs/test_docs_examples.py): "
    "make it complete, or put <!-- test: client --> before a block that talks to a server on "
    "port 8765, <!-- test: server --> before one that serves on it."
)


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    mode: str
    reason: str = ""
    #: The file a literalinclude shows (its folder is copied beside the program).
    source: Path | None = None

    def __str__(self) -> str:
        where = f"{show(self.page)}:{self.line}"
        return f"{where} ({show(self.source)})" if self.source else where


def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclasses.dataclass
class Include:
    page: Path
    line: int
    target: Path


def pages() -> list[Path]:
    found = [ROOT / "README.md"]
    found += sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
    return found


def parse(page: Path) -> tuple[list[Block], list[Include]]:
    """The Python blocks of a page (with their markers) and every file it literalincludes."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    includes: list[Include] = []
    previous = ""
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        fence, info = opening["fence"], opening["info"]
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence))
            and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        assert end < len(lines), f"{page}:{index + 1}: code block never closed"
        body = lines[index + 1 : end]
        marker = MARKER.match(previous)
        mode, reason = ("run", "") if marker is None else (marker["mode"], marker["reason"] or "")
        assert mode in MODES, f"{page}:{index + 1}: unknown test marker {mode!r}"
        language = info.split()[0].lower() if info else ""
        if language in ("{code-block}", "{code}", "{sourcecode}"):
            language = info.split()[1].lower() if len(info.split()) > 1 else ""
        if language == "{literalinclude}":
            target = (page.parent / info.split(maxsplit=1)[1]).resolve()
            includes.append(Include(page, index + 1, target))
            if target.suffix == ".py":
                code = target.read_text() if target.exists() else ""
                blocks.append(Block(page, index + 1, code, mode, reason, target))
        elif language in PYTHON_LANGUAGES:
            code = "\n".join(line for line in body if not line.startswith(":"))
            blocks.append(Block(page, index + 1, code + "\n", mode, reason))
        elif language == "{eval-rst}":
            text = "\n".join(body)
            assert "code-block::" not in text and "literalinclude::" not in text, (
                f"{page}:{index + 1}: write code blocks as Markdown fences, so that they are run"
            )
        else:
            assert marker is None, f"{page}:{index + 1}: a test marker on a {info!r} block"
        previous = ""
        index = end + 1
    return blocks, includes


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prepare(block: Block, port: int, folder: Path) -> Path:
    """Write the program (and, for an example, its folder) under ``folder``; return its path."""
    folder.mkdir(parents=True)
    if block.source is not None:
        for sibling in block.source.parent.iterdir():
            if sibling.is_file():
                shutil.copy(sibling, folder / sibling.name)
        program = folder / block.source.name
    else:
        program = folder / "block.py"
    program.write_text(block.code.replace("8765", str(port)))
    return program


def _text(data: str | bytes | None) -> str:
    """What a timed-out process printed (bytes, even with ``text=True``)."""
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def run(block: Block, port: int, folder: Path) -> None:
    program = prepare(block, port, folder)
    try:
        done = subprocess.run(
            [sys.executable, program.name],
            cwd=folder,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        output = f"{_text(exc.stdout)}\n{_text(exc.stderr)}"
        pytest.fail(f"{block}: still running after {RUN_TIMEOUT} s\n{output}")
    assert done.returncode == 0, (
        f"{block}: exit status {done.returncode}\n--- stdout\n{done.stdout}\n"
        f"--- stderr\n{done.stderr}\n{HINT}"
    )


class RunningServer:
    """A server block in the background, its output in files."""

    def __init__(self, block: Block, port: int, folder: Path) -> None:
        self.block = block
        self.port = port
        program = prepare(block, port, folder)
        self.stdout = (folder / "stdout.txt").open("w+")
        self.stderr = (folder / "stderr.txt").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, program.name],
            cwd=folder,
            env=_environment(),
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"{block}: the server exited ({self.process.returncode})\n{self}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{block}: not listening after {START_TIMEOUT} s\n{self}")
                time.sleep(0.05)

    def output(self) -> tuple[str, str]:
        self.stdout.seek(0)
        self.stderr.seek(0)
        return self.stdout.read(), self.stderr.read()

    def __str__(self) -> str:
        out, err = self.output()
        return f"--- server stdout\n{out}\n--- server stderr\n{err}"

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"{self.block}: the server died\n{self}"

    def stop(self) -> None:
        """Stop the server (SIGTERM, as a service manager would) and check its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        text = str(self)
        self.stdout.close()
        self.stderr.close()
        assert "Traceback" not in text, f"{self.block}: the server logged a traceback\n{text}"


def run_page(page: Path, tmp_path: Path) -> None:
    blocks, _ = parse(page)
    port = free_port()
    server: RunningServer | None = None
    try:
        for number, block in enumerate(blocks):
            folder = tmp_path / f"block{number}"
            if block.mode == "skip":
                assert block.reason, f"{block}: a skip needs a reason"
                continue
            if block.mode == "server":
                if server is not None:
                    server.stop()
                server = RunningServer(block, port, folder)
                continue
            if block.mode == "client" and server is None:
                default = Block(page, 0, DEFAULT_SERVER.read_text(), "server", "", DEFAULT_SERVER)
                server = RunningServer(default, port, tmp_path / "default-server")
            # A complete program that serves gets a port of its own.
            run(block, port if block.mode == "client" else free_port(), folder)
            if block.mode == "client":
                assert server is not None
                server.check_alive()
    finally:
        if server is not None:
            server.stop()


def pages_with_code() -> list[Path]:
    return [page for page in pages() if parse(page)[0]]


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda page: str(page.relative_to(ROOT)))
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def all_blocks() -> Iterator[Block]:
    for page in pages():
        yield from parse(page)[0]


def test_skips_are_rare_and_give_a_reason() -> None:
    skipped = [block for block in all_blocks() if block.mode == "skip"]
    for block in skipped:
        assert len(block.reason.split()) >= 3, f"{block}: say why it cannot run"
    assert len(skipped) <= MAX_SKIPS, "skipped blocks: " + ", ".join(map(str, skipped))


def test_literalincludes_show_examples_that_run() -> None:
    """Included files live in examples/ and are run: here (Python) or by a program that is."""
    run_here = {block.source for block in all_blocks() if block.source and block.mode != "skip"}
    for page in pages():
        for include in parse(page)[1]:
            where = f"{show(include.page)}:{include.line}"
            assert include.target.is_file(), f"{where}: {include.target} does not exist"
            assert include.target.is_relative_to(EXAMPLES), f"{where}: include from examples/"
            if include.target.suffix != ".py":
                readers = [p for p in run_here if include.target.name in p.read_text()]
                assert readers, f"{where}: no example that runs reads {include.target.name}"


def test_every_example_is_run_by_a_test() -> None:
    """A file in examples/ that no test runs would rot unseen."""
    run_here = {block.source for block in all_blocks() if block.source and block.mode != "skip"}
    tests = [p.read_text() for p in (ROOT / "tests").rglob("*.py") if p != Path(__file__)]
    for example in sorted(EXAMPLES.rglob("*.py")):
        if example in run_here:
            continue
        # Its name, and the folders it sits in under examples/, named in one test module.
        words = [*example.relative_to(EXAMPLES).parent.parts, example.stem]
        assert any(
            all(re.search(rf"\b{re.escape(word)}\b", text) for word in words) for text in tests
        ), f"{example.relative_to(ROOT)} is neither shown in the docs nor run by a test"


def test_parser_sees_markers_fences_and_includes(tmp_path: Path) -> None:
    """The extraction itself: a harness that found no blocks would pass vacuously."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- test: server -->\n```python\nserver()\n```\n\n"
        "```console\n$ tether serve\n```\n\n<!-- test: skip needs a real network -->\n"
        "````python\nprint('```')\n````\n\n```{literalinclude} ../examples/tutorial/page.html\n"
        ":language: html\n```\n\n```py\nplain()\n```\n"
    )
    blocks, includes = parse(page)
    assert [(b.mode, b.code.strip(), b.line) for b in blocks] == [
        ("server", "server()", 4),
        ("skip", "print('```')", 13),
        ("run", "plain()", 21),
    ]
    assert blocks[1].reason == "needs a real network"
    assert [i.target.name for i in includes] == ["page.html"]
    assert len(list(all_blocks())) >= 5


def test_a_failing_block_fails_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nraise SystemExit(3)\n```\n")
    with pytest.raises(AssertionError, match="exit status 3"):
        run_page(page, tmp_path / "run")


def test_a_server_that_logs_a_traceback_fails_the_page(tmp_path: Path) -> None:
    """The client reaches the page's server on the port that replaced 8765; what the server
    logs is checked when the page ends."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- test: server -->\n```python\nimport socket, sys\n"
        "listener = socket.create_server(('127.0.0.1', 8765))\nwhile True:\n"
        "    conn, _ = listener.accept()\n    if conn.recv(4) == b'boom':\n"
        "        print('Traceback (most recent call last):', file=sys.stderr, flush=True)\n"
        "        conn.sendall(b'ok')\n    conn.close()\n```\n\n"
        "<!-- test: client -->\n```python\nimport socket\n"
        "conn = socket.create_connection(('127.0.0.1', 8765))\nconn.sendall(b'boom')\n"
        "assert conn.recv(2) == b'ok'\n```\n"
    )
    with pytest.raises(AssertionError, match="the server logged a traceback"):
        run_page(page, tmp_path / "run")


@pytest.mark.browser
def test_tutorial_chat_page_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """The tutorial's page, served by its chat server, chats between two browser tabs."""
    source = EXAMPLES / "tutorial" / "chat_server.py"
    port = free_port()
    block = Block(DOCS / "tutorial.md", 0, source.read_text(), "server", "", source)
    server = RunningServer(block, port, tmp_path / "server")
    try:
        alice = browser.open(f"http://127.0.0.1:{port}/")
        bob = browser.open(f"http://127.0.0.1:{port}/")
        for tab in (alice, bob):
            tab.wait_for("document.getElementById('status').textContent === 'connected'")
        alice.type("#text", "<b>hello</b> from alice")
        alice.click("button")
        for tab in (alice, bob):
            tab.wait_for("document.querySelectorAll('#messages li').length === 1")
            assert tab.text("#messages li") == "<b>hello</b> from alice"  # text, not HTML
        server.check_alive()
    finally:
        server.stop()
    # The page has no favicon: the browser's request for one gets the server's 404.
    errors = [
        entry
        for entry in browser.console_log()
        if entry.get("level") == "SEVERE" and "favicon.ico" not in entry.get("message", "")
    ]
    assert not errors, errors
