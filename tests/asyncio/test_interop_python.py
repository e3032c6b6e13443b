"""tether against Python peers on 127.0.0.1: ``websockets`` and ``aiohttp``, both directions.

For each peer and each direction (tether client -> peer server, peer client -> tether server)
we check what a user of either side relies on: text and binary echo up to 1 MiB, fragmented
messages, subprotocol negotiation, permessage-deflate with tether's presets and with the peer's
own options (the agreed parameters are read on both sides, not inferred), compression really
happening on the wire, ping/pong, close codes and reasons in both directions, and a refused
handshake.

Expected permessage-deflate results are written out per peer, because each peer answers an
offer by its own rules (RFC 7692 section 7.1 leaves room): ``websockets`` imposes its 12-bit
defaults, ``aiohttp`` echoes only ``server_max_window_bits`` and ``server_no_context_takeover``,
tether lowers what was asked to its own limits. The tables below say why each value is expected.

Determinism: every server listens on 127.0.0.1 port 0, payloads come from seeded generators,
every test is bounded by ``asyncio.timeout`` and waits on events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus as WsInvalidStatus
from websockets.exceptions import NegotiationError as WsNegotiationError
from websockets.extensions.base import ClientExtensionFactory as WsClientExtensionFactory
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory as WsClientDeflate,
)
from websockets.extensions.permessage_deflate import (
    ServerPerMessageDeflateFactory as WsServerDeflate,
)
from websockets.typing import ExtensionName, Subprotocol

from helpers.aio import run as aio_run
from tether import (
    ConnectionClosed,
    ConnectionClosedError,
    DeflateSettings,
    Headers,
    InvalidStatus,
    Limits,
    Request,
    Response,
    ServerConnection,
    broadcast,
    connect,
    serve,
)
from tether.extensions.permessage_deflate import PerMessageDeflate

pytestmark = pytest.mark.timeout(60)

PRESETS = ["deflate", "balanced", "small", "fast", "max"]
MiB = 2**20


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 30)


# --- payloads ---------------------------------------------------------------------------------


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


_ALPHABET = bytes.maketrans(
    bytes(range(256)),
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/" * 4,
)


def random_text(size: int, seed: int = 1) -> str:
    """``size`` characters of ASCII (so as many bytes) that deflate barely shrinks."""
    return random_bytes(size, seed).translate(_ALPHABET).decode()


def json_text(size: int) -> str:
    """``size`` bytes of repetitive JSON-like text, which deflate shrinks a lot."""
    row = '{"user": "alice", "room": "general", "text": "hello, world", "n": %06d}\n'
    rows, total, n = [], 0, 0
    while total < size:
        line = row % n
        rows.append(line)
        total += len(line)
        n += 1
    return "".join(rows)[:size]


#: Sent both ways by the echo tests: small, non-ASCII, empty, and 1 MiB (the default message
#: size limit of tether and websockets, so exactly at the limit) of incompressible data.
ECHO_MESSAGES: list[str | bytes] = [
    "héllo ☃",
    b"\x00\x01\xfe\xff",
    "",
    b"",
    json_text(4000),
    random_text(MiB),
    random_bytes(MiB),
]

#: Sent both ways with each compression preset. Context takeover shows on the repeated
#: message; "max" compresses even the empty ones (RFC 7692 7.2.3.6: a single 0x00 byte).
PRESET_MESSAGES: list[str | bytes] = [
    json_text(3000),
    json_text(3000),
    "short",
    "",
    b"",
    random_bytes(50000),
    json_text(MiB),
]

#: A fragmented message: tether sends each item as one frame.
TEXT_FRAGMENTS = ["frag-1 ", "é-2 ", "", "last"]
BINARY_FRAGMENTS = [b"\x00" * 10, random_bytes(70000, seed=5), b"end"]


# --- permessage-deflate bookkeeping -----------------------------------------------------------


class Agreed(NamedTuple):
    """permessage-deflate as agreed, in the RFC's role-based names."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int


def agreed(extension: Any, *, server: bool) -> Agreed:
    """Read the agreement from a tether or websockets ``PerMessageDeflate`` (they share the
    local/remote attribute names) on the server side or the client side."""
    if server:
        return Agreed(
            extension.local_no_context_takeover,
            extension.remote_no_context_takeover,
            extension.local_max_window_bits,
            extension.remote_max_window_bits,
        )
    return Agreed(
        extension.remote_no_context_takeover,
        extension.local_no_context_takeover,
        extension.remote_max_window_bits,
        extension.local_max_window_bits,
    )


def parse_extensions(header: str | None) -> list[tuple[str, dict[str, str | None]]]:
    """A minimal parser for the extension headers the peers write (tokens, no quotes)."""
    result: list[tuple[str, dict[str, str | None]]] = []
    if not header:
        return result
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        parsed: dict[str, str | None] = {}
        for param in params:
            key, _, value = param.partition("=")
            parsed[key.strip()] = value.strip() or None
        result.append((name, parsed))
    return result


def params_dict(params: list[tuple[str, str | None]]) -> dict[str, str | None]:
    return dict(params)


#: What tether's client offers with each ``compression=`` value (its Sec-WebSocket-Extensions
#: request header, as the peer server parses it). ``client_max_window_bits`` is always there:
#: tether can honour any limit the server sets.
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

#: How tether's server answers the offer ``permessage-deflate; client_max_window_bits`` (no
#: value), which is what websockets' client, aiohttp's client (compress=15), Node's ws and
#: Chromium send by default. The server imposes its preset's limits; "max" has none, so it
#: answers the bare name and both sides use 15 bits.
TETHER_ANSWER_TO_BARE_OFFER: dict[str, Agreed] = {
    "deflate": Agreed(False, False, 12, 12),
    "balanced": Agreed(False, False, 12, 12),
    "fast": Agreed(False, False, 12, 12),
    "small": Agreed(True, True, 10, 10),
    "max": Agreed(False, False, 15, 15),
}


# --- a TCP relay that counts bytes, to see compression on the wire ----------------------------


class CountingProxy:
    """Relays TCP connections from 127.0.0.1:<port> to 127.0.0.1:<target> and counts bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upstream = 0  # client -> server
        self.downstream = 0  # server -> client
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Since Python 3.12.1, wait_closed() also waits for the accepted connections to close.
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if upstream:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)
                    sink.write(data)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()
            except (ConnectionError, OSError):
                sink.close()

        for task in (
            asyncio.create_task(pump(reader, up_writer, True)),
            asyncio.create_task(pump(up_reader, writer, False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


# --- tether as the server ---------------------------------------------------------------------


@dataclass
class Seen:
    """What tether's server handler observed on its single connection."""

    connection: ServerConnection | None = None
    messages: list[str | bytes] | None = None
    fragments: list[list[str | bytes]] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    latency: float | None = None


def tether_echo(
    seen: Seen, *, close_with: tuple[int, str] | None = None, ping: bytes | None = None
) -> Callable[[ServerConnection], Awaitable[None]]:
    """A tether handler that echoes until the peer closes (recording what it saw), or that
    echoes one message and then closes with ``close_with``, or that pings first."""

    async def handler(ws: ServerConnection) -> None:
        seen.connection = ws
        seen.messages = []
        try:
            if ping is not None:
                seen.latency = await (await ws.ping(ping))
            if close_with is not None:
                message = await ws.recv()
                await ws.send(message)
                await ws.close(*close_with)
            else:
                async for message in ws:
                    seen.messages.append(message)
                    await ws.send(message)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        seen.close_code = ws.close_code
        seen.close_reason = ws.close_reason

    return handler


def tether_streaming_echo(seen: Seen) -> Callable[[ServerConnection], Awaitable[None]]:
    """A tether handler that records each message's fragments and echoes it whole."""

    async def handler(ws: ServerConnection) -> None:
        seen.connection = ws
        seen.fragments = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                pieces = [piece async for piece in ws.recv_streaming()]
                seen.fragments.append(pieces)
                if isinstance(pieces[0], str):
                    await ws.send("".join(pieces))  # type: ignore[arg-type]
                else:
                    await ws.send(b"".join(pieces))  # type: ignore[arg-type]

    return handler


def url_of(server: Any, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port_number}{path}"


# ==============================================================================================
# websockets
# ==============================================================================================


@contextlib.asynccontextmanager
async def websockets_server(handler: Any, **kwargs: Any) -> AsyncIterator[str]:
    # websockets applies max_size to each frame *before* inflating it, and 1 MiB of random
    # bytes deflates to about 1.002 MiB, so its 1 MiB default would refuse our 1 MiB
    # incompressible messages on a compressed connection (it refuses its own the same way).
    kwargs.setdefault("max_size", 2 * MiB)
    async with ws_serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@dataclass
class WsSeen:
    """What the websockets server handler observed."""

    request_extensions: str | None = None
    request_protocols: str | None = None
    subprotocol: str | None = None
    extensions: list[Any] | None = None
    messages: list[str | bytes] | None = None
    fragments: list[list[str | bytes]] | None = None
    close_code: int | None = None
    close_reason: str | None = None


def websockets_echo(seen: WsSeen, *, streaming: bool = False) -> Callable[[Any], Awaitable[None]]:
    async def handler(ws: Any) -> None:
        seen.request_extensions = ws.request.headers.get("Sec-WebSocket-Extensions")
        seen.request_protocols = ws.request.headers.get("Sec-WebSocket-Protocol")
        seen.subprotocol = ws.subprotocol
        seen.extensions = list(ws.protocol.extensions)
        seen.messages = []
        seen.fragments = []
        try:
            while True:
                if streaming:
                    pieces = [piece async for piece in ws.recv_streaming()]
                    seen.fragments.append(pieces)
                    message = "".join(pieces) if isinstance(pieces[0], str) else b"".join(pieces)
                else:
                    message = await ws.recv()
                seen.messages.append(message)
                await ws.send(message)
        except WsConnectionClosed as exc:
            if exc.rcvd is not None:
                seen.close_code = exc.rcvd.code
                seen.close_reason = exc.rcvd.reason

    return handler


# --- tether client -> websockets server -------------------------------------------------------


def test_tether_client_echo_with_websockets_server() -> None:
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url, connect(url) as ws:
            for message in ECHO_MESSAGES:
                await ws.send(message)
                assert await ws.recv() == message
        assert seen.messages == ECHO_MESSAGES

    run(main())


def test_tether_client_fragments_with_websockets_server() -> None:
    """tether sends an iterable as one fragmented message; websockets sees the same frames."""
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen, streaming=True)) as url:
            async with connect(url) as ws:
                await ws.send(iter(TEXT_FRAGMENTS))
                assert await ws.recv() == "".join(TEXT_FRAGMENTS)
                await ws.send(BINARY_FRAGMENTS)
                assert await ws.recv() == b"".join(BINARY_FRAGMENTS)
        assert seen.fragments == [TEXT_FRAGMENTS, BINARY_FRAGMENTS]

    run(main())


def test_websockets_server_fragments_reach_tether_client() -> None:
    async def handler(ws: Any) -> None:
        await ws.send(TEXT_FRAGMENTS)
        await ws.send(BINARY_FRAGMENTS)
        await ws.wait_closed()

    async def main() -> None:
        async with websockets_server(handler) as url, connect(url) as ws:
            # websockets cannot tell the last item of an iterable in advance: it ends every
            # fragmented message with an empty final frame, which tether streams as is.
            assert [piece async for piece in ws.recv_streaming()] == [*TEXT_FRAGMENTS, ""]
            assert await ws.recv() == b"".join(BINARY_FRAGMENTS)

    run(main())


def test_tether_client_subprotocol_with_websockets_server() -> None:
    """websockets picks by *server* preference: "chat" although tether listed "v2.chat"
    first. What matters here is that both sides agree and that tether offered its order."""
    seen = WsSeen()

    async def main() -> None:
        server_protocols = [Subprotocol("chat"), Subprotocol("v2.chat")]
        async with websockets_server(websockets_echo(seen), subprotocols=server_protocols) as url:
            async with connect(url, subprotocols=["v2.chat", "chat"]) as ws:
                assert ws.subprotocol == "chat"
                assert ws.handshake.offered_subprotocols == ["v2.chat", "chat"]
                await ws.send("x")
                assert await ws.recv() == "x"
        assert seen.subprotocol == "chat"
        assert seen.request_protocols == "v2.chat, chat"

    run(main())


#: websockets' server imposes 12-bit windows both ways unless the offer asks for less, and
#: echoes the context-takeover parameters it is offered.
WEBSOCKETS_SERVER_AGREES: dict[str, Agreed] = {
    "deflate": Agreed(False, False, 12, 12),
    "balanced": Agreed(False, False, 12, 12),
    "fast": Agreed(False, False, 12, 12),
    "small": Agreed(True, True, 10, 10),
    "max": Agreed(False, False, 12, 12),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_tether_client_deflate_presets_with_websockets_server(preset: str) -> None:
    seen = WsSeen()
    messages = PRESET_MESSAGES

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url:
            async with connect(url, compression=preset) as ws:
                [(name, params)] = parse_extensions(seen.request_extensions)
                assert name == "permessage-deflate"
                assert params == TETHER_OFFER[preset]
                assert [e.name for e in ws.extensions] == ["permessage-deflate"]
                assert agreed(ws.extensions[0], server=False) == WEBSOCKETS_SERVER_AGREES[preset]
                for message in messages:
                    await ws.send(message)
                    assert await ws.recv() == message
        assert seen.extensions is not None and len(seen.extensions) == 1
        assert agreed(seen.extensions[0], server=True) == WEBSOCKETS_SERVER_AGREES[preset]
        assert seen.messages == messages

    run(main())


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        # The server lowers both windows below tether's 12 and forces no context takeover
        # both ways (7.1.1.1 and 7.1.1.2 let a server add both).
        (
            WsServerDeflate(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=9,
            ),
            Agreed(True, True, 10, 9),
        ),
        # The server has no limits of its own: it grants what tether asked for.
        (WsServerDeflate(), Agreed(False, False, 12, 12)),
        # The server asks for a larger client window than tether announced: tether's
        # answer-side limit (12) wins, which is what the offer told the server.
        (WsServerDeflate(server_max_window_bits=9, client_max_window_bits=15), None),
    ],
    ids=["nct-10-9", "no-limits", "server-9-client-15"],
)
def test_tether_client_with_websockets_server_deflate_options(
    factory: WsServerDeflate, expected: Agreed | None
) -> None:
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen), extensions=[factory]) as url:
            async with connect(url) as ws:
                mine = agreed(ws.extensions[0], server=False)
                await ws.send(json_text(20000))
                assert await ws.recv() == json_text(20000)
        theirs = agreed(seen.extensions[0], server=True)  # type: ignore[index]
        if expected is not None:
            assert mine == expected
            assert theirs == expected
        else:
            # Offer: client_max_window_bits=12, server_max_window_bits=12. websockets lowers
            # server_max_window_bits to 9 and answers client_max_window_bits=12 (its 15 is
            # above the 12 offered, so 12 stays).
            assert mine == Agreed(False, False, 9, 12)
            assert theirs == Agreed(False, False, 9, 12)

    run(main())


def test_tether_client_custom_settings_with_websockets_server() -> None:
    """DeflateSettings below websockets' 12-bit defaults: granted as asked."""
    seen = WsSeen()
    settings = DeflateSettings(
        server_max_window_bits=11, client_max_window_bits=10, client_no_context_takeover=True
    )

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url:
            async with connect(url, compression=settings) as ws:
                assert agreed(ws.extensions[0], server=False) == Agreed(False, True, 11, 10)
                for size in (20000, 30000, 40000):
                    await ws.send(json_text(size))
                    assert await ws.recv() == json_text(size)
        assert agreed(seen.extensions[0], server=True) == Agreed(False, True, 11, 10)  # type: ignore[index]

    run(main())


def test_tether_client_without_compression_with_websockets_server() -> None:
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url:
            async with connect(url, compression=None) as ws:
                assert ws.extensions == []
                await ws.send(json_text(5000))
                assert await ws.recv() == json_text(5000)
        assert seen.request_extensions is None
        assert seen.extensions == []

    run(main())


def test_tether_client_with_websockets_server_without_compression() -> None:
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen), compression=None) as url:
            async with connect(url) as ws:
                assert ws.extensions == []
                assert ws.handshake.accepted_extensions == []
                await ws.send(json_text(5000))
                assert await ws.recv() == json_text(5000)
        assert seen.request_extensions is not None  # offered, declined

    run(main())


def test_tether_client_compresses_on_the_wire_with_websockets_server() -> None:
    seen = WsSeen()
    message = json_text(MiB)

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url:
            port = int(url.rsplit(":", 1)[1].strip("/"))
            async with CountingProxy(port) as proxy:
                async with connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
                    await ws.send(message)
                    assert await ws.recv() == message
                # Repetitive JSON shrinks more than 10x both ways.
                assert 0 < proxy.upstream < MiB // 10
                assert 0 < proxy.downstream < MiB // 10

    run(main())


def test_ping_pong_between_tether_client_and_websockets_server() -> None:
    latencies: list[float] = []

    async def handler(ws: Any) -> None:
        waiter = await ws.ping(b"from websockets")
        latencies.append(await waiter)
        await ws.send("pinged")
        await ws.wait_closed()

    async def main() -> None:
        async with websockets_server(handler) as url, connect(url) as ws:
            assert await ws.recv() == "pinged"  # tether answered websockets' ping
            latency = await (await ws.ping(b"from tether"))
            assert 0 <= latency < 5
            assert ws.latency == latency
        assert len(latencies) == 1 and 0 <= latencies[0] < 5

    run(main())


def test_tether_client_closes_websockets_server_with_code_and_reason() -> None:
    seen = WsSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(seen)) as url:
            ws = await connect(url)
            await ws.send("before close")
            assert await ws.recv() == "before close"
            await ws.close(4000, "bye")
            # tether records the code the peer sent back in its closing frame.
            assert (ws.close_code, ws.close_reason) == (4000, "bye")
        assert (seen.close_code, seen.close_reason) == (4000, "bye")

    run(main())


def test_websockets_server_closes_tether_client_with_code_and_reason() -> None:
    async def handler(ws: Any) -> None:
        await ws.close(4001, "ciao ☃")

    async def main() -> None:
        async with websockets_server(handler) as url, connect(url) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "ciao ☃")
            await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (4001, "ciao ☃")

    run(main())


def test_websockets_server_refuses_tether_client_origin() -> None:
    async def main() -> None:
        async with websockets_server(
            websockets_echo(WsSeen()), origins=["https://ok.example"]
        ) as url:
            with pytest.raises(InvalidStatus) as info:
                await connect(url, origin="https://evil.example")
            assert info.value.response.status == 403
            async with connect(url, origin="https://ok.example") as ws:
                await ws.send("allowed")
                assert await ws.recv() == "allowed"

    run(main())


# --- websockets client -> tether server -------------------------------------------------------


def test_websockets_client_echo_with_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            # max_size: see websockets_server().
            async with ws_connect(url_of(server), max_size=2 * MiB) as ws:
                for message in ECHO_MESSAGES:
                    await ws.send(message)
                    assert await ws.recv() == message
        assert seen.messages == ECHO_MESSAGES

    run(main())


def test_websockets_client_fragments_with_tether_server() -> None:
    """websockets sends an iterable as one fragmented message; tether streams its frames."""
    seen = Seen()

    async def main() -> None:
        async with serve(tether_streaming_echo(seen), "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server)) as ws:
                await ws.send(TEXT_FRAGMENTS)
                assert await ws.recv() == "".join(TEXT_FRAGMENTS)
                await ws.send(BINARY_FRAGMENTS)
                assert await ws.recv() == b"".join(BINARY_FRAGMENTS)
        # websockets ends each fragmented message with an empty final frame.
        assert seen.fragments == [[*TEXT_FRAGMENTS, ""], [*BINARY_FRAGMENTS, b""]]

    run(main())


def test_tether_server_fragments_reach_websockets_client() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(TEXT_FRAGMENTS)
        await ws.send(iter(BINARY_FRAGMENTS))
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server)) as ws:
                assert [piece async for piece in ws.recv_streaming()] == TEXT_FRAGMENTS
                assert [piece async for piece in ws.recv_streaming()] == BINARY_FRAGMENTS

    run(main())


def test_websockets_client_subprotocol_with_tether_server() -> None:
    """tether's server takes the first entry of the *client's* list that it supports."""
    seen = Seen()

    async def main() -> None:
        async with serve(
            tether_echo(seen), "127.0.0.1", 0, subprotocols=["chat", "v2.chat"]
        ) as server:
            offered = [Subprotocol("v2.chat"), Subprotocol("chat")]
            async with ws_connect(url_of(server), subprotocols=offered) as ws:
                assert ws.subprotocol == "v2.chat"
                await ws.send("x")
                assert await ws.recv() == "x"
            async with ws_connect(url_of(server), subprotocols=offered[::-1]) as ws:
                assert ws.subprotocol == "chat"
        assert seen.connection is not None
        assert seen.connection.handshake.offered_subprotocols == ["chat", "v2.chat"]
        assert seen.connection.subprotocol == "chat"

    run(main())


@pytest.mark.parametrize("preset", PRESETS)
def test_websockets_client_with_tether_server_deflate_presets(preset: str) -> None:
    seen = Seen()
    messages = PRESET_MESSAGES
    expected = TETHER_ANSWER_TO_BARE_OFFER[preset]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0, compression=preset) as server:
            async with ws_connect(url_of(server)) as ws:
                assert agreed(ws.protocol.extensions[0], server=False) == expected
                for message in messages:
                    await ws.send(message)
                    assert await ws.recv() == message
        ws_server = seen.connection
        assert ws_server is not None
        # websockets' default offer: the name and client_max_window_bits without a value.
        assert ws_server.handshake.offered_extensions == [
            ("permessage-deflate", [("client_max_window_bits", None)])
        ]
        assert agreed(ws_server.extensions[0], server=True) == expected
        assert seen.messages == messages

    run(main())


@pytest.mark.parametrize(
    ("factory", "offer", "expected"),
    [
        # Everything requested below tether's 12-bit limits: granted as asked (7.1.2.1:
        # the server answers with the same or a smaller server_max_window_bits; 7.1.2.2:
        # client_max_window_bits equal to or smaller than the client's value).
        (
            WsClientDeflate(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=11,
            ),
            {
                "server_no_context_takeover": None,
                "client_no_context_takeover": None,
                "server_max_window_bits": "10",
                "client_max_window_bits": "11",
            },
            Agreed(True, True, 10, 11),
        ),
        # Above tether's limits: lowered to 12.
        (
            WsClientDeflate(server_max_window_bits=15, client_max_window_bits=15),
            {"server_max_window_bits": "15", "client_max_window_bits": "15"},
            Agreed(False, False, 12, 12),
        ),
        # No client_max_window_bits in the offer: tether must not answer with it (7.1.2.2),
        # so the client keeps 15 bits; websockets would fail the handshake otherwise.
        (
            WsClientDeflate(client_max_window_bits=None),
            {},
            Agreed(False, False, 12, 15),
        ),
    ],
    ids=["nct-10-11", "15-15", "no-client-bits"],
)
def test_websockets_client_deflate_options_with_tether_server(
    factory: WsClientDeflate, offer: dict[str, str | None], expected: Agreed
) -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server), extensions=[factory], compression=None) as ws:
                assert agreed(ws.protocol.extensions[0], server=False) == expected
                await ws.send(json_text(20000))
                assert await ws.recv() == json_text(20000)
        assert seen.connection is not None
        [(name, params)] = seen.connection.handshake.offered_extensions
        assert (name, params_dict(params)) == ("permessage-deflate", offer)
        assert agreed(seen.connection.extensions[0], server=True) == expected

    run(main())


def test_websockets_client_with_tether_server_custom_settings() -> None:
    """tether's server imposes 9-bit windows and no context takeover both ways."""
    seen = Seen()
    settings = DeflateSettings(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=9,
        client_max_window_bits=9,
        compress_threshold=0,
    )

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0, compression=settings) as server:
            async with ws_connect(url_of(server)) as ws:
                assert agreed(ws.protocol.extensions[0], server=False) == Agreed(True, True, 9, 9)
                for size in (1, 20000, 30000):
                    await ws.send(json_text(size))
                    assert await ws.recv() == json_text(size)
        assert seen.connection is not None
        assert agreed(seen.connection.extensions[0], server=True) == Agreed(True, True, 9, 9)

    run(main())


def test_websockets_client_compresses_on_the_wire_with_tether_server() -> None:
    message = json_text(MiB)

    async def main() -> None:
        async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
            async with CountingProxy(server.port_number) as proxy:
                async with ws_connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
                    await ws.send(message)
                    assert await ws.recv() == message
                assert 0 < proxy.upstream < MiB // 10
                assert 0 < proxy.downstream < MiB // 10

    run(main())


def test_ping_pong_between_websockets_client_and_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        handler = tether_echo(seen, ping=b"from tether")
        async with serve(handler, "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server)) as ws:
                waiter = await ws.ping(b"from websockets")
                latency = await waiter
                assert 0 <= latency < 5
                await ws.pong(b"unsolicited")  # a one-way heartbeat: tether ignores it
                await ws.send("after pings")
                assert await ws.recv() == "after pings"
        assert seen.latency is not None and 0 <= seen.latency < 5

    run(main())


def test_websockets_client_closes_tether_server_with_code_and_reason() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            ws = await ws_connect(url_of(server))
            await ws.send("before close")
            assert await ws.recv() == "before close"
            await ws.close(4000, "bye")
            await asyncio.wait_for(server_closed(seen), 10)
        assert (seen.close_code, seen.close_reason) == (4000, "bye")

    run(main())


async def server_closed(seen: Seen) -> None:
    while seen.close_code is None:
        await asyncio.sleep(0.01)


def test_tether_server_closes_websockets_client_with_code_and_reason() -> None:
    seen = Seen()

    async def main() -> None:
        handler = tether_echo(seen, close_with=(4001, "ciao ☃"))
        async with serve(handler, "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server)) as ws:
                await ws.send("last")
                assert await ws.recv() == "last"
                with pytest.raises(WsConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "ciao ☃")
            await asyncio.wait_for(server_closed(seen), 10)
        # The websockets client echoed the code, so that is what tether received.
        assert (seen.close_code, seen.close_reason) == (4001, "ciao ☃")

    run(main())


def test_tether_server_refuses_websockets_client_origin() -> None:
    async def main() -> None:
        async with serve(
            tether_echo(Seen()), "127.0.0.1", 0, origins=["https://ok.example"]
        ) as server:
            with pytest.raises(WsInvalidStatus) as info:
                await ws_connect(url_of(server), origin="https://evil.example")  # type: ignore[arg-type]
            assert info.value.response.status_code == 403
            async with ws_connect(url_of(server), origin="https://ok.example") as ws:  # type: ignore[arg-type]
                await ws.send("allowed")
                assert await ws.recv() == "allowed"

    run(main())


# ==============================================================================================
# aiohttp
# ==============================================================================================


@dataclass
class AioSeen:
    """What the aiohttp server handler observed."""

    request_extensions: str | None = None
    request_protocols: str | None = None
    protocol: str | None = None
    compress: int | bool | None = None
    response_extensions: str | None = None
    messages: list[str | bytes] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    pong: bytes | None = None


@contextlib.asynccontextmanager
async def aiohttp_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"ws://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def aiohttp_echo(
    seen: AioSeen,
    *,
    protocols: tuple[str, ...] = (),
    compress: bool = True,
    close_with: tuple[int, str] | None = None,
    ping: bytes | None = None,
    refuse: bool = False,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if refuse:
            raise web.HTTPForbidden(text="not from here")
        # With ping set, we read our pong ourselves (autoping would swallow it).
        ws = web.WebSocketResponse(protocols=protocols, compress=compress, autoping=ping is None)
        await ws.prepare(request)
        seen.request_extensions = request.headers.get("Sec-WebSocket-Extensions")
        seen.request_protocols = request.headers.get("Sec-WebSocket-Protocol")
        seen.protocol = ws.ws_protocol
        seen.compress = ws.compress
        seen.response_extensions = ws.headers.get("Sec-WebSocket-Extensions")
        seen.messages = []
        if ping is not None:
            await ws.ping(ping)
            reply = await ws.receive()
            assert reply.type is aiohttp.WSMsgType.PONG, reply
            seen.pong = reply.data
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                seen.messages.append(msg.data)
                await ws.send_str(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                seen.messages.append(msg.data)
                await ws.send_bytes(msg.data)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                seen.close_code, seen.close_reason = msg.data, msg.extra
                break
            else:
                break
            if close_with is not None:
                await ws.close(code=close_with[0], message=close_with[1].encode())
                break
        await ws.close()
        return ws

    return handler


# --- tether client -> aiohttp server ----------------------------------------------------------


def test_tether_client_echo_with_aiohttp_server() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen)) as url, connect(url) as ws:
            for message in ECHO_MESSAGES:
                await ws.send(message)
                assert await ws.recv() == message
        assert seen.messages == ECHO_MESSAGES

    run(main())


def test_tether_client_fragments_with_aiohttp_server() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen)) as url, connect(url) as ws:
            await ws.send(TEXT_FRAGMENTS)
            assert await ws.recv() == "".join(TEXT_FRAGMENTS)
            await ws.send(iter(BINARY_FRAGMENTS))
            assert await ws.recv() == b"".join(BINARY_FRAGMENTS)
        # aiohttp only delivers whole messages: it reassembled our frames.
        assert seen.messages == ["".join(TEXT_FRAGMENTS), b"".join(BINARY_FRAGMENTS)]

    run(main())


def test_tether_client_subprotocol_with_aiohttp_server() -> None:
    """aiohttp, like tether, picks the first of the client's subprotocols it supports."""
    seen = AioSeen()

    async def main() -> None:
        handler = aiohttp_echo(seen, protocols=("chat", "v2.chat"))
        async with aiohttp_server(handler) as url:
            async with connect(url, subprotocols=["v2.chat", "chat"]) as ws:
                assert ws.subprotocol == "v2.chat"
                await ws.send("x")
                assert await ws.recv() == "x"
        assert seen.protocol == "v2.chat"
        assert seen.request_protocols == "v2.chat, chat"

    run(main())


#: aiohttp's server answers ``server_max_window_bits`` (the value asked for, else nothing,
#: meaning 15) and ``server_no_context_takeover`` if asked; it never answers the client_*
#: parameters, so tether's client keeps the limits it announced itself. ``compress`` is the
#: window aiohttp compresses with.
AIOHTTP_SERVER_AGREES: dict[str, tuple[Agreed, dict[str, str | None], int]] = {
    "deflate": (Agreed(False, False, 12, 12), {"server_max_window_bits": "12"}, 12),
    "balanced": (Agreed(False, False, 12, 12), {"server_max_window_bits": "12"}, 12),
    "fast": (Agreed(False, False, 12, 12), {"server_max_window_bits": "12"}, 12),
    "small": (
        Agreed(True, True, 10, 10),
        {"server_max_window_bits": "10", "server_no_context_takeover": None},
        10,
    ),
    "max": (Agreed(False, False, 15, 15), {}, 15),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_tether_client_deflate_presets_with_aiohttp_server(preset: str) -> None:
    seen = AioSeen()
    messages = PRESET_MESSAGES
    expected, answer, compress = AIOHTTP_SERVER_AGREES[preset]

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen)) as url:
            async with connect(url, compression=preset) as ws:
                [(name, params)] = parse_extensions(seen.request_extensions)
                assert (name, params) == ("permessage-deflate", TETHER_OFFER[preset])
                [(name, params)] = parse_extensions(seen.response_extensions)
                assert (name, params) == ("permessage-deflate", answer)
                assert agreed(ws.extensions[0], server=False) == expected
                for message in messages:
                    await ws.send(message)
                    assert await ws.recv() == message
        assert seen.compress == compress
        assert seen.messages == messages

    run(main())


def test_tether_client_with_aiohttp_server_without_compression() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen, compress=False)) as url:
            async with connect(url) as ws:
                assert ws.extensions == []
                await ws.send(json_text(5000))
                assert await ws.recv() == json_text(5000)
        assert seen.request_extensions is not None
        assert seen.response_extensions is None

    run(main())


def test_tether_client_compresses_on_the_wire_with_aiohttp_server() -> None:
    message = json_text(MiB)

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(AioSeen())) as url:
            port = int(url.rsplit(":", 1)[1].strip("/"))
            async with CountingProxy(port) as proxy:
                async with connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
                    await ws.send(message)
                    assert await ws.recv() == message
                assert 0 < proxy.upstream < MiB // 10
                assert 0 < proxy.downstream < MiB // 10

    run(main())


def test_ping_pong_between_tether_client_and_aiohttp_server() -> None:
    seen = AioSeen()

    async def main() -> None:
        # aiohttp pings first and checks our pong; then we ping it (it answers by itself
        # only with autoping, so this handler echoes messages and we ping a second server).
        async with aiohttp_server(aiohttp_echo(seen, ping=b"from aiohttp")) as url:
            async with connect(url) as ws:
                await ws.send("after ping")
                assert await ws.recv() == "after ping"
        assert seen.pong == b"from aiohttp"
        async with aiohttp_server(aiohttp_echo(AioSeen())) as url, connect(url) as ws:
            latency = await (await ws.ping(b"from tether"))
            assert 0 <= latency < 5

    run(main())


def test_tether_client_closes_aiohttp_server_with_code_and_reason() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen)) as url:
            ws = await connect(url)
            await ws.send("before close")
            assert await ws.recv() == "before close"
            await ws.close(4000, "bye")
            # aiohttp answers every close frame with 1000 and no reason (RFC 6455 5.5.1 says
            # an endpoint "typically" echoes the code; it need not).
            assert (ws.close_code, ws.close_reason) == (1000, "")
        assert (seen.close_code, seen.close_reason) == (4000, "bye")

    run(main())


def test_aiohttp_server_closes_tether_client_with_code_and_reason() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(seen, close_with=(4001, "ciao ☃"))) as url:
            async with connect(url) as ws:
                await ws.send("last")
                assert await ws.recv() == "last"
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "ciao ☃")
                await ws.wait_closed()
                assert (ws.close_code, ws.close_reason) == (4001, "ciao ☃")

    run(main())


def test_aiohttp_server_refuses_tether_client() -> None:
    async def main() -> None:
        async with aiohttp_server(aiohttp_echo(AioSeen(), refuse=True)) as url:
            with pytest.raises(InvalidStatus) as info:
                await connect(url)
            assert info.value.response.status == 403
            assert b"not from here" in info.value.response.body

    run(main())


# --- aiohttp client -> tether server ----------------------------------------------------------


@contextlib.asynccontextmanager
async def aiohttp_client(url: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, **kwargs) as ws:
        yield ws


async def aiohttp_echo_round_trip(
    ws: aiohttp.ClientWebSocketResponse, message: str | bytes
) -> None:
    if isinstance(message, str):
        await ws.send_str(message)
        assert await ws.receive_str() == message
    else:
        await ws.send_bytes(message)
        assert await ws.receive_bytes() == message


def test_aiohttp_client_echo_with_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server)) as ws:
                for message in ECHO_MESSAGES:
                    await aiohttp_echo_round_trip(ws, message)
        assert seen.messages == ECHO_MESSAGES

    run(main())


def test_tether_server_fragments_reach_aiohttp_client() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(TEXT_FRAGMENTS)
        await ws.send(BINARY_FRAGMENTS)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server), compress=15) as ws:
                assert await ws.receive_str() == "".join(TEXT_FRAGMENTS)
                assert await ws.receive_bytes() == b"".join(BINARY_FRAGMENTS)

    run(main())


def test_aiohttp_client_subprotocol_with_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(
            tether_echo(seen), "127.0.0.1", 0, subprotocols=["chat", "v2.chat"]
        ) as server:
            async with aiohttp_client(url_of(server), protocols=("v2.chat", "chat")) as ws:
                assert ws.protocol == "v2.chat"
                await aiohttp_echo_round_trip(ws, "x")
        assert seen.connection is not None
        assert seen.connection.handshake.offered_subprotocols == ["v2.chat", "chat"]
        assert seen.connection.subprotocol == "v2.chat"

    run(main())


@pytest.mark.parametrize("preset", PRESETS)
def test_aiohttp_client_with_tether_server_deflate_presets(preset: str) -> None:
    """aiohttp's client (compress=15) offers ``client_max_window_bits`` without a value, like
    websockets'; it reads client_max_window_bits and client_no_context_takeover from the
    answer into ``compress`` and ``client_notakeover``."""
    seen = Seen()
    messages = PRESET_MESSAGES
    expected = TETHER_ANSWER_TO_BARE_OFFER[preset]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0, compression=preset) as server:
            async with aiohttp_client(url_of(server), compress=15) as ws:
                assert ws.compress == expected.client_max_window_bits
                assert ws.client_notakeover == expected.client_no_context_takeover
                for message in messages:
                    await aiohttp_echo_round_trip(ws, message)
        assert seen.connection is not None
        assert seen.connection.handshake.offered_extensions == [
            ("permessage-deflate", [("client_max_window_bits", None)])
        ]
        assert agreed(seen.connection.extensions[0], server=True) == expected
        assert seen.messages == messages

    run(main())


@pytest.mark.parametrize(
    ("compress", "offer", "expected"),
    [
        # compress=10 asks for server_max_window_bits=10: tether lowers its 12 to 10.
        (
            10,
            {"client_max_window_bits": None, "server_max_window_bits": "10"},
            Agreed(False, False, 10, 12),
        ),
        (15, {"client_max_window_bits": None}, Agreed(False, False, 12, 12)),
    ],
)
def test_aiohttp_client_compress_options_with_tether_server(
    compress: int, offer: dict[str, str | None], expected: Agreed
) -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server), compress=compress) as ws:
                assert ws.compress == expected.client_max_window_bits
                await aiohttp_echo_round_trip(ws, json_text(20000))
                await aiohttp_echo_round_trip(ws, json_text(30000))
        assert seen.connection is not None
        [(name, params)] = seen.connection.handshake.offered_extensions
        assert (name, params_dict(params)) == ("permessage-deflate", offer)
        assert agreed(seen.connection.extensions[0], server=True) == expected

    run(main())


def test_aiohttp_client_honours_tether_server_window_limit() -> None:
    """With client_max_window_bits=9 imposed, aiohttp must compress with a 9-bit window. The
    second message repeats the first, so a larger window would refer back into the first
    message, past what tether's 9-bit inflater keeps, and fail the connection."""
    seen = Seen()
    settings = DeflateSettings(client_max_window_bits=9)
    block = random_text(600, seed=9)
    message = block * 50

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0, compression=settings) as server:
            async with aiohttp_client(url_of(server), compress=15) as ws:
                assert ws.compress == 9
                await aiohttp_echo_round_trip(ws, message)
                await aiohttp_echo_round_trip(ws, message)
        assert seen.connection is not None
        assert agreed(seen.connection.extensions[0], server=True) == Agreed(False, False, 12, 9)

    run(main())


def test_aiohttp_client_without_compression_with_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server)) as ws:  # compress=0 by default
                assert ws.compress == 0
                await aiohttp_echo_round_trip(ws, json_text(5000))
        assert seen.connection is not None
        assert seen.connection.handshake.offered_extensions == []
        assert seen.connection.extensions == []

    run(main())


def test_aiohttp_client_compresses_on_the_wire_with_tether_server() -> None:
    message = json_text(MiB)

    async def main() -> None:
        async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
            async with CountingProxy(server.port_number) as proxy:
                async with aiohttp_client(f"ws://127.0.0.1:{proxy.port}/", compress=15) as ws:
                    await aiohttp_echo_round_trip(ws, message)
                assert 0 < proxy.upstream < MiB // 10
                assert 0 < proxy.downstream < MiB // 10

    run(main())


def test_ping_pong_between_aiohttp_client_and_tether_server() -> None:
    seen = Seen()

    async def main() -> None:
        handler = tether_echo(seen, ping=b"from tether")
        async with serve(handler, "127.0.0.1", 0) as server:
            # autoping=False: aiohttp hands us the pong instead of swallowing it, and
            # hands us tether's ping too (which it then does not answer by itself).
            async with aiohttp_client(url_of(server), autoping=False) as ws:
                ping = await ws.receive()
                assert (ping.type, ping.data) == (aiohttp.WSMsgType.PING, b"from tether")
                await ws.pong(ping.data)
                await ws.ping(b"from aiohttp")
                pong = await ws.receive()
                assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"from aiohttp")
                await aiohttp_echo_round_trip(ws, "after pings")
        assert seen.latency is not None and 0 <= seen.latency < 5

    run(main())


def test_aiohttp_client_closes_tether_server_with_code_and_reason() -> None:
    seen = Seen()

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server)) as ws:
                await aiohttp_echo_round_trip(ws, "before close")
                await ws.close(code=4000, message=b"bye")
                assert ws.close_code == 4000
            await asyncio.wait_for(server_closed(seen), 10)
        assert (seen.close_code, seen.close_reason) == (4000, "bye")

    run(main())


def test_tether_server_closes_aiohttp_client_with_code_and_reason() -> None:
    seen = Seen()

    async def main() -> None:
        handler = tether_echo(seen, close_with=(4001, "ciao ☃"))
        async with serve(handler, "127.0.0.1", 0) as server:
            async with aiohttp_client(url_of(server)) as ws:
                await aiohttp_echo_round_trip(ws, "last")
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.CLOSE
                assert (msg.data, msg.extra) == (4001, "ciao ☃")
            await asyncio.wait_for(server_closed(seen), 10)
        # aiohttp answers with 1000 whatever it received.
        assert (seen.close_code, seen.close_reason) == (1000, "")

    run(main())


def test_tether_server_refuses_aiohttp_client_origin() -> None:
    async def main() -> None:
        async with serve(
            tether_echo(Seen()), "127.0.0.1", 0, origins=["https://ok.example"]
        ) as server:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with aiohttp_client(url_of(server), origin="https://evil.example"):
                    pass
            assert info.value.status == 403
            async with aiohttp_client(url_of(server), origin="https://ok.example") as ws:
                await aiohttp_echo_round_trip(ws, "allowed")

    run(main())


# ==============================================================================================
# tether's server with several kinds of clients at once
# ==============================================================================================


async def wait_open(server: Any, count: int) -> list[ServerConnection]:
    """The server's connections once ``count`` of them are open."""
    while True:
        ready = [c for c in server.connections if c.state.name == "OPEN"]
        if len(ready) == count:
            return ready
        await asyncio.sleep(0.01)


def test_broadcast_reaches_websockets_and_aiohttp_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """broadcast() compresses once per group of connections that encode alike ("small" resets
    the server's context for every message, so the payload can be shared), and every peer
    must inflate that shared payload: websockets and aiohttp with 10-bit windows, websockets
    with a 9-bit window (another group), and clients without compression (plain frames)."""
    messages: list[str | bytes] = [json_text(5000), "short", random_bytes(3000), json_text(8000)]
    compressed: list[int] = []
    original = PerMessageDeflate.compress_message

    def spy(self: PerMessageDeflate, data: Any) -> bytes:
        compressed.append(self.local_max_window_bits)
        return original(self, data)

    monkeypatch.setattr(PerMessageDeflate, "compress_message", spy)

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        async with (
            serve(handler, "127.0.0.1", 0, compression="small") as server,
            contextlib.AsyncExitStack() as stack,
        ):
            url = url_of(server)
            ws_clients = [
                await stack.enter_async_context(ws_connect(url)),
                await stack.enter_async_context(
                    ws_connect(
                        url,
                        compression=None,
                        extensions=[WsClientDeflate(server_max_window_bits=9)],
                    )
                ),
                await stack.enter_async_context(ws_connect(url, compression=None)),
            ]
            session = await stack.enter_async_context(aiohttp.ClientSession())
            aio_clients = [
                await stack.enter_async_context(session.ws_connect(url, compress=15)),
                await stack.enter_async_context(session.ws_connect(url)),
            ]
            connections = await wait_open(server, 5)
            deflated = [c.extensions[0] for c in connections if c.extensions]
            assert len(deflated) == 3
            assert all(e.can_share_encoding for e in deflated)
            assert sorted(e.local_max_window_bits for e in deflated) == [9, 10, 10]

            for message in messages:
                assert broadcast(server.connections, message) == 5
            # Compressed once per group (9 and 10 bits) for the three messages above the
            # 32-byte threshold; not once per connection.
            assert sorted(compressed) == [9, 9, 9, 10, 10, 10]
            for client in ws_clients:
                assert [await client.recv() for _ in messages] == messages
            for aio in aio_clients:
                received = []
                for _ in messages:
                    msg = await aio.receive()
                    received.append(msg.data)
                assert received == messages

    run(main())


def test_tether_server_shutdown_closes_peers_with_1001() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def main() -> None:
        server = await serve(handler, "127.0.0.1", 0)
        async with ws_connect(url_of(server)) as ws, aiohttp_client(url_of(server)) as aio:
            await wait_open(server, 2)
            server.close()
            with pytest.raises(WsConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")
            msg = await aio.receive()
            assert (msg.type, msg.data, msg.extra) == (
                aiohttp.WSMsgType.CLOSE,
                1001,
                "server shutting down",
            )
        await server.wait_closed()

    run(main())


async def until_pinged(ws: Any) -> float:
    """Wait until a keepalive ping of ``ws`` (tether) got its pong; return the latency."""
    while ws.latency == 0:
        await asyncio.sleep(0.01)
    return float(ws.latency)


def test_tether_server_keepalive_pings_are_answered_by_python_clients() -> None:
    async def handler(ws: ServerConnection) -> None:
        await until_pinged(ws)
        await ws.send("pinged")
        await ws.wait_closed()

    async def main() -> None:
        async with (
            serve(handler, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=5) as server,
            ws_connect(url_of(server)) as ws,
            aiohttp_client(url_of(server)) as aio,
        ):
            assert await ws.recv() == "pinged"
            assert await aio.receive_str() == "pinged"
            for connection in await wait_open(server, 2):
                assert 0 < connection.latency < 5

    run(main())


def test_tether_client_keepalive_pings_are_answered_by_python_servers() -> None:
    seen = AioSeen()

    async def main() -> None:
        async with websockets_server(websockets_echo(WsSeen())) as url:
            async with connect(url, ping_interval=0.05, ping_timeout=5) as ws:
                assert 0 < await until_pinged(ws) < 5
                await ws.send("still open")
                assert await ws.recv() == "still open"
        async with aiohttp_server(aiohttp_echo(seen)) as url:
            async with connect(url, ping_interval=0.05, ping_timeout=5) as ws:
                assert 0 < await until_pinged(ws) < 5
                await ws.send("still open")
                assert await ws.recv() == "still open"

    run(main())


@pytest.mark.parametrize("compression", ["balanced", "small", "max", None])
def test_tether_auto_fragmentation_with_python_peers(compression: str | None) -> None:
    """With ``max_outgoing_frame_size`` tether splits messages into frames, each compressed
    and flushed on its own; websockets sees the frames (inflated sizes), aiohttp the whole."""
    seen = WsSeen()
    limits = Limits(max_outgoing_frame_size=1000)
    messages: list[str | bytes] = [json_text(5000), random_bytes(5000)]

    async def main() -> None:
        async with websockets_server(websockets_echo(seen, streaming=True)) as url:
            async with connect(url, compression=compression, limits=limits) as ws:
                for message in messages:
                    await ws.send(message)
                    assert await ws.recv() == message
        assert seen.fragments is not None
        assert [[len(piece) for piece in pieces] for pieces in seen.fragments] == [[1000] * 5] * 2
        async with aiohttp_server(aiohttp_echo(AioSeen())) as url:
            async with connect(url, compression=compression, limits=limits) as ws:
                for message in messages:
                    await ws.send(message)
                    assert await ws.recv() == message

    run(main())


def test_tether_server_closes_oversized_messages_from_websockets_with_1009() -> None:
    """Over tether's 1 MiB default: 1009 both for a plain message and for a compressed one
    that only grows past the limit while being inflated (4 MiB of zeros, a few KiB sent)."""

    async def main() -> None:
        async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
            for compression, payload in [(None, b"x" * (MiB + 1)), ("deflate", bytes(4 * MiB))]:
                async with ws_connect(url_of(server), max_size=None, compression=compression) as ws:
                    await ws.send(payload)
                    with pytest.raises(WsConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.rcvd is not None
                    assert info.value.rcvd.code == 1009

    run(main())


def test_redirects_between_tether_and_python_peers() -> None:
    """tether's client follows aiohttp's 302 and 301 (relative and absolute Location), and
    websockets' client follows a 302 that a tether server's process_request answers."""
    seen = AioSeen()

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/new?from=old")

    async def moved_absolute(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(f"ws://127.0.0.1:{request.url.port}/new")

    def redirect(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/old":
            headers = Headers([("Location", "/new"), ("Content-Length", "0")])
            return Response(302, "Found", headers, b"")
        return None

    async def tether_handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(ws.request.path)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/old", moved)
        app.router.add_get("/abs", moved_absolute)
        app.router.add_get("/new", aiohttp_echo(seen))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            for path, target in [("/old", "/new?from=old"), ("/abs", "/new")]:
                async with connect(f"ws://127.0.0.1:{port}{path}") as ws:
                    assert ws.request is not None
                    assert ws.request.path == target
                    await ws.send("redirected")
                    assert await ws.recv() == "redirected"
        finally:
            await runner.cleanup()

        async with serve(tether_handler, "127.0.0.1", 0, process_request=redirect) as server:
            async with ws_connect(url_of(server, "/old")) as ws:
                assert await ws.recv() == "/new"

    run(main())


def ipv6_loopback() -> str | None:
    """``None`` if we can listen on ::1, else why not."""
    import socket

    if not socket.has_ipv6:
        return "Python has no IPv6 support"
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"cannot listen on ::1: {exc}"
    return None


@pytest.mark.skipif(ipv6_loopback() is not None, reason=str(ipv6_loopback()))
def test_ipv6_loopback_with_python_peers() -> None:
    """``ws://[::1]:port/path?query``: the Host header and the path survive both ways."""
    seen: list[tuple[str | None, str]] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append((ws.request.headers.get("Host"), ws.request.path))
        await ws.send("v6")

    async def main() -> None:
        async with ws_serve(websockets_echo(WsSeen()), "::1", 0) as peer:
            port = next(iter(peer.sockets)).getsockname()[1]
            async with connect(f"ws://[::1]:{port}/room?x=1") as ws:
                await ws.send("over v6")
                assert await ws.recv() == "over v6"
        async with serve(handler, "::1", 0) as server:
            base = f"ws://[::1]:{server.port_number}"
            async with ws_connect(f"{base}/a?q=1") as ws:
                assert await ws.recv() == "v6"
            async with aiohttp_client(f"{base}/b?q=2") as aio:
                assert await aio.receive_str() == "v6"
            host = f"[::1]:{server.port_number}"
            assert seen == [(host, "/a?q=1"), (host, "/b?q=2")]

    run(main())


def pipelined_messages(count: int = 300) -> list[str | bytes]:
    """Mixed sizes and types, with a serial number so that reordering shows."""
    rng = random.Random(3)
    messages: list[str | bytes] = []
    for i in range(count):
        size = rng.choice([0, 1, 10, 100, 1000, 5000, 40000])
        if i % 2:
            messages.append(f"{i}:" + json_text(size))
        else:
            messages.append(i.to_bytes(2, "big") + random_bytes(size, seed=i))
    return messages


@pytest.mark.parametrize(
    "pair", ["websockets->tether", "aiohttp->tether", "tether->websockets", "tether->aiohttp"]
)
def test_pipelined_messages_stay_in_order(pair: str) -> None:
    """The sender does not wait for echoes: flow control on both sides, compression with
    context takeover across hundreds of messages, and ordering."""
    messages = pipelined_messages()

    async def exchange(send: Callable[[str | bytes], Awaitable[None]], recv: Any) -> None:
        async def sender() -> None:
            for message in messages:
                await send(message)

        task = asyncio.create_task(sender())
        received = [await recv() for _ in messages]
        await task
        assert received == messages

    async def main() -> None:
        if pair.endswith("->tether"):
            async with serve(tether_echo(Seen()), "127.0.0.1", 0) as server:
                if pair.startswith("websockets"):
                    async with ws_connect(url_of(server)) as ws:
                        await exchange(ws.send, ws.recv)
                else:
                    async with aiohttp_client(url_of(server), compress=15) as aio:

                        async def aio_send(message: str | bytes) -> None:
                            if isinstance(message, str):
                                await aio.send_str(message)
                            else:
                                await aio.send_bytes(message)

                        async def aio_recv() -> str | bytes:
                            return (await aio.receive()).data  # type: ignore[no-any-return]

                        await exchange(aio_send, aio_recv)
        else:
            peer = (
                websockets_server(websockets_echo(WsSeen()))
                if pair.endswith("websockets")
                else aiohttp_server(aiohttp_echo(AioSeen()))
            )
            async with peer as url, connect(url) as client:
                await exchange(client.send, client.recv)

    run(main())


class UnknownExtensionFactory(WsClientExtensionFactory):
    """A websockets client extension that no server knows: its offer must be declined."""

    name = ExtensionName("x-unknown-ext")

    def get_request_params(self) -> list[tuple[str, str | None]]:
        return [("level", "3")]

    def process_response_params(self, params: Any, accepted_extensions: Any) -> Any:
        raise WsNegotiationError("not expected in an answer")


def test_tether_server_walks_several_offers_from_websockets_client() -> None:
    """Offers in the client's order: an unknown extension (declined), then two
    permessage-deflate offers; the first acceptable one is answered, only once (RFC 7692 5:
    the server accepts at most one offer of an extension)."""
    seen = Seen()
    factories = [
        UnknownExtensionFactory(),
        WsClientDeflate(server_max_window_bits=10, client_max_window_bits=10),
        WsClientDeflate(),
    ]

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with ws_connect(url_of(server), extensions=factories, compression=None) as ws:
                assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
                assert agreed(ws.protocol.extensions[0], server=False) == Agreed(
                    False, False, 10, 10
                )
                assert ws.response is not None
                header = ws.response.headers.get_all("Sec-WebSocket-Extensions")
                assert len(header) == 1
                await ws.send(json_text(20000))
                assert await ws.recv() == json_text(20000)
        assert seen.connection is not None
        handshake = seen.connection.handshake
        assert [name for name, _ in handshake.offered_extensions] == [
            "x-unknown-ext",
            "permessage-deflate",
            "permessage-deflate",
        ]
        assert [name for name, _ in handshake.accepted_extensions] == ["permessage-deflate"]
        declined = [(name, reason) for name, _, reason in handshake.declined_extensions]
        assert declined == [
            ("x-unknown-ext", "not supported"),
            ("permessage-deflate", "already accepted"),
        ]

    run(main())


def test_tether_server_granted_8_bit_window_sends_uncompressed() -> None:
    """websockets' client may ask for server_max_window_bits=8. tether agrees but, since zlib
    cannot compress with an 8-bit raw window, sends every message uncompressed (RSV1 is per
    message, so that is always allowed); what websockets compresses is still inflated."""
    seen = Seen()
    message = json_text(200_000)

    async def main() -> None:
        async with serve(tether_echo(seen), "127.0.0.1", 0) as server:
            async with CountingProxy(server.port_number) as proxy:
                factory = WsClientDeflate(server_max_window_bits=8)
                url = f"ws://127.0.0.1:{proxy.port}/"
                async with ws_connect(url, extensions=[factory], compression=None) as ws:
                    assert agreed(ws.protocol.extensions[0], server=False) == Agreed(
                        False, False, 8, 12
                    )
                    await ws.send(message)
                    assert await ws.recv() == message
                assert proxy.upstream < 20_000  # websockets compressed
                assert proxy.downstream > 200_000  # tether did not
        assert seen.connection is not None
        assert agreed(seen.connection.extensions[0], server=True) == Agreed(False, False, 8, 12)

    run(main())
