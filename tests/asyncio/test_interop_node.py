"""tether against Node's ``ws`` package on 127.0.0.1, both directions.

``ws`` (8.x) is what most JavaScript servers and tools use. We drive it through the shared
harness in ``tests/helpers/node.py`` (an echo server, and a client that sends short messages
and closes with 1000), plus ``interop_node_client.js`` beside this file for what that client
cannot do: 1 MiB messages (the harness passes messages on the command line, limited to 128 KiB
per argument), fragmented messages, and closing with a chosen code.

These tests are skipped, with the reason shown, only when ``node`` is not installed; a failing
``npm install ws`` is an error. The harness is blocking, so asyncio code calls it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from helpers.aio import run as aio_run
from helpers.node import NodeWsServer, run_node_client
from tether import (
    ConnectionClosed,
    DeflateSettings,
    InvalidStatus,
    ServerConnection,
    connect,
    serve,
)

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]

PRESETS = ["deflate", "balanced", "small", "fast", "max"]
MiB = 2**20
CLIENT_SCRIPT = Path(__file__).with_name("interop_node_client.js")


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 60)


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def json_text(size: int) -> str:
    """``size`` bytes of repetitive JSON-like text, which deflate shrinks a lot."""
    row = '{"user": "alice", "room": "general", "text": "hello, world", "n": %06d}\n'
    return "".join(row % n for n in range(size // 60 + 1))[:size]


class Agreed(NamedTuple):
    """permessage-deflate as agreed, in the RFC's role-based names."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int


def tether_agreed(extension: Any, *, server: bool) -> Agreed:
    local = (extension.local_no_context_takeover, extension.local_max_window_bits)
    remote = (extension.remote_no_context_takeover, extension.remote_max_window_bits)
    server_side, client_side = (local, remote) if server else (remote, local)
    return Agreed(server_side[0], client_side[0], server_side[1], client_side[1])


def parse_extensions(header: str | None) -> list[tuple[str, dict[str, str | None]]]:
    """A minimal parser for the extension headers ``ws`` writes (tokens, no quotes)."""
    result: list[tuple[str, dict[str, str | None]]] = []
    for item in (header or "").split(","):
        if not item.strip():
            continue
        name, *params = (part.strip() for part in item.split(";"))
        parsed: dict[str, str | None] = {}
        for param in params:
            key, _, value = param.partition("=")
            parsed[key.strip()] = value.strip() or None
        result.append((name, parsed))
    return result


def deflate_params(header: str | None) -> dict[str, str | None]:
    [(name, params)] = parse_extensions(header)
    assert name == "permessage-deflate"
    return params


def sha256(message: str | bytes) -> str:
    return hashlib.sha256(message.encode() if isinstance(message, str) else message).hexdigest()


# --- tether as the server ---------------------------------------------------------------------


@dataclass
class Seen:
    connection: ServerConnection | None = None
    messages: list[str | bytes] | None = None
    fragments: list[list[str | bytes]] | None = None
    close_code: int | None = None
    close_reason: str | None = None


def tether_echo(
    seen: Seen, *, close_with: tuple[int, str] | None = None, streaming: bool = False
) -> Callable[[ServerConnection], Awaitable[None]]:
    """Echo every message (recording it, and its fragments when ``streaming``) until the
    peer closes; or, with ``close_with``, echo one message and close with that code."""

    async def handler(ws: ServerConnection) -> None:
        seen.connection = ws
        seen.messages = []
        seen.fragments = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                if streaming:
                    pieces = [piece async for piece in ws.recv_streaming()]
                    seen.fragments.append(pieces)
                    if isinstance(pieces[0], str):
                        message: str | bytes = "".join(pieces)  # type: ignore[arg-type]
                    else:
                        message = b"".join(pieces)  # type: ignore[arg-type]
                else:
                    message = await ws.recv()
                seen.messages.append(message)
                await ws.send(message)
                if close_with is not None:
                    await ws.close(*close_with)
                    break
        await ws.wait_closed()
        seen.close_code = ws.close_code
        seen.close_reason = ws.close_reason

    return handler


def url_of(server: Any, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port_number}{path}"


@dataclass
class ScriptResult:
    """What ``interop_node_client.js`` observed."""

    status: int | None
    protocol: str | None
    extensions: str | None
    sent: list[dict[str, Any]]
    received: list[dict[str, Any]]
    close_code: int | None
    close_reason: str | None
    error: str | None


def run_script_client(
    node_ws: Path,
    url: str,
    messages: list[dict[str, Any]],
    *,
    expect: int | None = None,
    close: tuple[int, str] | None = (1000, ""),
    protocols: list[str] | None = None,
    per_message_deflate: bool | dict[str, Any] = True,
    timeout: float = 20.0,
) -> ScriptResult:
    config = {
        "ws_module": str(node_ws / "node_modules" / "ws"),
        "url": url,
        "protocols": protocols or [],
        "perMessageDeflate": per_message_deflate,
        "messages": messages,
        "expect": len(messages) if expect is None else expect,
        "close": None if close is None else list(close),
        "timeout_ms": int(timeout * 1000),
    }
    # The configuration goes through stdin: a command-line argument is limited to 128 KiB.
    done = subprocess.run(
        ["node", str(CLIENT_SCRIPT)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"node client failed: {done.stderr[-2000:]}"
    raw = json.loads(lines[-1])
    closed = raw["close"] or {}
    return ScriptResult(
        status=raw["status"],
        protocol=raw["protocol"],
        extensions=raw["extensions"],
        sent=raw["sent"],
        received=raw["received"],
        close_code=closed.get("code"),
        close_reason=closed.get("reason"),
        error=raw["error"],
    )


# --- tether client -> ws server ---------------------------------------------------------------


def test_tether_client_echo_with_node_server(node_ws: Path) -> None:
    messages: list[str | bytes] = [
        "héllo ☃",
        b"\x00\x01\xfe\xff",
        "",
        json_text(5000),
        random_bytes(MiB),
        json_text(MiB),
    ]

    async def main(url: str) -> None:
        async with connect(url) as ws:
            for message in messages:
                await ws.send(message)
                assert await ws.recv() == message
            # ws reassembles a fragmented message and echoes it whole.
            await ws.send(["frag-1 ", "é-2 ", "", "last"])
            assert await ws.recv() == "frag-1 é-2 last"
            await ws.send(iter([b"\x00" * 10, random_bytes(70000, seed=3), b"end"]))
            assert await ws.recv() == b"\x00" * 10 + random_bytes(70000, seed=3) + b"end"

    with NodeWsServer() as server:
        run(main(server.url("/echo")))
        seen = server.wait_event("connection")
        assert seen["path"] == "/echo"
        closed = server.wait_event("close")
        assert closed["code"] == 1000


def test_tether_client_subprotocol_with_node_server(node_ws: Path) -> None:
    """The harness's ws server picks by its own preference ("chat"); both sides agree."""

    async def main(url: str) -> None:
        async with connect(url, subprotocols=["v2.chat", "chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("x")
            assert await ws.recv() == "x"

    with NodeWsServer(protocols=["chat", "v2.chat"]) as server:
        run(main(server.url()))
        seen = server.wait_event("connection")
        assert seen["protocol"] == "chat"
        assert seen["request_protocols"] == "v2.chat, chat"


#: What tether's client offers with each preset, as ws parses it.
TETHER_OFFER: dict[str, dict[str, str | None]] = {
    "deflate": {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    "balanced": {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    "fast": {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    "small": {
        "server_no_context_takeover": None,
        "client_no_context_takeover": None,
        "server_max_window_bits": "10",
        "client_max_window_bits": "10",
    },
    "max": {"client_max_window_bits": None},
}

#: ws's server with default options accepts the offer as it is, and drops a
#: client_max_window_bits that has no value (so the client keeps 15 bits).
NODE_DEFAULT_SERVER_AGREES: dict[str, Agreed] = {
    "deflate": Agreed(False, False, 12, 12),
    "balanced": Agreed(False, False, 12, 12),
    "fast": Agreed(False, False, 12, 12),
    "small": Agreed(True, True, 10, 10),
    "max": Agreed(False, False, 15, 15),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_tether_client_deflate_presets_with_node_server(node_ws: Path, preset: str) -> None:
    messages: list[str | bytes] = [json_text(3000), json_text(3000), "", b"", random_bytes(50000)]
    found: dict[str, Any] = {}

    async def main(url: str) -> None:
        async with connect(url, compression=preset) as ws:
            found["agreed"] = tether_agreed(ws.extensions[0], server=False)
            found["answer"] = ws.handshake.accepted_extensions
            for message in messages:
                await ws.send(message)
                assert await ws.recv() == message

    with NodeWsServer() as server:
        run(main(server.url()))
        seen = server.wait_event("connection")
    assert deflate_params(seen["request_extensions"]) == TETHER_OFFER[preset]
    expected = NODE_DEFAULT_SERVER_AGREES[preset]
    assert found["agreed"] == expected
    answer = deflate_params(seen["extensions"])
    assert answer == {name: value for name, value in found["answer"][0][1]}
    # What ws answered says the same as what tether agreed to.
    assert ("server_no_context_takeover" in answer) == expected.server_no_context_takeover
    assert ("client_no_context_takeover" in answer) == expected.client_no_context_takeover
    assert int(answer.get("server_max_window_bits") or 15) == expected.server_max_window_bits


@pytest.mark.parametrize(
    ("options", "answer", "expected"),
    [
        (
            {"serverMaxWindowBits": 10, "clientMaxWindowBits": 10},
            {"server_max_window_bits": "10", "client_max_window_bits": "10"},
            Agreed(False, False, 10, 10),
        ),
        (
            {
                "serverNoContextTakeover": True,
                "clientNoContextTakeover": True,
                "serverMaxWindowBits": 9,
                "clientMaxWindowBits": 9,
            },
            {
                "server_no_context_takeover": None,
                "client_no_context_takeover": None,
                "server_max_window_bits": "9",
                "client_max_window_bits": "9",
            },
            Agreed(True, True, 9, 9),
        ),
    ],
    ids=["10-10", "nct-9-9"],
)
def test_tether_client_with_node_server_deflate_options(
    node_ws: Path, options: dict[str, Any], answer: dict[str, str | None], expected: Agreed
) -> None:
    found: dict[str, Any] = {}

    async def main(url: str) -> None:
        async with connect(url) as ws:
            found["agreed"] = tether_agreed(ws.extensions[0], server=False)
            for size in (20000, 30000, 40000):
                await ws.send(json_text(size))
                assert await ws.recv() == json_text(size)

    with NodeWsServer(per_message_deflate=options) as server:
        run(main(server.url()))
        seen = server.wait_event("connection")
    assert deflate_params(seen["extensions"]) == answer
    assert found["agreed"] == expected


def test_node_server_refuses_tether_default_offer_above_its_window(node_ws: Path) -> None:
    """A ws quirk worth knowing: configured with serverMaxWindowBits above what the client
    requests (tether asks for 12), ws declines the offer by failing the whole handshake with
    400 rather than answering without the extension. compression="max" asks for nothing and
    gets ws's 15 bits."""

    async def main(url: str) -> None:
        with pytest.raises(InvalidStatus) as info:
            await connect(url)
        assert info.value.response.status == 400
        async with connect(url, compression="max") as ws:
            assert tether_agreed(ws.extensions[0], server=False) == Agreed(False, False, 15, 15)
            await ws.send(json_text(40000))
            assert await ws.recv() == json_text(40000)

    with NodeWsServer(per_message_deflate={"serverMaxWindowBits": 15}) as server:
        run(main(server.url()))


def test_tether_client_asks_node_server_for_8_bit_window(node_ws: Path) -> None:
    """server_max_window_bits=8 is legal to ask for, and ws grants it. Node's zlib, like any
    zlib since 1.2.9, cannot compress with an 8-bit raw window and silently uses 9 bits;
    tether must still inflate what it receives (it inflates with at least 9 bits)."""
    found: dict[str, Any] = {}

    async def main(url: str) -> None:
        settings = DeflateSettings(server_max_window_bits=8)
        async with connect(url, compression=settings) as ws:
            found["agreed"] = tether_agreed(ws.extensions[0], server=False)
            for size in (20000, 30000, 40000):
                await ws.send(json_text(size))
                assert await ws.recv() == json_text(size)

    with NodeWsServer() as server:
        run(main(server.url()))
        seen = server.wait_event("connection")
    assert deflate_params(seen["extensions"])["server_max_window_bits"] == "8"
    assert found["agreed"] == Agreed(False, False, 8, 12)


def test_tether_client_without_compression_with_node_server(node_ws: Path) -> None:
    async def main(url: str) -> None:
        async with connect(url, compression=None) as ws:
            assert ws.extensions == []
            await ws.send(json_text(5000))
            assert await ws.recv() == json_text(5000)
        async with connect(url) as ws:  # ws without deflate declines tether's offer
            pass

    with NodeWsServer() as server:
        run(main(server.url()))
        assert server.wait_event("connection")["request_extensions"] is None
    with NodeWsServer(per_message_deflate=False) as server:
        run(main(server.url()))
        seen = server.wait_event("connection")
        assert seen["request_extensions"] is None
        seen = server.wait_event("connection")
        assert seen["request_extensions"] is not None
        assert seen["extensions"] == ""


def test_tether_client_ping_node_server(node_ws: Path) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            latency = await (await ws.ping(b"from tether"))
            assert 0 <= latency < 5
            await ws.send("still open")
            assert await ws.recv() == "still open"

    with NodeWsServer() as server:
        run(main(server.url()))


def test_tether_client_closes_node_server_with_code_and_reason(node_ws: Path) -> None:
    found: dict[str, Any] = {}

    async def main(url: str) -> None:
        ws = await connect(url)
        await ws.send("before close")
        assert await ws.recv() == "before close"
        await ws.close(4000, "bye ☃")
        found["close"] = (ws.close_code, ws.close_reason)

    with NodeWsServer() as server:
        run(main(server.url()))
        closed = server.wait_event("close")
    assert (closed["code"], closed["reason"]) == (4000, "bye ☃")
    # ws echoes the code and reason in its closing frame.
    assert found["close"] == (4000, "bye ☃")


# --- ws client -> tether server ---------------------------------------------------------------


def test_node_client_echo_with_tether_server(node_ws: Path) -> None:
    seen = Seen()
    messages: list[str | bytes] = ["héllo ☃", b"\x00\x01\xfe\xff", "", json_text(20000)]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(run_node_client, url_of(server, "/echo"), messages)
            assert result.error is None
            assert result.status == 101
            assert result.received == messages
            # tether answers a close frame with the code only (sansio/protocol.py).
            assert (result.close_code, result.close_reason) == (1000, "")
        assert seen.connection is not None and seen.connection.request is not None
        assert seen.connection.request.path == "/echo"
        assert seen.messages == messages
        assert (seen.close_code, seen.close_reason) == (1000, "done")

    run(main())


def test_node_client_large_messages_with_tether_server(node_ws: Path) -> None:
    """1 MiB (tether's default message limit) of random binary and text, and of JSON."""
    seen = Seen()
    big_json = json_text(MiB)

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client,
                node_ws,
                url_of(server),
                [{"random_binary": MiB}, {"random_text": MiB}, {"text": big_json}],
            )
        assert result.error is None
        assert [(m["type"], m["length"]) for m in result.sent] == [
            ("binary", MiB),
            ("text", MiB),
            ("text", MiB),
        ]
        assert [m["sha256"] for m in result.received] == [m["sha256"] for m in result.sent]
        assert seen.messages is not None
        assert [sha256(m) for m in seen.messages] == [m["sha256"] for m in result.sent]
        assert seen.messages[2] == big_json

    run(main())


def test_tether_server_sends_large_messages_to_node_client(node_ws: Path) -> None:
    big_binary = random_bytes(MiB, seed=7)
    big_text = json_text(MiB)

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(big_binary)
        await ws.send(big_text)
        await ws.send([big_text[:1000], big_text[1000:]])  # fragmented
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client, node_ws, url_of(server), [{"text": "go"}], expect=3
            )
        assert result.error is None
        assert [(m["type"], m["length"], m["sha256"]) for m in result.received] == [
            ("binary", MiB, sha256(big_binary)),
            ("text", MiB, sha256(big_text)),
            ("text", MiB, sha256(big_text)),
        ]

    run(main())


def test_node_client_fragments_with_tether_server(node_ws: Path) -> None:
    seen = Seen()
    text = ["frag-1 ", "é-2 ", "", "last"]
    binary = [b"\x00" * 10, random_bytes(70000, seed=5), b"end"]

    async def main() -> None:
        async with serve(tether_echo(seen, streaming=True), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client,
                node_ws,
                url_of(server),
                [
                    {"fragments": [{"text": piece} for piece in text]},
                    {"fragments": [{"binary": piece.hex()} for piece in binary]},
                ],
            )
        assert result.error is None
        assert [m["sha256"] for m in result.received] == [
            sha256("".join(text)),
            sha256(b"".join(binary)),
        ]
        assert seen.fragments == [text, binary]

    run(main())


def test_node_client_splits_a_utf8_character_across_frames(node_ws: Path) -> None:
    """RFC 6455 5.6: only the whole text message must be valid UTF-8; a character may span
    two frames. tether accepts it, and streams valid text on either side of the split."""
    seen = Seen()
    snowman = "☃".encode()  # e2 98 83

    async def main() -> None:
        async with serve(tether_echo(seen, streaming=True), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client,
                node_ws,
                url_of(server),
                [
                    {
                        "fragments": [
                            {"text_hex": (b"h" + snowman[:1]).hex()},
                            {"text_hex": snowman[1:2].hex()},
                            {"text_hex": (snowman[2:] + b"!").hex()},
                        ]
                    }
                ],
            )
        assert result.error is None
        assert result.received[0]["data"] == "h☃!"
        assert seen.messages == ["h☃!"]
        assert seen.fragments is not None
        assert "".join(seen.fragments[0]) == "h☃!"  # type: ignore[arg-type]

    run(main())


def test_node_client_subprotocol_with_tether_server(node_ws: Path) -> None:
    """tether's server takes the first of the *client's* subprotocols that it supports."""
    seen = Seen()

    async def main() -> None:
        async with serve(
            tether_echo(seen), "127.0.0.1", 0, subprotocols=["chat", "v2.chat"]
        ) as server:
            result = await asyncio.to_thread(
                run_node_client, url_of(server), ["x"], protocols=["v2.chat", "chat"]
            )
        assert result.error is None
        assert result.protocol == "v2.chat"
        assert result.received == ["x"]
        assert seen.connection is not None
        assert seen.connection.handshake.offered_subprotocols == ["v2.chat", "chat"]
        assert seen.connection.subprotocol == "v2.chat"

    run(main())


#: How tether's server answers ws's default offer ``permessage-deflate; client_max_window_bits``
#: with each preset: the agreement, and the answer's parameters.
TETHER_ANSWER_TO_BARE_OFFER: dict[str, tuple[Agreed, dict[str, str | None]]] = {
    "deflate": (
        Agreed(False, False, 12, 12),
        {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    ),
    "balanced": (
        Agreed(False, False, 12, 12),
        {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    ),
    "fast": (
        Agreed(False, False, 12, 12),
        {"server_max_window_bits": "12", "client_max_window_bits": "12"},
    ),
    "small": (
        Agreed(True, True, 10, 10),
        {
            "server_no_context_takeover": None,
            "client_no_context_takeover": None,
            "server_max_window_bits": "10",
            "client_max_window_bits": "10",
        },
    ),
    # No limits: the bare name, 15 bits both ways.
    "max": (Agreed(False, False, 15, 15), {}),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_node_client_with_tether_server_deflate_presets(node_ws: Path, preset: str) -> None:
    seen = Seen()
    expected, answer = TETHER_ANSWER_TO_BARE_OFFER[preset]
    messages: list[str | bytes] = [json_text(3000), json_text(3000), "", b"", random_bytes(50000)]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0, compression=preset) as server:
            result = await asyncio.to_thread(run_node_client, url_of(server), messages)
        assert result.error is None
        assert result.received == messages
        assert deflate_params(result.extensions) == answer
        assert seen.connection is not None
        assert seen.connection.handshake.offered_extensions == [
            ("permessage-deflate", [("client_max_window_bits", None)])
        ]
        assert tether_agreed(seen.connection.extensions[0], server=True) == expected
        assert seen.messages == messages

    run(main())


@pytest.mark.parametrize(
    ("options", "offer", "expected"),
    [
        (
            {"serverMaxWindowBits": 10, "clientMaxWindowBits": 10},
            {"server_max_window_bits": "10", "client_max_window_bits": "10"},
            Agreed(False, False, 10, 10),
        ),
        # Above tether's 12-bit limits: lowered (ws accepts a smaller server window, and a
        # client window no larger than it offered).
        (
            {"serverMaxWindowBits": 15, "clientMaxWindowBits": 15},
            {"server_max_window_bits": "15", "client_max_window_bits": "15"},
            Agreed(False, False, 12, 12),
        ),
        (
            {"serverNoContextTakeover": True, "clientNoContextTakeover": True},
            {
                "server_no_context_takeover": None,
                "client_no_context_takeover": None,
                "client_max_window_bits": None,
            },
            Agreed(True, True, 12, 12),
        ),
    ],
    ids=["10-10", "15-15", "nct"],
)
def test_node_client_deflate_options_with_tether_server(
    node_ws: Path, options: dict[str, Any], offer: dict[str, str | None], expected: Agreed
) -> None:
    seen = Seen()
    messages: list[str | bytes] = [json_text(20000), json_text(30000), json_text(40000)]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_node_client, url_of(server), messages, per_message_deflate=options
            )
        assert result.error is None
        assert result.received == messages
        assert seen.connection is not None
        [(name, params)] = seen.connection.handshake.offered_extensions
        assert (name, dict(params)) == ("permessage-deflate", offer)
        assert tether_agreed(seen.connection.extensions[0], server=True) == expected
        answer = deflate_params(result.extensions)
        assert answer.get("server_max_window_bits") == str(expected.server_max_window_bits)
        assert answer.get("client_max_window_bits") == str(expected.client_max_window_bits)

    run(main())


def test_node_client_without_compression_with_tether_server(node_ws: Path) -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_node_client, url_of(server), [json_text(5000)], per_message_deflate=False
            )
        assert result.error is None
        assert result.extensions is None
        assert seen.connection is not None
        assert seen.connection.handshake.offered_extensions == []
        assert seen.connection.extensions == []

    run(main())


def test_tether_server_closes_node_client_with_code_and_reason(node_ws: Path) -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen, close_with=(4000, "bye ☃")), "127.0.0.1", 0) as server:
            # expect=2: the client waits for a second message that never comes, so the
            # server's close arrives first.
            result = await asyncio.to_thread(run_node_client, url_of(server), ["last"], expect=2)
        assert result.received == ["last"]
        assert (result.close_code, result.close_reason) == (4000, "bye ☃")
        assert (seen.close_code, seen.close_reason) == (4000, "bye ☃")  # ws echoed it

    run(main())


def test_node_client_closes_tether_server_with_code_and_reason(node_ws: Path) -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client, node_ws, url_of(server), [{"text": "x"}], close=(4001, "ciao")
            )
        assert result.error is None
        assert (seen.close_code, seen.close_reason) == (4001, "ciao")
        # tether echoes the code, without the reason, in its closing frame.
        assert (result.close_code, result.close_reason) == (4001, "")

    run(main())


def test_tether_server_refuses_node_client_origin(node_ws: Path) -> None:
    """ws's client sends no Origin header; a server that lists allowed origins (and not
    ``None``) refuses it with 403 and says why in the body."""

    async def main() -> None:
        async with serve(
            tether_echo(Seen()), "127.0.0.1", 0, origins=["https://ok.example"]
        ) as server:
            result = await asyncio.to_thread(run_node_client, url_of(server), ["x"])
        assert result.status == 403
        assert result.error == "unexpected response 403"
        assert result.body
        assert result.received == []

    run(main())


def test_node_client_compression_on_the_wire_with_tether_server(node_ws: Path) -> None:
    """1 MiB of JSON crosses the wire in well under 100 KiB both ways."""

    async def main() -> None:
        async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
            counts = {"up": 0, "down": 0}

            async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", server.port_number
                )

                async def pump(
                    source: asyncio.StreamReader, sink: asyncio.StreamWriter, key: str
                ) -> None:
                    with contextlib.suppress(ConnectionError):
                        while data := await source.read(65536):
                            counts[key] += len(data)
                            sink.write(data)
                            await sink.drain()
                    sink.close()

                await asyncio.gather(pump(reader, up_writer, "up"), pump(up_reader, writer, "down"))

            proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
            async with proxy:
                port = proxy.sockets[0].getsockname()[1]
                result = await asyncio.to_thread(
                    run_script_client,
                    node_ws,
                    f"ws://127.0.0.1:{port}/",
                    [{"text": json_text(MiB)}],
                )
        assert result.error is None
        assert result.received[0]["sha256"] == sha256(json_text(MiB))
        assert 0 < counts["up"] < MiB // 10
        assert 0 < counts["down"] < MiB // 10

    run(main())


def test_tether_keepalive_pings_are_answered_by_node(node_ws: Path) -> None:
    """Both roles: tether's keepalive pings get ws's pongs (latency measured)."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        while ws.latency == 0:
            await asyncio.sleep(0.01)
        await ws.send("pinged")
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()

    async def server_side() -> None:
        async with serve(handler, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=5) as server:
            result = await asyncio.to_thread(
                run_script_client, node_ws, url_of(server), [{"text": "go"}], expect=1
            )
        assert result.error is None
        assert result.received[0]["data"] == "pinged"

    async def client_side(url: str) -> None:
        async with connect(url, ping_interval=0.05, ping_timeout=5) as ws:
            while ws.latency == 0:
                await asyncio.sleep(0.01)
            assert 0 < ws.latency < 5
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(server_side())
    with NodeWsServer() as server:
        run(client_side(server.url()))


def test_tether_fails_node_client_invalid_utf8_with_1007(node_ws: Path) -> None:
    """ws sends a text frame's bytes unchecked. tether fails the connection with 1007 on the
    first fragment that cannot be valid UTF-8, without waiting for the message to end."""

    async def main() -> None:
        async with serve(tether_echo(Seen(), streaming=True), "127.0.0.1", 0) as server:
            # A complete message ending in a truncated character; the first fragment of a
            # message that never ends (so only fail-fast can produce the 1007).
            for fragments, unfinished in ((["68c3"], False), (["68ff"], True)):
                result = await asyncio.to_thread(
                    run_script_client,
                    node_ws,
                    url_of(server),
                    [
                        {
                            "fragments": [{"text_hex": piece} for piece in fragments],
                            "unfinished": unfinished,
                        }
                    ],
                    timeout=10,
                )
                assert result.received == []
                assert result.close_code == 1007

    run(main())


def test_tether_closes_node_client_oversized_message_with_1009(node_ws: Path) -> None:
    async def main() -> None:
        async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client, node_ws, url_of(server), [{"random_binary": MiB + 1}]
            )
        assert result.received == []
        assert result.close_code == 1009

    run(main())


def test_node_client_closes_without_status_code(node_ws: Path) -> None:
    """A close frame with no payload means 1005 (RFC 6455 7.1.5); tether answers with an
    empty close frame too, which ws also reports as 1005."""
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            result = await asyncio.to_thread(
                run_script_client, node_ws, url_of(server), [{"text": "x"}], close=None
            )
        assert result.error is None
        assert (seen.close_code, seen.close_reason) == (1005, "")
        assert (result.close_code, result.close_reason) == (1005, "")

    run(main())
