"""The shared options: validation, websockets' keywords, and every layer's signature."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers.sync_server import running
from helpers.sync_server import uri as sync_uri
from tether import Limits, ServerConnection, connect, serve
from tether import sync as tether_sync
from tether.options import WEBSOCKETS_KEYWORDS, ClientOptions, ServerOptions
from tether.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]


async def handler(ws: ServerConnection) -> None:
    pass


def sync_handler(ws: tether_sync.ServerConnection) -> None:
    pass


# --- websockets' keywords -------------------------------------------------------------------

#: What the message must point to, for each keyword of websockets' serve()/connect().
EXPECTED_HINTS = {
    "max_size": "limits=Limits(max_message_size=",
    "max_queue": "limits=Limits(max_queue=",
    "read_limit": "limits=Limits(max_queue=",
    "write_limit": "limits=Limits(write_high_water=",
    "max_line": "limits=Limits(max_line_length=",
    "max_num_headers": "limits=Limits(max_header_count=",
    "max_body_size": "limits=Limits(max_body_size=",
    "user_agent_header": "user_agent=",
    "extra_headers": "additional_headers=",
    "create_protocol": "no equivalent",
    "create_connection": "no equivalent",
    "klass": "no equivalent",
    "timeout": "close_timeout=",
    "loop": "no equivalent",
    "legacy_recv": "no equivalent",
    "ws_handler": "first positional argument",
    "start_serving": "no equivalent",
}


def test_every_websockets_keyword_has_an_expected_hint() -> None:
    assert set(EXPECTED_HINTS) == set(WEBSOCKETS_KEYWORDS)


@pytest.mark.parametrize("keyword", sorted(EXPECTED_HINTS))
def test_serve_names_tethers_equivalent_of_a_websockets_keyword(keyword: str) -> None:
    with pytest.raises(TypeError) as raised:
        bad: dict[str, Any] = {keyword: 1}
        serve(handler, "127.0.0.1", 0, **bad)
    message = str(raised.value)
    assert f"serve() got the websockets keyword {keyword!r}" in message
    assert EXPECTED_HINTS[keyword] in message


@pytest.mark.parametrize("keyword", sorted(EXPECTED_HINTS))
def test_sync_serve_and_connect_name_tethers_equivalent_of_a_websockets_keyword(
    keyword: str,
) -> None:
    bad: dict[str, Any] = {keyword: 1}
    with pytest.raises(TypeError) as raised:
        tether_sync.serve(sync_handler, "127.0.0.1", 0, **bad)
    assert f"serve() got the websockets keyword {keyword!r}" in str(raised.value)
    assert EXPECTED_HINTS[keyword] in str(raised.value)
    with pytest.raises(TypeError) as raised:
        tether_sync.connect("ws://127.0.0.1:1/", **bad)
    assert f"connect() got the websockets keyword {keyword!r}" in str(raised.value)
    assert EXPECTED_HINTS[keyword] in str(raised.value)


@pytest.mark.parametrize("keyword", sorted(EXPECTED_HINTS))
def test_connect_names_tethers_equivalent_of_a_websockets_keyword(keyword: str) -> None:
    with pytest.raises(TypeError) as raised:
        bad: dict[str, Any] = {keyword: 1}
        connect("ws://127.0.0.1:1/", **bad)
    message = str(raised.value)
    assert f"connect() got the websockets keyword {keyword!r}" in message
    assert EXPECTED_HINTS[keyword] in message


def test_unknown_keywords_fail_at_the_call_and_are_named() -> None:
    with pytest.raises(TypeError, match=r"serve\(\) got an unexpected keyword argument 'colour'"):
        serve(handler, "127.0.0.1", 0, colour="blue")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        connect("ws://h/", colour="blue")  # type: ignore[arg-type]


def test_asyncio_pass_through_options_are_named_parameters() -> None:
    server = inspect.signature(serve.__init__).parameters
    for name in (
        "sock",
        "backlog",
        "reuse_port",
        "reuse_address",
        "family",
        "ssl_handshake_timeout",
    ):
        assert server[name].kind is inspect.Parameter.KEYWORD_ONLY
    client = inspect.signature(connect.__init__).parameters
    for name in ("sock", "family", "local_addr", "ssl_handshake_timeout", "server_hostname"):
        assert client[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_pass_through_options_reach_the_event_loop() -> None:
    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, backlog=5, reuse_address=True) as server:
            assert server.port_number is not None
            async with connect(
                f"ws://127.0.0.1:{server.port_number}/", local_addr=("127.0.0.1", 0)
            ) as ws:
                assert ws.local_address[0] == "127.0.0.1"

    asyncio.run(asyncio.wait_for(main(), 10))


# --- one source of truth --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "options", "owner"),
    [
        (serve.__init__, ServerOptions, serve),
        (connect.__init__, ClientOptions, connect),
        (tether_sync.serve.__init__, ServerOptions, tether_sync.serve),
        (tether_sync.connect, ClientOptions, tether_sync.connect),
    ],
    ids=["serve", "connect", "sync-serve", "sync-connect"],
)
def test_each_option_is_a_keyword_with_the_same_default_and_documented(
    function: Any, options: type[ServerOptions] | type[ClientOptions], owner: Any
) -> None:
    parameters = inspect.signature(function).parameters
    doc = owner.__doc__ or ""
    for field in dataclasses.fields(options):
        parameter = parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, field.name
        assert parameter.default == field.default, field.name
        assert re.search(rf"^\s+{field.name}:", doc, re.MULTILINE), f"{field.name} undocumented"
    # No catch-all forwarded to the event loop: the only **parameter is the refused one.
    var_keyword = [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert [p.name for p in var_keyword] == ["unknown"]


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"subprotocols": "chat"}, TypeError, "subprotocols must be a list of str"),
        ({"subprotocols": [1]}, TypeError, "subprotocols must be a list of str"),
        ({"open_timeout": -1}, ValueError, "open_timeout must be >= 0"),
        ({"ping_interval": "20"}, TypeError, "ping_interval must be a number of seconds"),
        ({"compression": "zstd"}, ValueError, "compression must be one of"),
        ({"compression": 9}, TypeError, "compression must be"),
        ({"limits": {"max_message_size": 1}}, TypeError, "limits must be a tether.Limits"),
        ({"require_subprotocol": "yes"}, TypeError, "require_subprotocol must be True or False"),
        ({"origins": "https://example.com"}, TypeError, "origins must be a list"),
        ({"versions": []}, ValueError, "versions must list at least one"),
        ({"extensions": ["permessage-deflate"]}, TypeError, "extensions must be"),
        ({"ssl_handshake_timeout": 5}, ValueError, "need ssl="),
    ],
)
def test_serve_validates_options_at_the_call(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        serve(handler, "127.0.0.1", 0, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"additional_headers": "X-A: b"}, TypeError, "additional_headers: headers must be"),
        ({"additional_headers": {"X-A": "b\r\nX-B: c"}}, ValueError, "invalid value for header"),
        ({"additional_headers": {"bad name": "x"}}, ValueError, "invalid header name"),
        (
            {"additional_headers": [("sec-websocket-protocol", "x")]},
            ValueError,
            "additional_headers: sec-websocket-protocol is set by the handshake",
        ),
        ({"max_redirects": -1}, ValueError, "max_redirects must be >= 0"),
        ({"close_timeout": -0.5}, ValueError, "close_timeout must be >= 0"),
        ({"user_agent": b"x"}, TypeError, "user_agent must be a str or None"),
    ],
)
def test_connect_validates_options_at_the_call(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        connect("ws://h/", **kwargs)


def test_options_are_frozen_and_normalised() -> None:
    options = ServerOptions(subprotocols=["a", "b"], limits=Limits(max_message_size=10))
    assert options.subprotocols == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.subprotocols = ()  # type: ignore[misc]
    client = ClientOptions(additional_headers={"X-A": "1"})
    assert client.additional_headers == (("X-A", "1"),)
    protocol = client.make_protocol(__import__("tether.sansio.uri").sansio.uri.parse_uri("ws://h/"))
    assert protocol.connect().headers["X-A"] == "1"


# --- select_subprotocol ----------------------------------------------------------------------


def test_old_select_subprotocol_shape_is_refused_at_serve_time() -> None:
    def old(offered: Sequence[str], supported: Sequence[str]) -> str | None:
        return None

    with pytest.raises(
        TypeError, match=r"old \(offered, supported\) shape.*\(connection, subprotocols\)"
    ):
        serve(handler, "127.0.0.1", 0, select_subprotocol=old)  # type: ignore[arg-type]

    def one(connection: ServerConnection) -> str | None:
        return None

    with pytest.raises(TypeError, match="two positional arguments"):
        serve(handler, "127.0.0.1", 0, select_subprotocol=one)  # type: ignore[arg-type]


def test_select_subprotocol_gets_the_connection_and_the_offer() -> None:
    seen: list[Any] = []

    def select(
        connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        seen.append(
            (type(connection).__name__, list(subprotocols), connection.protocol.subprotocols)
        )
        return subprotocols[-1]

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, subprotocols=["a"], select_subprotocol=select
        ) as server:
            uri = f"ws://127.0.0.1:{server.port_number}/"
            async with connect(uri, subprotocols=["x", "y"]) as ws:
                assert ws.subprotocol == "y"

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == [("ServerConnection", ["x", "y"], ["a"])]


def test_sync_select_subprotocol_gets_the_connection_and_the_offer() -> None:
    seen: list[Any] = []

    def select(
        connection: tether_sync.ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        seen.append(
            (type(connection).__name__, list(subprotocols), connection.protocol.subprotocols)
        )
        return subprotocols[-1]

    with running(sync_handler, subprotocols=["a"], select_subprotocol=select) as server:
        with tether_sync.connect(sync_uri(server), subprotocols=["x", "y"]) as ws:
            assert ws.subprotocol == "y"
    assert seen == [("ServerConnection", ["x", "y"], ["a"])]

    def old(offered: Sequence[str], supported: Sequence[str]) -> str | None:
        return None

    with pytest.raises(TypeError, match=r"old \(offered, supported\) shape"):
        tether_sync.serve(sync_handler, "127.0.0.1", 0, select_subprotocol=old)  # type: ignore[arg-type]


# --- mypy sees the signatures ----------------------------------------------------------------

MISUSE = ROOT / "tests" / "typing" / "misuse.py"


def test_mypy_strict_rejects_misuse_of_the_signatures() -> None:
    """tests/typing/misuse.py misuses serve(), connect() and broadcast(); each line marked
    ``# error: <text>`` must be reported by mypy --strict at that line, and nothing else."""
    expected: dict[int, str] = {}
    for number, line in enumerate(MISUSE.read_text().splitlines(), 1):
        if "# error: " in line:
            expected[number] = line.split("# error: ", 1)[1].strip()
    assert len(expected) >= 8
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=",
            str(MISUSE),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    reported: dict[int, list[str]] = {}
    for line in result.stdout.splitlines():
        match = re.match(r".*misuse\.py:(\d+): error: (.*)", line)
        if match:
            reported.setdefault(int(match[1]), []).append(match[2])
    assert set(reported) == set(expected), result.stdout
    for number, text in expected.items():
        assert any(text in message for message in reported[number]), (number, reported[number])


def test_legacy_process_request_shape_is_refused_at_serve_time() -> None:
    async def legacy(path: str, request_headers: Any) -> Any:
        return None

    with pytest.raises(TypeError, match=r"legacy \(path, request_headers\) shape.*request\.path"):
        serve(handler, "127.0.0.1", 0, process_request=legacy)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="process_request must be callable"):
        serve(handler, "127.0.0.1", 0, process_request="/healthz")  # type: ignore[arg-type]
