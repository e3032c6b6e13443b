"""The message budget (``Protocol.set_message_budget``): a bound on the whole messages parsed
ahead of the application, with the rest of the input kept buffered and parsed when the budget
is raised (the ASGI layer's ``ws_max_queue``)."""

from __future__ import annotations

from tether.sansio.codes import Opcode
from tether.sansio.events import BinaryMessage, CloseReceived, Ping, TextMessage
from tether.sansio.frames import Close, Frame, serialize_frame
from tether.sansio.http11 import Request
from tether.sansio.protocol import Protocol, Side, State
from tether.sansio.server import ServerProtocol


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return serialize_frame(Frame(opcode, data, fin), mask=True)


def texts(n: int, start: int = 0) -> bytes:
    return b"".join(masked(Opcode.TEXT, f"m{i}".encode()) for i in range(start, start + n))


def test_no_budget_by_default_parses_everything() -> None:
    protocol = Protocol(Side.SERVER)
    assert protocol.message_budget is None and not protocol.parsing_stopped
    protocol.receive_data(texts(5))
    assert len(protocol.events_received()) == 5
    assert protocol.message_budget is None and not protocol.parsing_stopped


def test_parsing_stops_after_the_budget_and_resumes_when_it_is_raised() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(3)
    protocol.receive_data(texts(10))
    assert protocol.events_received() == [TextMessage(f"m{i}") for i in range(3)]
    assert protocol.parsing_stopped and protocol.message_budget == 0
    rest = len(texts(7, 3))
    assert protocol.buffered == rest  # kept, unparsed
    # More input while stopped is buffered, not parsed.
    protocol.receive_data(texts(2, 10))
    assert protocol.events_received() == []
    assert protocol.buffered == rest + len(texts(2, 10))
    # Raising the budget parses at once, up to the new budget.
    protocol.set_message_budget(4)
    assert protocol.events_received() == [TextMessage(f"m{i}") for i in range(3, 7)]
    assert protocol.parsing_stopped
    protocol.set_message_budget(None)
    assert protocol.events_received() == [TextMessage(f"m{i}") for i in range(7, 12)]
    assert not protocol.parsing_stopped and protocol.buffered == 0


def test_budget_counts_whole_messages_not_frames() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(1)
    data = masked(Opcode.BINARY, b"a", fin=False) + masked(Opcode.PING, b"p")
    data += masked(Opcode.CONT, b"b") + masked(Opcode.BINARY, b"c")
    protocol.receive_data(data)
    # The ping inside the fragmented message is handled; parsing stops after the message.
    assert protocol.events_received() == [Ping(b"p"), BinaryMessage(b"ab")]
    assert protocol.parsing_stopped
    protocol.set_message_budget(1)
    assert protocol.events_received() == [BinaryMessage(b"c")]
    assert protocol.message_budget == 0


def test_a_budget_that_is_not_spent_stays_open() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(10)
    protocol.receive_data(texts(4))
    assert len(protocol.events_received()) == 4
    assert protocol.message_budget == 6 and not protocol.parsing_stopped
    protocol.set_message_budget(2)  # lowered while running: no parsing to do
    assert protocol.events_received() == [] and not protocol.parsing_stopped


def test_a_zero_budget_stops_parsing_before_any_message() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(0)
    assert protocol.parsing_stopped
    protocol.receive_data(texts(2))
    assert protocol.events_received() == []
    protocol.set_message_budget(-1)  # still nothing allowed
    assert protocol.events_received() == [] and protocol.parsing_stopped
    protocol.set_message_budget(1)
    assert protocol.events_received() == [TextMessage("m0")]


def test_frames_behind_the_budget_are_not_seen_until_it_is_raised() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(1)
    protocol.receive_data(texts(1) + masked(Opcode.PING, b"late") + masked(Opcode.CLOSE, b""))
    assert protocol.events_received() == [TextMessage("m0")]
    assert protocol.data_to_send() == []
    assert protocol.state is State.OPEN
    protocol.set_message_budget(1)
    events = protocol.events_received()
    assert events[0] == Ping(b"late") and isinstance(events[1], CloseReceived)
    assert protocol.state is State.CLOSING  # type: ignore[comparison-overlap]


def test_eof_lifts_the_budget_so_a_buffered_close_counts() -> None:
    protocol = Protocol(Side.SERVER)
    protocol.set_message_budget(1)
    close = masked(Opcode.CLOSE, Close(1001, "bye").serialize())
    protocol.receive_data(texts(3) + close)
    assert len(protocol.events_received()) == 1
    protocol.receive_eof()
    events = protocol.events_received()
    assert events[:2] == [TextMessage("m1"), TextMessage("m2")]
    assert isinstance(events[2], CloseReceived)
    assert protocol.message_budget is None and not protocol.parsing_stopped
    assert protocol.state is State.CLOSED and protocol.close_code == 1001


def test_a_budget_set_during_the_handshake_applies_to_frames_that_came_with_it() -> None:
    server = ServerProtocol()
    server.set_message_budget(0)
    request = (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    server.receive_data(request + texts(3))
    (event,) = server.events_received()
    assert isinstance(event, Request)
    server.set_message_budget(2)  # before the parser exists: nothing to parse yet
    assert not server.parsing_stopped
    server.send_response(server.accept(event))
    assert server.events_received() == [TextMessage("m0"), TextMessage("m1")]
    assert server.parsing_stopped
