"""The hub on both backends: order, offsets, recovery, limits, slow consumers (real sockets)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from helpers.aio import run
from helpers.hub import Client, client, hub_server
from tether import ServerConnection, serve
from tether.exceptions import HubError, InvalidChannel, MessageTooBig
from tether.extensions.permessage_deflate import PerMessageDeflate
from tether.hub import Backend, Hub, JsonCodec, MemoryBackend, Message, Signal, parse_request
from tether.limits import Limits
from tether.sansio.frames import Frame

pytestmark = pytest.mark.timeout(30)


def test_messages_arrive_in_order_with_dense_offsets(new_backend: Callable[..., Backend]) -> None:
    async def main() -> None:
        hub = Hub(new_backend())
        async with hub_server(hub) as port, client(port) as a, client(port) as b:
            for c in (a, b):
                await c.request(type="subscribe", channel="room")
            while hub.subscribers("room") < 2:
                await asyncio.sleep(0.01)
            sent = [await hub.publish("room", f"m{i}") for i in range(50)]
            assert [m.offset for m in sent] == list(range(1, 51))
            for c in (a, b):
                got = await c.pubs(50)
                assert [g["data"] for g in got] == [f"m{i}" for i in range(50)]
                assert [g["offset"] for g in got] == list(range(1, 51))
                assert {g["epoch"] for g in got} == {sent[0].epoch}
                assert {g["channel"] for g in got} == {"room"}

    run(main())


def test_binary_messages_travel_base64(new_backend: Callable[..., Backend]) -> None:
    async def main() -> None:
        hub = Hub(new_backend())
        async with hub_server(hub) as port, client(port) as a:
            await a.request(type="subscribe", channel="bin")
            while hub.subscribers("bin") < 1:
                await asyncio.sleep(0.01)
            await hub.publish("bin", b"\x00\xff")
            (got,) = await a.pubs(1)
            assert got["binary"] is True and got["data"] == "AP8="

    run(main())


def test_reconnecting_with_an_offset_gets_exactly_what_was_missed(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        hub = Hub(new_backend())
        async with hub_server(hub) as port:
            async with client(port) as a:
                await a.request(type="subscribe", channel="feed")
                while hub.subscribers("feed") < 1:
                    await asyncio.sleep(0.01)
                for i in range(3):
                    await hub.publish("feed", f"m{i}")
                seen = await a.pubs(3)
            last = seen[-1]
            for i in range(3, 10):  # missed while away
                await hub.publish("feed", f"m{i}")
            async with client(port) as a:
                await a.request(
                    type="recover", channel="feed", since=last["offset"], epoch=last["epoch"]
                )
                replay = await a.pubs(7)
                assert [r["data"] for r in replay] == [f"m{i}" for i in range(3, 10)]
                assert [r["offset"] for r in replay] == list(range(4, 11))
                while hub.subscribers("feed") < 1:
                    await asyncio.sleep(0.01)
                await hub.publish("feed", "live")
                (live,) = await a.pubs(1)
                assert (live["data"], live["offset"]) == ("live", 11)

    run(main())


def test_recovery_racing_with_live_messages_has_no_gap_and_no_duplicate(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        hub = Hub(new_backend())
        async with hub_server(hub) as port:
            first = await hub.publish("race", "m0")
            publishing = True

            async def publisher() -> None:
                i = 1
                while publishing:
                    await hub.publish("race", f"m{i}")
                    i += 1
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(publisher())
            await asyncio.sleep(0.05)
            async with client(port) as a:
                await a.request(type="recover", channel="race", since=1, epoch=first.epoch)
                got = await a.pubs(60)
            publishing = False
            await task
            assert [g["offset"] for g in got] == list(range(2, 62))
            assert [g["data"] for g in got] == [f"m{i}" for i in range(1, 61)]

    run(main())


@pytest.mark.parametrize(
    ("since", "epoch", "reason"),
    [
        (1, None, "no longer reaches back"),  # trimmed: history_size is 3
        (9, "not-the-epoch", "reset"),
        (99, None, "ahead of"),
    ],
)
def test_a_gap_that_cannot_be_filled_is_signalled(
    new_backend: Callable[..., Backend], since: int, epoch: str | None, reason: str
) -> None:
    async def main() -> None:
        hub = Hub(new_backend(history_size=3))
        async with hub_server(hub) as port:
            sent = [await hub.publish("news", f"m{i}") for i in range(10)]
            async with client(port) as a:
                await a.request(
                    type="recover", channel="news", since=since, epoch=epoch or sent[0].epoch
                )
                signal = await a.next()
                assert signal["type"] == "unrecoverable", signal
                assert reason in signal["reason"]
                assert (signal["channel"], signal["offset"]) == ("news", 10)
                while hub.subscribers("news") < 1:
                    await asyncio.sleep(0.01)
                await hub.publish("news", "after")
                (live,) = await a.pubs(1)
                assert (live["offset"], live["data"]) == (11, "after")

    run(main())


def test_missing_more_than_the_recover_limit_is_unrecoverable(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        hub = Hub(new_backend(), recover_limit=5)
        async with hub_server(hub) as port:
            sent = [await hub.publish("c", str(i)) for i in range(8)]
            async with client(port) as a:
                await a.request(type="recover", channel="c", since=3, epoch=sent[0].epoch)
                assert (await a.pubs(5))[-1]["offset"] == 8  # 5 missed: replayed
                await a.request(type="recover", channel="c", since=2, epoch=sent[0].epoch)
                signal = await a.next()
                assert signal["type"] == "unrecoverable"
                assert "more than the limit of 5" in signal["reason"]

    run(main())


def test_bad_input_is_refused(new_backend: Callable[..., Backend]) -> None:
    async def main() -> None:
        hub = Hub(new_backend(), max_message_size=100)
        async with hub_server(hub) as port:
            with pytest.raises(MessageTooBig, match="101 bytes"):
                await hub.publish("ok", "x" * 101)
            with pytest.raises(MessageTooBig):
                await hub.publish("ok", "é" * 51)  # 102 bytes in UTF-8
            await hub.publish("ok", "x" * 100)
            for name in ["", "a b", "x" * 129, "ümlaut", "a/b", None]:
                with pytest.raises(InvalidChannel, match="invalid channel name"):
                    await hub.publish(name, "x")  # type: ignore[arg-type]
            async with client(port) as a:
                for bad, expected in [
                    ("not json", "not JSON"),
                    ("[1]", "JSON object"),
                    ('{"type":"shout","channel":"ok"}', "unknown request type"),
                    ('{"type":"subscribe","channel":"a b"}', "invalid channel name"),
                    ('{"type":"recover","channel":"ok","since":-1,"epoch":"e"}', "since"),
                    ('{"type":"recover","channel":"ok","since":1}', "epoch"),
                    ('{"type":"publish","channel":"ok","data":' + '"' + "x" * 101 + '"}', "101"),
                ]:
                    await a.ws.send(bad)
                    error = await a.next()
                    assert error["type"] == "error" and expected in error["reason"], error

    run(main())


def test_an_allow_hook_refuses_channels() -> None:
    async def main() -> None:
        hub = Hub()

        def allow(ws: Any, action: str, channel: str) -> bool:
            return channel.startswith("public.") and action == "subscribe"

        async def handler(ws: ServerConnection) -> None:
            await hub.serve(ws, allow_publish=True, allow=allow)

        async with hub, serve(handler, "127.0.0.1", 0) as server:
            async with client(server.port_number) as a:
                await a.request(type="subscribe", channel="secret")
                assert (await a.next())["reason"] == "not allowed to subscribe on 'secret'"
                await a.request(type="publish", channel="public.news", data="x")
                assert "not allowed to publish" in (await a.next())["reason"]
                await a.request(type="subscribe", channel="public.news")
                while hub.subscribers("public.news") < 1:
                    await asyncio.sleep(0.01)
                await hub.publish("public.news", "hello")
                assert (await a.pubs(1))[0]["data"] == "hello"

    run(main())


def test_publishing_from_clients_is_off_unless_allowed() -> None:
    async def main() -> None:
        hub = Hub()
        async with hub_server(hub, allow_publish=False) as port, client(port) as a:
            await a.request(type="publish", channel="c", data="hi")
            error = await a.next()
            assert "not allowed" in error["reason"]

    run(main())


def test_listen_gets_messages_and_signals_without_a_websocket(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        got: list[Message | Signal] = []
        async with Hub(new_backend()) as hub:
            stop = await hub.listen("ticks", got.append)
            for i in range(5):
                await hub.publish("ticks", str(i))
            while len(got) < 5:
                await asyncio.sleep(0.01)
            stop()
            # A second listener shows when the next message has been delivered in this process.
            witness: list[Message | Signal] = []
            await hub.listen("ticks", witness.append)
            await hub.publish("ticks", "unheard")
            while not witness:
                await asyncio.sleep(0.01)
        assert [m.data for m in got if isinstance(m, Message)] == ["0", "1", "2", "3", "4"]
        assert [m.data for m in witness if isinstance(m, Message)] == ["unheard"]

    run(main())


def test_hub_errors_when_not_started() -> None:
    async def main() -> None:
        hub = Hub()
        with pytest.raises(HubError, match="not started"):
            await hub.publish("c", "x")
        with pytest.raises(ValueError, match="slow"):
            Hub(slow="never")

    run(main())


def test_wire_requests_parse() -> None:
    request = parse_request('{"type":"recover","channel":"c","since":4,"epoch":"e"}')
    assert (request.type, request.channel, request.since, request.epoch) == ("recover", "c", 4, "e")
    assert parse_request('{"type":"subscribe","channel":"c","since":4}').since is None
    with pytest.raises(HubError, match="since"):
        parse_request('{"type":"recover","channel":"c","since":true,"epoch":"e"}')


def test_memory_history_age_refuses_old_messages() -> None:
    now = [0.0]

    async def main() -> None:
        backend = MemoryBackend(history_age=10, clock=lambda: now[0])
        async with Hub(backend) as hub:
            first = await hub.publish("c", "old")
            now[0] = 5
            assert (await backend.history("c", 0, first.epoch, 10)).complete
            now[0] = 11
            history = await backend.history("c", 0, first.epoch, 10)
            assert not history.complete and "history_age" in (history.reason or "")

    run(main())


# --- slow consumers -------------------------------------------------------------------------


def _raw_subscriber(port: int, channel: str) -> socket.socket:
    """A client that subscribes, then never reads: a tiny receive buffer, no reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "subscribe", "channel": channel}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


@pytest.mark.parametrize("policy", ["skip", "drop"])
def test_a_slow_client_is_skipped_or_dropped_while_others_get_everything(
    new_backend: Callable[..., Backend], policy: str
) -> None:
    count, size = 300, 32 * 1024
    limits = Limits(write_high_water=64 * 1024, write_low_water=16 * 1024)

    async def main() -> dict[str, Any]:
        hub = Hub(new_backend(history_size=count), slow=policy, max_message_size=2 * size)
        async with hub_server(hub, limits=limits) as port, client(port) as a, client(port) as b:
            slow = await asyncio.to_thread(_raw_subscriber, port, "fire")
            for c in (a, b):
                await c.request(type="subscribe", channel="fire")
            while hub.subscribers("fire") < 3:
                await asyncio.sleep(0.01)
            slow_port = slow.getsockname()[1]
            (server_side,) = [
                c for c in hub._channels["fire"].live if c.remote_address[1] == slow_port
            ]
            peak = 0

            async def readers(c: Client) -> list[int]:
                return [g["offset"] for g in await c.pubs(count)]

            reading = [asyncio.create_task(readers(c)) for c in (a, b)]
            for i in range(count):
                await hub.publish("fire", f"{i:08d}" + "x" * size)
                if server_side.transport is not None:
                    peak = max(peak, server_side.transport.get_write_buffer_size())
                await asyncio.sleep(0)
            offsets = await asyncio.gather(*reading)
            result = {
                "offsets": offsets,
                "peak": peak,
                "state": server_side.state.name,
                "close_sent": server_side.protocol.close_sent,
            }
            slow.close()
            return result

    result = run(main())
    for offsets in result["offsets"]:
        assert offsets == list(range(1, count + 1))  # the fast ones got everything, in order
    # The slow one reached its high-water mark (so the policy applied to it) and never held
    # more than one message beyond it.
    assert limits.write_high_water < result["peak"] <= limits.write_high_water + size + 64
    if policy == "drop":
        assert result["state"] in ("CLOSING", "CLOSED")
        assert result["close_sent"] is not None and result["close_sent"].code == 1008


def test_wait_policy_delivers_everything_to_a_client_that_reads_slowly() -> None:
    async def main() -> None:
        hub = Hub(slow="wait")
        limits = Limits(write_high_water=4096, write_low_water=1024)
        async with hub_server(hub, limits=limits) as port, client(port) as a:
            await a.request(type="subscribe", channel="w")
            while hub.subscribers("w") < 1:
                await asyncio.sleep(0.01)

            async def publish() -> None:
                for i in range(100):
                    await hub.publish("w", f"{i:04d}" + "y" * 2000)

            task = asyncio.create_task(publish())
            got = []
            for _ in range(100):
                got.append((await a.pubs(1))[0]["offset"])
                await asyncio.sleep(0.001)
            await task
            assert got == list(range(1, 101))

    run(main())


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def test_the_hub_uses_compress_once_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two compressed subscribers share one encoding when the server keeps no compression
    context between messages (``compression="small"``: server_no_context_takeover)."""
    payloads: list[str | bytes] = []
    # What Protocol._encode calls for each extension when it frames a message to share (the
    # protocol itself may be compiled with mypyc, whose methods cannot be patched).
    encode = PerMessageDeflate.encode_for_broadcast

    def counting(self: PerMessageDeflate, frame: Frame) -> Frame:
        payloads.append(bytes(frame.data).decode())
        return encode(self, frame)

    monkeypatch.setattr(PerMessageDeflate, "encode_for_broadcast", counting)

    async def main() -> None:
        hub = Hub()

        async def handler(ws: ServerConnection) -> None:
            await hub.serve(ws)

        async with hub, serve(handler, "127.0.0.1", 0, compression="small") as server:
            from tether import connect

            port = server.port_number
            async with (
                connect(f"ws://127.0.0.1:{port}/") as w1,
                connect(f"ws://127.0.0.1:{port}/") as w2,
            ):
                for ws in (w1, w2):
                    await ws.send('{"type":"subscribe","channel":"z"}')
                while hub.subscribers("z") < 2:
                    await asyncio.sleep(0.01)
                await hub.publish("z", "hello " * 100)
                for ws in (w1, w2):
                    got = json.loads(await ws.recv())
                    assert got["data"] == "hello " * 100
                    assert ws.extensions  # permessage-deflate was agreed

    run(main())
    # The message was framed (and compressed) once for both subscribers.
    framed = [p for p in payloads if isinstance(p, str) and '"data":"hello ' in p]
    assert len(framed) == 1, framed
    assert json.loads(framed[0])["data"] == "hello " * 100


def test_unsubscribing_and_subscribing_again_at_once_keeps_delivering(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        hub = Hub(new_backend())
        async with hub_server(hub) as port, client(port) as a:
            for i in range(5):
                await a.request(type="subscribe", channel="flip")
                await a.request(type="unsubscribe", channel="flip")
                await a.request(type="subscribe", channel="flip")
                while hub.subscribers("flip") < 1:
                    await asyncio.sleep(0.005)
                sent = await hub.publish("flip", f"round {i}")
                (got,) = await a.pubs(1)
                assert (got["data"], got["offset"]) == (f"round {i}", sent.offset)
                await a.request(type="unsubscribe", channel="flip")
                while hub.subscribers("flip") > 0:
                    await asyncio.sleep(0.005)

    run(main())


def test_a_connection_that_closed_without_unsubscribing_is_forgotten() -> None:
    async def main() -> None:
        hub = Hub()

        async def handler(ws: ServerConnection) -> None:
            await hub.subscribe(ws, "c")  # and never unsubscribe
            await ws.wait_closed()

        async with hub, serve(handler, "127.0.0.1", 0) as server:
            from tether import connect

            async with connect(f"ws://127.0.0.1:{server.port_number}/") as ws:
                while hub.subscribers("c") < 1:
                    await asyncio.sleep(0.01)
                await hub.publish("c", "open")
                assert json.loads(await ws.recv())["data"] == "open"
            (connection,) = hub._channels["c"].live
            await connection.wait_closed()
            assert hub.subscribers("c") == 1
            await hub.publish("c", "closed")
            assert hub.subscribers("c") == 0
            assert hub.delivered == 1

    run(main())


def test_offsets_that_jump_in_live_delivery_are_signalled() -> None:
    """A process that fell behind the history's trimming tells its subscribers which offsets
    it could not deliver (the hub's side of the backend contract)."""

    async def main() -> list[Message | Signal]:
        got: list[Message | Signal] = []
        async with Hub() as hub:
            await hub.listen("lag", got.append)
            epoch = hub._channels["lag"].epoch
            for offset in (1, 2, 5, 5, 6):
                await hub.deliver(Message("lag", offset, epoch, str(offset)))
            await hub.deliver(Message("lag", 1, "new-epoch", "after reset"))
        return got

    got = run(main())
    assert [(type(g).__name__, getattr(g, "offset", None)) for g in got] == [
        ("Message", 1),
        ("Message", 2),
        ("Signal", 4),
        ("Message", 5),
        ("Message", 6),
        ("Signal", 0),
        ("Message", 1),
    ]
    gap, reset = (g for g in got if isinstance(g, Signal))
    assert gap.kind == "unrecoverable" and "offsets 3 to 4 were trimmed" in (gap.reason or "")
    assert reset.kind == "unrecoverable" and reset.epoch == "new-epoch"


def test_a_message_the_codec_cannot_frame_does_not_stop_delivery(
    new_backend: Callable[..., Backend], caplog: pytest.LogCaptureFixture
) -> None:
    class Picky(JsonCodec):
        def message(self, message: Message) -> str:
            if message.data == "poison":
                raise ValueError("cannot frame this")
            return super().message(message)

    async def main() -> None:
        hub = Hub(new_backend(), codec=Picky())
        async with hub_server(hub) as port, client(port) as a:
            await a.request(type="subscribe", channel="p")
            while hub.subscribers("p") < 1:
                await asyncio.sleep(0.01)
            for data in ("one", "poison", "three"):
                await hub.publish("p", data)
            got = await a.pubs(2)
            assert [(g["offset"], g["data"]) for g in got] == [(1, "one"), (3, "three")]

    run(main())
    assert "cannot deliver offset 2 of p" in caplog.text


def test_missed_messages_older_than_history_age_are_not_replayed(
    new_backend: Callable[..., Backend],
) -> None:
    async def main() -> None:
        hub = Hub(new_backend(history_age=0.2))
        async with hub_server(hub) as port:
            first = await hub.publish("aged", "old")
            await asyncio.sleep(0.4)
            await hub.publish("aged", "new")
            async with client(port) as a:
                await a.request(type="recover", channel="aged", since=1, epoch=first.epoch)
                assert (await a.pubs(1))[0]["data"] == "new"  # 0.0 s old: replayed
                await a.request(type="recover", channel="aged", since=0, epoch=first.epoch)
                signal = await a.next()
                assert signal["type"] == "unrecoverable" and "history_age" in signal["reason"]

    run(main())
