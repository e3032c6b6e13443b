"""broadcast() and broadcast_and_wait() on connections with recording transports: which path
each connection takes (the fast path writes its group's frame straight to the transport; the
general one goes through ``Connection.send_encoded``), and that both put the same bytes on the
wire, in order, with the slow-consumer policies, counting and logging of before.

The end-to-end behaviour over real sockets is in test_connection.py and test_api.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from helpers.aio import run
from tether import Limits, broadcast, broadcast_and_wait
from tether.asyncio.connection import Connection
from tether.extensions.permessage_deflate import PerMessageDeflate
from tether.sansio.events import BinaryMessage, Pong, TextMessage
from tether.sansio.protocol import Protocol, Side, State

pytestmark = pytest.mark.timeout(30)


class RecordingTransport(asyncio.Transport):
    """Keeps every write; ``pause_above`` bytes in total make it pause its protocol."""

    def __init__(self, protocol: Connection, pause_above: int | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.writes: list[bytes] = []
        self.closing = False
        self.pause_above = pause_above

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        total = sum(map(len, self.writes))
        if self.pause_above is not None and total > self.pause_above:
            self.protocol.pause_writing()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.writes.append(b"")  # EOF marker

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def connection(
    side: Side = Side.SERVER,
    *,
    deflate: PerMessageDeflate | None = None,
    limits: Limits | None = None,
    pause_above: int | None = None,
) -> tuple[Connection, RecordingTransport]:
    protocol = Protocol(side, state=State.OPEN, limits=limits)
    if deflate is not None:
        protocol.extensions = [deflate]
    conn = Connection(protocol, ping_interval=None)
    transport = RecordingTransport(conn, pause_above)
    conn.connection_made(transport)
    return conn, transport


def no_takeover() -> PerMessageDeflate:
    # (remote_no_context_takeover, local_no_context_takeover, remote bits, local bits)
    return PerMessageDeflate(False, True, 15, 15)


def received(transport: RecordingTransport, side: Side = Side.SERVER, **kw: Any) -> list[object]:
    """What the peer of a connection on ``side`` reads from everything written."""
    peer = Protocol(Side.CLIENT if side is Side.SERVER else Side.SERVER, state=State.CLOSED)
    if "deflate" in kw:
        peer.extensions = [kw["deflate"]]
    peer._state = State.OPEN
    peer._start_frames()
    peer.receive_data(b"".join(transport.writes))
    return list(peer.events_received())


@pytest.fixture
def general_path(monkeypatch: pytest.MonkeyPatch) -> list[Connection]:
    """The connections that went through Connection.send_encoded (the general path)."""
    calls: list[Connection] = []
    original = Connection.send_encoded

    def spy(self: Connection, encoded: Any) -> None:
        calls.append(self)
        original(self, encoded)

    monkeypatch.setattr(Connection, "send_encoded", spy)
    return calls


def test_fast_path_writes_the_shared_frame_straight_to_the_transport(
    general_path: list[Connection],
) -> None:
    async def main() -> None:
        pairs = [connection() for _ in range(3)]
        assert broadcast([c for c, _ in pairs], "hello") == 3
        assert broadcast([c for c, _ in pairs], b"\x00\x01") == 3
        for conn, transport in pairs:
            assert transport.writes == [b"\x81\x05hello", b"\x82\x02\x00\x01"]
            assert conn.protocol.data_to_send() == []
        assert general_path == []

    run(main())


def test_general_path_for_a_connection_that_frames_the_message_itself(
    general_path: list[Connection],
) -> None:
    async def main() -> None:
        plain, plain_t = connection()
        client, client_t = connection(Side.CLIENT)  # masks every frame: no shared encoding
        split, split_t = connection(limits=Limits(max_outgoing_frame_size=4))
        assert broadcast([plain, client, split], "fragmented") == 3
        assert general_path == [client, split]
        assert plain_t.writes == [b"\x81\x0afragmented"]
        assert received(client_t, Side.CLIENT) == [TextMessage("fragmented")]
        assert len(split_t.writes) == 3  # 4 + 4 + 2 bytes
        assert received(split_t) == [TextMessage("fragmented")]

    run(main())


def test_general_path_keeps_the_debug_log_line(
    general_path: list[Connection], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        quiet, quiet_t = connection()
        loud, loud_t = connection()
        loud.protocol.debug = True
        with caplog.at_level(logging.DEBUG, logger="tether"):
            assert broadcast([quiet, loud], "hi") == 2
        assert general_path == [loud]
        assert quiet_t.writes == loud_t.writes == [b"\x81\x02hi"]
        (record,) = caplog.records
        assert record.getMessage().endswith("> pre-encoded message, 4 bytes")

    run(main())


def test_general_path_writes_queued_output_first(general_path: list[Connection]) -> None:
    async def main() -> None:
        conn, transport = connection()
        conn.protocol.send_pong(b"q")  # queued in the protocol, not yet written
        assert broadcast([conn], "after") == 1
        assert general_path == [conn]
        assert received(transport) == [Pong(b"q"), TextMessage("after")]

    run(main())


def test_compressed_once_per_group(
    monkeypatch: pytest.MonkeyPatch, general_path: list[Connection]
) -> None:
    calls = 0
    original = PerMessageDeflate.compress_message

    def spy(self: PerMessageDeflate, data: Any) -> bytes:
        nonlocal calls
        calls += 1
        return original(self, data)

    monkeypatch.setattr(PerMessageDeflate, "compress_message", spy)

    async def main() -> None:
        compressed = [connection(deflate=no_takeover()) for _ in range(3)]
        plain = [connection() for _ in range(2)]
        everyone = [c for c, _ in compressed + plain]
        message = b"compress me once " * 20
        assert broadcast(everyone, message) == 5
        assert calls == 1
        assert general_path == []
        for _, transport in compressed:
            assert len(transport.writes[0]) < len(message)
            assert received(transport, deflate=no_takeover()) == [BinaryMessage(message)]
        for _, transport in plain:
            assert received(transport) == [BinaryMessage(message)]

    run(main())


def test_left_out_connections_are_not_counted(general_path: list[Connection]) -> None:
    async def main() -> None:
        sending, sending_t = connection()
        sending.protocol.send_text("start", fin=False)  # mid-fragmented message
        sending._flush()
        closing, closing_t = connection()
        closing_t.closing = True  # lost, connection_lost() not run yet
        closed, closed_t = connection()
        closed.protocol.send_close(1000)
        closed._flush()
        unborn = Connection(Protocol(Side.SERVER, state=State.OPEN), ping_interval=None)
        ok, ok_t = connection()
        before = [list(t.writes) for t in (sending_t, closing_t, closed_t)]
        assert broadcast([sending, closing, closed, unborn, ok], "x") == 1
        assert [t.writes for t in (sending_t, closing_t, closed_t)] == before
        assert ok_t.writes == [b"\x81\x01x"]
        assert general_path == []

    run(main())


@pytest.mark.parametrize("policy", ["skip", "drop"])
def test_slow_policy(policy: str) -> None:
    async def main() -> None:
        slow, slow_t = connection()
        slow.pause_writing()
        fast, fast_t = connection()
        assert broadcast([slow, fast], "x", slow=policy) == 1  # type: ignore[arg-type]
        assert fast_t.writes == [b"\x81\x01x"]
        if policy == "skip":
            assert slow_t.writes == []
            assert slow.state is State.OPEN
        else:
            close = slow.protocol.close_sent
            assert close is not None and close.code == 1008
            assert slow_t.writes[0].startswith(b"\x88")  # the close frame, then EOF

    run(main())


def test_wait_writes_to_slow_connections_and_waits_for_them() -> None:
    async def main() -> None:
        slow, slow_t = connection()
        slow.pause_writing()  # above the mark before the message
        filling, filling_t = connection(pause_above=3)  # goes above it with the message
        fast, fast_t = connection()
        task = asyncio.create_task(broadcast_and_wait([slow, filling, fast], "hello"))
        await asyncio.sleep(0)
        assert not task.done()
        assert slow_t.writes == filling_t.writes == fast_t.writes == [b"\x81\x05hello"]
        slow.resume_writing()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for the other one
        filling.resume_writing()
        assert await task == 3

    run(main())


def test_wait_does_not_wait_for_connections_below_the_mark() -> None:
    async def main() -> None:
        pairs = [connection() for _ in range(2)]
        assert await broadcast_and_wait([c for c, _ in pairs], "x", timeout=5) == 2

    run(main())


def test_wait_gives_up_after_the_timeout() -> None:
    async def main() -> None:
        stuck, stuck_t = connection()
        stuck.pause_writing()  # never resumes
        assert await broadcast_and_wait([stuck], "x", timeout=0.01) == 1
        assert stuck_t.writes == [b"\x81\x01x"]  # written; only the wait was given up
        assert stuck.writing_paused

    run(main())
