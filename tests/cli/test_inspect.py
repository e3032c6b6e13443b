"""``tether inspect``: the probes against real servers, and the report.

Servers: ``tether serve`` in a subprocess, a ``websockets`` echo server and a deliberately
wrong raw-socket server, both in a thread of the test process with their own event loop. The
findings that must differ between tether and websockets were checked by running websockets 17
(it answers an unsupported version with a bare 400, picks subprotocols by its own preference,
refuses clients that agree none, and accepts ``Upgrade`` only with "websocket" alone).

Determinism: every server listens on 127.0.0.1 port 0, every probe has a timeout, and the
thread servers are stopped by context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection as WebsocketsConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.typing import Subprotocol as WebsocketsSubprotocol

from helpers.demo import ServeProcess, tether
from helpers.net import free_port
from tether.cli.inspect import (
    NOTE,
    OK,
    VIOLATION,
    Finding,
    InspectOptions,
    Report,
    _check_deflate_answer,
    inspect,
)
from tether.sansio.handshake import accept_key

pytestmark = pytest.mark.timeout(60)


# --- servers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def thread_server(
    start: Callable[[], Awaitable[Any]], stop: Callable[[Any], None]
) -> Iterator[int]:
    """Run a server in a thread with its own loop; yield its port.

    ``start`` creates the server and returns it (with ``.sockets``); ``stop(server)`` is called
    in the loop to make it close.
    """
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        server = await start()
        state["loop"] = asyncio.get_running_loop()
        state["server"] = server
        state["port"] = server.sockets[0].getsockname()[1]
        state["done"] = asyncio.Event()
        ready.set()
        await state["done"].wait()
        stop(server)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await server.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["done"].set)
        thread.join(10)


@contextlib.contextmanager
def websockets_echo_server() -> Iterator[int]:
    """websockets' own server: subprotocols chat and chat.v2, permessage-deflate (its default)."""

    async def echo(ws: WebsocketsConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def start() -> Any:
        return await websockets_serve(
            echo,
            "127.0.0.1",
            0,
            subprotocols=[WebsocketsSubprotocol("chat"), WebsocketsSubprotocol("chat.v2")],
            compression="deflate",
        )

    with thread_server(start, lambda server: server.close()) as port:
        yield port


async def _careless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that says yes to everything: any version, any key, a subprotocol nobody
    offered, and every extension offer copied back line by line."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = [line.partition(":") for line in lines if line]
    key = next((v.strip() for n, _, v in headers if n.lower() == "sec-websocket-key"), "")
    response = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: surprise",
    ]
    response += [
        f"Sec-WebSocket-Extensions: {v.strip()}"
        for n, _, v in headers
        if n.lower() == "sec-websocket-extensions"
    ]
    writer.write(("\r\n".join(response) + "\r\n\r\n").encode())
    await writer.drain()
    writer.close()


@contextlib.contextmanager
def careless_server() -> Iterator[int]:
    async def start() -> Any:
        return await asyncio.start_server(_careless, "127.0.0.1", 0)

    with thread_server(start, lambda server: server.close()) as port:
        yield port


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""

    writers: set[asyncio.StreamWriter] = set()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        await reader.read()
        writer.close()

    async def start() -> Any:
        return await asyncio.start_server(hold, "127.0.0.1", 0)

    def stop(server: Any) -> None:
        server.close()
        for writer in writers:
            writer.close()

    with thread_server(start, stop) as port:
        yield port


@pytest.fixture(scope="module")
def tether_server() -> Iterator[ServeProcess]:
    with ServeProcess() as process:
        yield process


def run_json(*args: str) -> dict[str, Any]:
    result = tether("inspect", "--json", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def by_probe(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {finding["probe"]: finding for finding in report["findings"]}


# --- tether against websockets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(tether_server: ServeProcess) -> dict[str, dict[str, dict[str, Any]]]:
    """One ``tether inspect --json`` run against each server (the runs are the slow part)."""
    options = ["--subprotocol", "chat", "--subprotocol", "chat.v2", "--subprotocol", "foo"]
    with websockets_echo_server() as port:
        theirs = run_json(f"ws://127.0.0.1:{port}/", *options)
    ours = run_json(tether_server.url("/echo"), *options)
    for report in (ours, theirs):
        assert report["aborted"] is None
        summary = report["summary"]
        assert summary["probes"] == len(report["findings"]) == 32
        assert summary["ok"] + summary["violations"] + summary["notes"] == summary["probes"]
        assert all(f["exchanges"] for f in report["findings"] if f["topic"] != "echo")
    assert ours["server"] == "tether/0.1.0"
    assert theirs["server"].endswith("websockets/17.4") or "websockets/" in theirs["server"]
    return {"tether": by_probe(ours), "websockets": by_probe(theirs)}


def test_tether_passes_every_probe(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    failed = {p: f for p, f in reports["tether"].items() if f["verdict"] != OK}
    assert failed == {}


def test_unsupported_version(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    ours, theirs = reports["tether"]["version 8"], reports["websockets"]["version 8"]
    assert ours["observed"] == "426 Upgrade Required, Sec-WebSocket-Version: 13"
    assert (ours["verdict"], ours["rule"]) == (OK, "RFC 6455 4.4")
    # websockets 17: a bare 400 without the versions it speaks.
    assert theirs["observed"] == "400 Bad Request, no Sec-WebSocket-Version"
    assert theirs["verdict"] == VIOLATION
    assert "invalid Sec-WebSocket-Version header: 8" in theirs["detail"]
    response = theirs["exchanges"][0]["response"]
    assert response["status"] == 400
    assert not [h for h in response["headers"] if h.startswith("Sec-WebSocket-Version")]


def test_subprotocol_order_and_overlap(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    order = "offer chat, chat.v2 / chat.v2, chat"
    assert reports["tether"][order]["observed"] == "picked chat, then chat.v2"
    assert reports["tether"][order]["verdict"] == OK
    # websockets picks by its own list, whatever the client's order.
    assert reports["websockets"][order]["observed"] == "picked chat, then chat"
    assert reports["websockets"][order]["verdict"] == NOTE
    for probe in ("no offer", "offer only an unknown one"):
        assert reports["tether"][probe]["observed"] == "101, no subprotocol"
        assert reports["websockets"][probe]["observed"] == "400 Bad Request"
        assert reports["websockets"][probe]["verdict"] == NOTE
    assert reports["tether"]["offer foo"]["observed"] == "101, no subprotocol"
    assert reports["websockets"]["offer foo"]["verdict"] == NOTE
    for report in reports.values():
        assert report["offer chat.v2"]["observed"] == "101, subprotocol: chat.v2"
        assert report["offer on two lines: unknown / chat"]["verdict"] == OK


def test_upgrade_token_lists(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    for report in reports.values():
        for probe in (
            "Connection: keep-alive, Upgrade",
            "Upgrade: WebSocket",
            "Connection: keep-alive / Upgrade",
        ):
            assert (report[probe]["observed"], report[probe]["verdict"]) == ("101", OK)
    split = "Upgrade: tether-probe/1 / websocket"
    assert reports["tether"][split]["verdict"] == OK
    # websockets accepts Upgrade only when "websocket" is its one and only value.
    assert reports["websockets"][split]["observed"] == "426 Upgrade Required"
    assert reports["websockets"][split]["verdict"] == VIOLATION


def test_extension_negotiation(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    for report in reports.values():
        assert report["+ server_max_window_bits=10"]["observed"] == (
            "101, extensions: permessage-deflate; server_max_window_bits=10"
        )
        for probe in (
            "+ server_max_window_bits=7 (invalid)",
            "+ tether_unknown=1 (unknown)",
            "+ server_max_window_bits=10 twice",
            "offer x-permessage-deflate",
        ):
            assert report[probe]["observed"] == "101, no extensions", probe
            assert report[probe]["verdict"] == OK
        assert report["invalid offer, then plain"]["verdict"] == OK
        assert report["text, permessage-deflate"]["verdict"] == OK
        assert "permessage-deflate" in report["text, permessage-deflate"]["observed"]


def test_key_and_version_refusals(reports: dict[str, dict[str, dict[str, Any]]]) -> None:
    for report in reports.values():
        for probe in ("no key", "key of 15 bytes", "key not base64", "no version"):
            assert report[probe]["observed"].startswith("400 Bad Request"), probe
            assert report[probe]["verdict"] == OK


# --- a server that gets everything wrong ---------------------------------------------------------


def test_careless_server_violations() -> None:
    with careless_server() as port:
        report = asyncio.run(
            inspect(InspectOptions(f"ws://127.0.0.1:{port}/", subprotocols=["chat"], timeout=2))
        )
    found = {f.probe: f for f in report.findings}
    expected_violations = {
        "version 14": "accepted version 14, which does not exist",
        "no version": "accepted a request without Sec-WebSocket-Version",
        "key of 15 bytes": "accepted an invalid key",
        "offer chat": "answered surprise, which was not offered",
        "no offer": "answered surprise, which was not offered",
        "+ client_max_window_bits": "client_max_window_bits needs a value in a response (7.1.2)",
        "+ server_max_window_bits=7 (invalid)": "server_max_window_bits=7 is not 8-15 (7.1.2)",
        "+ tether_unknown=1 (unknown)": "unknown parameter tether_unknown",
        "+ server_max_window_bits=10 twice": "server_max_window_bits appears twice",
        "offer x-permessage-deflate": "accepted the unregistered draft name",
        "offer on two lines: unknown / pmd": "Sec-WebSocket-Extensions appears more than once",
        "text, permessage-deflate": "invalid Sec-WebSocket-Extensions header",
    }
    for probe, text in expected_violations.items():
        assert found[probe].verdict == VIOLATION, (probe, found[probe])
        assert text in found[probe].detail, (probe, found[probe].detail)
    assert found["version 8"].verdict == NOTE  # draft 8 may be spoken; 14 does not exist
    assert found["version 13: headers of the 101"].verdict == NOTE
    assert found["version 13: headers of the 101"].observed == "101, Sec-WebSocket-Version: 13"
    assert found["version 13 (valid request)"].verdict == OK


def test_draft_extension_answered_with_the_standard_name() -> None:
    # An answer naming an extension the client did not offer (RFC 6455 4.2.2).
    problems = _check_deflate_answer([], [("client_max_window_bits", "10")])
    assert problems == ["client_max_window_bits answered but not offered (7.1.2.2)"]


@pytest.mark.parametrize(
    ("offer", "answer", "problems"),
    [
        ([], [], []),
        ([("server_max_window_bits", "10")], [("server_max_window_bits", "10")], []),
        ([("server_max_window_bits", "10")], [("server_max_window_bits", "9")], []),
        (
            [("server_max_window_bits", "10")],
            [("server_max_window_bits", "12")],
            ["server_max_window_bits=12 is larger than the 10 offered"],
        ),
        (
            [("server_max_window_bits", "10")],
            [],
            ["server_max_window_bits=10 offered but not in the answer"],
        ),
        (
            [("server_no_context_takeover", None)],
            [],
            ["server_no_context_takeover offered but not in the answer (7.1.1.1)"],
        ),
        ([("client_no_context_takeover", None)], [], []),
        ([("client_max_window_bits", None)], [("client_max_window_bits", "15")], []),
        (
            [("client_max_window_bits", "10")],
            [("client_max_window_bits", "11")],
            ["client_max_window_bits=11 is larger than the 10 offered"],
        ),
        (
            [],
            [("server_no_context_takeover", "1")],
            ["server_no_context_takeover must have no value (7.1.1)"],
        ),
        ([], [("server_max_window_bits", "08")], ["server_max_window_bits=08 is not 8-15 (7.1.2)"]),
    ],
)
def test_deflate_answers_are_judged_against_the_offer(
    offer: list[tuple[str, str | None]], answer: list[tuple[str, str | None]], problems: list[str]
) -> None:
    assert _check_deflate_answer(offer, answer) == problems


# --- exit codes and the terminal report ----------------------------------------------------------


def test_inspect_text_report_is_grouped_aligned_and_summarised(
    tether_server: ServeProcess,
) -> None:
    result = tether("inspect", tether_server.url("/chat"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tether inspect {tether_server.url('/chat')}"
    assert "\x1b[" not in result.stdout  # not a terminal: no colours
    headings = [line for line in lines if line and not line.startswith(" ")]
    assert headings[2:8] == [
        "Protocol version",
        "Sec-WebSocket-Key",
        "Upgrade and Connection",
        "Subprotocols",
        "permessage-deflate",
        "Echo round trip",
    ]
    assert re.fullmatch(r"\d+ probes, \d+ ok, 0 violations, 2 notes in \d+\.\d\d s", lines[-1]), (
        lines[-1]
    )
    # Every finding line has its rule column at the same place.
    rows = [line for line in lines if re.match(r"  (ok|note|violation) ", line)]
    columns = {line.index("RFC ") for line in rows}
    assert len(rows) == int(lines[-1].split()[0]) and len(columns) == 1, rows
    # /chat is not an echo server: the first thing back is the join notice, a note, not a fault.
    echo = [line for line in rows if "text, no compression" in line]
    assert echo and echo[0].startswith("  note ") and "another message" in echo[0]
    assert "no echo (not an echo server?)" in result.stdout
    assert "pass --subprotocol NAME" in result.stdout


def test_inspect_exit_codes(tether_server: ServeProcess) -> None:
    result = tether("inspect", f"ws://127.0.0.1:{free_port()}/")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("tether inspect: cannot reach ws://127.0.0.1:")
    # Reachable, but a valid request is refused: nothing else can be judged.
    result = tether("inspect", tether_server.url("/nowhere"))
    assert result.returncode == 1
    assert "404 Not Found" in result.stdout
    assert "No WebSocket endpoint at /nowhere" in result.stdout
    assert "stopped: the server did not accept a valid handshake request" in result.stdout
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"1 probe, 0 ok, 0 violations, 1 note in \d+\.\d\d s", summary)


def test_inspect_over_tls(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    with ServeProcess("--tls-cert", str(cert_file), "--tls-key", str(key_file)) as process:
        url = process.url("/echo")
        assert url.startswith("wss://")
        report = run_json(url, "--insecure", "--subprotocol", "chat")
        summary = report["summary"]
        assert summary["ok"] == summary["probes"] > 25, report["findings"]
        # Without --insecure the self-signed certificate is refused: nothing was reached.
        result = tether("inspect", url)
        assert result.returncode == 2
        assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_each_probe_is_bounded_in_time() -> None:
    with silent_server() as port:
        result = tether("inspect", f"ws://127.0.0.1:{port}/", "--timeout", "0.3", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    (finding,) = report["findings"]
    assert finding["observed"] == "no response within 0.3 s"
    assert finding["verdict"] == VIOLATION
    assert 0.3 <= report["duration"] < 2


def test_summary_wording_and_colours() -> None:
    report = Report("ws://x/")
    report.findings = [
        Finding("version", "a", "101", OK, "RFC 6455 4.2.2"),
        Finding("version", "bb", "400", VIOLATION, "RFC 6455 4.4", "why"),
        Finding("key", "c", "400 \x1b[2J", NOTE, "RFC 6455 4.2.1"),
    ]
    report.duration = 0.414
    assert report.summary() == "3 probes, 1 ok, 1 violation, 1 note in 0.41 s"
    plain = report.render()
    assert "\x1b[" not in plain.replace("\\x1b[", "")
    assert "  violation  bb  RFC 6455 4.4    400" in plain
    assert "             why" in plain
    assert "400 \\x1b[2J" in plain  # text from the server is escaped
    coloured = report.render(color=True)
    assert "\x1b[1;31mviolation\x1b[0m" in coloured
