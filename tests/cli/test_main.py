"""The ``tether`` command as a user runs it: ``serve`` and ``connect`` in real subprocesses.

Determinism: every server listens on 127.0.0.1 port 0 and prints its URL, which the tests read
from its standard output; every wait has a bound (``subprocess`` timeouts, ``asyncio.timeout``)
and every server process is stopped by a context manager, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
import trustme

from helpers.demo import ServeProcess, http_get, tether
from helpers.net import free_port
from tether import ConnectionClosedOK, __version__, connect
from tether import compiled as tether_compiled
from tether.cli import main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with ServeProcess() as process:
        yield process


# --- serve ---------------------------------------------------------------------------------------


def test_serve_prints_the_urls_to_open(server: ServeProcess) -> None:
    output = "".join(server.stdout)
    assert f"http://127.0.0.1:{server.port}/" in output
    assert f"ws://127.0.0.1:{server.port}/echo" in output
    assert f"ws://127.0.0.1:{server.port}/chat" in output
    assert "subprotocols: chat.v2, chat" in output


def test_serve_answers_healthz_the_page_and_unknown_paths(server: ServeProcess) -> None:
    status, _, body = http_get(server.url("/healthz", "http"))
    assert (status, body) == (200, b"ok\n")
    status, headers, body = http_get(server.url("/", "http"))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    assert b"<title>tether" in body and b'new Socket("chat", "/chat"' in body
    status, _, body = http_get(server.url("/missing", "http"))
    assert status == 404 and b"/missing" in body
    # A WebSocket endpoint asked for in plain HTTP: 426 says what to ask for.
    status, headers, _ = http_get(server.url("/echo", "http"))
    assert (status, headers["Upgrade"]) == (426, "websocket")


def test_serve_logs_each_connection_with_what_was_negotiated(server: ServeProcess) -> None:
    result = tether("connect", server.url("/echo"), "--subprotocol", "chat", input="x\n")
    assert result.returncode == 0, result.stderr
    log = "".join(server.stderr)
    assert re.search(
        r"GET /echo: subprotocol=chat extensions=permessage-deflate; server_max_window_bits=12",
        log,
    ), log
    assert re.search(r"127\.0\.0\.1:\d+ /echo closed: 1000", log), log


def test_serve_refuses_a_port_in_use(server: ServeProcess) -> None:
    result = tether("serve", "--port", str(server.port), timeout=20)
    assert result.returncode == 1
    assert "tether serve: error:" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_shuts_down_gracefully_and_clients_see_1001(sig: int) -> None:
    with ServeProcess() as process:

        async def client() -> None:
            async with asyncio.timeout(20):
                async with connect(process.url("/chat")) as ws:
                    assert '"type": "join"' in str(await ws.recv())
                    process.process.send_signal(sig)
                    with pytest.raises(ConnectionClosedOK) as caught:
                        await ws.recv()
                    assert caught.value.code == 1001
                    assert caught.value.reason == "server shutting down"

        asyncio.run(client())
        assert process.wait() == 0
        assert "Server stopped." in "".join(process.stdout)


# --- connect -------------------------------------------------------------------------------------


def test_connect_through_a_pipe_sends_lines_and_prints_replies(server: ServeProcess) -> None:
    lines = "hello\nwörld\n\n/binary 00 ff 10\n//slash\n"
    result = tether("connect", server.url("/echo"), input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "< hello\n< wörld\n< [binary, 3 bytes] 00 ff 10\n< /slash\n"
    assert "* subprotocol: none" in result.stderr
    assert "* extensions: permessage-deflate; server_max_window_bits=12" in result.stderr
    assert "connection closed: sent 1000 (OK); then received 1000 (OK)" in result.stderr


def test_connect_waits_for_the_last_replies_before_closing(server: ServeProcess) -> None:
    # Many lines at once: the input ends long before the replies are all back.
    lines = "".join(f"message {n}\n" for n in range(200))
    result = tether("connect", server.url("/echo"), input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"< message {n}" for n in range(200)]


def test_connect_shows_the_subprotocol_escapes_controls_and_pings(server: ServeProcess) -> None:
    lines = "bell\x07 \x1b[31mred\u202e\n/ping\n/nope\n"
    result = tether("connect", server.url("/echo"), "--subprotocol", "chat", input=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "< bell\\x07 \\x1b[31mred\\u202e\n"
    assert "* subprotocol: chat" in result.stderr
    assert re.search(r"\* pong: round trip \d+\.\d\d ms", result.stderr)
    assert "unknown command /nope" in result.stderr


def test_connect_close_command_ends_the_session(server: ServeProcess) -> None:
    result = tether("connect", server.url("/echo"), input="/close 4000 done\nnever sent\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "sent 4000 (private use) done; then received 4000" in result.stderr


def test_connect_chats_and_waits_no_longer_than_wait(server: ServeProcess) -> None:
    # The room relays chat messages and drops anything else: four lines sent, three messages
    # back (the join and two messages), so the client waits the whole --wait, and no more.
    lines = (
        '{"type": "message", "name": "ada", "text": "hi"}\n'
        "plain text\n"
        '{"type": "typing"}\n'
        '{"type": "typing"}\n'
    )
    started = time.monotonic()
    result = tether(
        "connect", server.url("/chat"), "--compression", "none", "--wait", "0.5", input=lines
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    received = result.stdout.splitlines()
    assert len(received) == 3, received
    assert received[0].startswith('< {"type": "join", "name": "guest-')
    assert re.fullmatch(
        r'< \{"type": "message", "name": "ada", "text": "hi", "time": [\d.]+, '
        r'"offset": 2, "epoch": "[\w-]+"\}',
        received[1],
    )
    # A plain line is a message from the last name used.
    assert '"name": "ada", "text": "plain text"' in received[2]
    assert "* extensions: none" in result.stderr
    assert 0.5 <= elapsed < 10


def test_connect_refused_handshake_exits_non_zero_with_the_reason(server: ServeProcess) -> None:
    result = tether("connect", server.url("/nowhere"), input="hello\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "tether connect: the server refused the WebSocket handshake: HTTP 404 Not Found\n"
        "  reason: No WebSocket endpoint at /nowhere; try /echo or /chat.\n"
    )


def test_connect_with_options_against_a_server_with_options() -> None:
    with ServeProcess(
        "--origin",
        "https://good.example",
        "--subprotocol",
        "kv.v1",
        "--compression",
        "none",
    ) as process:
        assert "origins:      https://good.example" in "".join(process.stdout)
        url = process.url("/echo")
        refused = tether("connect", url, input="x\n")
        assert refused.returncode == 1
        assert "HTTP 403 Forbidden" in refused.stderr
        assert "reason: Failed to open a WebSocket connection: missing Origin header" in (
            refused.stderr
        )
        refused = tether("connect", url, "--header", "Origin: https://evil.example")
        assert refused.returncode == 1
        assert "invalid Origin header: https://evil.example (origin not allowed)" in (
            refused.stderr
        )
        accepted = tether(
            "connect",
            url,
            "--header",
            "Origin: https://good.example",
            "--subprotocol",
            "other",
            "--subprotocol",
            "kv.v1",
            input="ok\n",
        )
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout == "< ok\n"
        assert "* subprotocol: kv.v1" in accepted.stderr
        assert "* extensions: none" in accepted.stderr
        # --origin, as `tether inspect` has it.
        accepted = tether("connect", url, "--origin", "https://good.example", input="ok\n")
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout == "< ok\n"
        refused = tether("connect", url, "--origin", "https://evil.example", input="x\n")
        assert refused.returncode == 1
        assert "invalid Origin header: https://evil.example (origin not allowed)" in (
            refused.stderr
        )


def test_connect_to_nothing_exits_non_zero() -> None:
    result = tether("connect", f"ws://127.0.0.1:{free_port()}/", input="x\n")
    assert result.returncode == 1
    assert "tether connect: cannot connect to ws://127.0.0.1:" in result.stderr


def test_tls_serve_and_connect_insecure(tmp_path: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    with ServeProcess("--tls-cert", str(cert_file), "--tls-key", str(key_file)) as process:
        assert process.scheme == "https"
        assert f"wss://127.0.0.1:{process.port}/echo" in "".join(process.stdout)
        result = tether("connect", process.url("/echo"), "--insecure", input="secret\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "< secret\n"
        # Without --insecure, the self-signed certificate is refused.
        result = tether("connect", process.url("/echo"), input="secret\n")
        assert result.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


# --- usage ---------------------------------------------------------------------------------------


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["connect", "ftp://example.com/"], "scheme isn't ws or wss"),
        (["connect", "ws://127.0.0.1/", "--header", "no colon"], "expected 'Name: value'"),
        (
            ["connect", "ws://127.0.0.1/", "--header", "Bad Name: x"],
            "invalid header name: 'Bad Name'",
        ),
        (
            ["inspect", "ws://127.0.0.1/", "--header", "X: \x1b"],
            "invalid value for header X: '\\x1b'",
        ),
        (
            ["connect", "ws://127.0.0.1/", "--header", "Sec-WebSocket-Protocol: x"],
            "--header 'Sec-WebSocket-Protocol: x': Sec-WebSocket-Protocol is set by the handshake",
        ),
        (["connect", "ws://127.0.0.1/", "--insecure"], "--insecure only applies to wss:// URLs"),
        (["inspect", "ws://127.0.0.1/", "--insecure"], "--insecure only applies to wss:// URLs"),
        (["serve", "--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (["serve", "--compression", "zstd"], "invalid choice: 'zstd'"),
        (["inspect", "ws://127.0.0.1/", "--timeout", "0"], "--timeout must be positive"),
        ([], "the following arguments are required: COMMAND"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("tether")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith(f"tether {__version__}\nimplementation: ")


def version_output(no_speedups: str | None, *argv: str) -> str:
    env = dict(os.environ)
    env.pop("TETHER_NO_SPEEDUPS", None)
    if no_speedups is not None:
        env["TETHER_NO_SPEEDUPS"] = no_speedups
    done = subprocess.run(
        [sys.executable, *argv, "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def core_line() -> str:
    """The implementation line, from what this process imported (pure or compiled build)."""
    compiled = [
        name
        for name in tether_compiled.module_names()
        if (sys.modules[name].__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
    ]
    if not compiled:
        return (
            "implementation: sans-I/O core in pure Python (an editable install, a build "
            "without a C compiler or with TETHER_NO_MYPYC=1); a wheel built with a C compiler "
            "compiles it with mypyc (faster)"
        )
    assert len(compiled) == len(tether_compiled.MYPYC_MODULES), compiled
    return (
        f"implementation: sans-I/O core compiled with mypyc ({len(compiled)} modules); for "
        "pure Python, install a build without it (TETHER_NO_MYPYC=1 pip install --no-binary "
        "tether tether)"
    )


def test_version_says_pure_python_when_forced() -> None:
    assert version_output("1", "-m", "tether") == (
        f"tether {__version__}\n"
        f"{core_line()}\n"
        "masking: pure Python (TETHER_NO_SPEEDUPS is set; unset it to use the compiled "
        "C speedups)\n"
    )


def test_version_says_which_implementation_runs_by_default() -> None:
    output = version_output(None, "-m", "tether")
    first, second, third = output.splitlines()
    assert first == f"tether {__version__}"
    assert second == core_line()
    try:
        import tether.sansio._speedups  # noqa: F401
    except ImportError as exc:
        assert third.startswith("masking: pure Python: the C speedups are not built (")
        assert str(exc) in third
    else:
        assert third == (
            "masking: compiled C speedups (tether.sansio._speedups); "
            "set TETHER_NO_SPEEDUPS=1 to force pure-Python masking"
        )


def test_connect_reports_a_server_that_hangs_up_during_the_handshake() -> None:
    # A TCP server that reads the request, answers half a status line and closes.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]

    def hang_up() -> None:
        with listener, contextlib.suppress(OSError):
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = peer.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                peer.sendall(b"HTTP/1.1 101 ")

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    result = tether("connect", f"ws://127.0.0.1:{port}/", input="x\n")
    thread.join(10)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "tether connect: the server closed the connection before sending a complete HTTP "
        "response (13 bytes received)\n"
    )
