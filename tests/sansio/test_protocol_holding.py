"""Holding the end behind unread messages (``hold_end_after_message``).

The asyncio layer turns this on: every frame is parsed at once (pings answered, pongs matched),
but a close frame or a peer error found behind a message the application has not taken is held
until :meth:`Protocol.caught_up`, so that the answer to that message goes out first, as the
Autobahn Testsuite expects of a strict implementation (cases 3.2-3.4, 4.1.3-4.2.5, 5.15).
"""

from __future__ import annotations

from tether.sansio.codes import Opcode
from tether.sansio.events import CloseReceived, Fragment, Ping, Pong
from tether.sansio.frames import Close, Frame, FrameParser, serialize_frame
from tether.sansio.protocol import Protocol, Side, State


def masked(opcode: Opcode, data: bytes, fin: bool = True, rsv2: bool = False) -> bytes:
    return serialize_frame(Frame(opcode, data, fin, rsv2=rsv2), mask=True)


def sent_frames(protocol: Protocol) -> list[Frame]:
    """The frames ``protocol`` wrote (masked when it is a client)."""
    parser = FrameParser(mask_expected=protocol.side is Side.CLIENT)
    for data in protocol.data_to_send():
        parser.feed(data)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    return frames


def server() -> Protocol:
    protocol = Protocol(Side.SERVER, assemble=False)
    protocol.hold_end_after_message = True
    return protocol


def test_error_behind_a_message_is_held_until_the_application_caught_up() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.TEXT, b"Hello") + masked(Opcode.TEXT, b"bad", rsv2=True))
    assert protocol.events_received() == [Fragment("Hello", True, True)]
    assert protocol.holding and protocol.state is State.OPEN
    assert protocol.data_to_send() == []
    assert protocol.buffered == 0  # what follows an error is dropped at once
    protocol.send_text("Hello")  # the application echoes first
    protocol.caught_up()  # then asks for the next message
    frames = sent_frames(protocol)
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert Close.parse(frames[1].data).code == 1002
    assert not protocol.holding


def test_without_holding_the_error_is_acted_on_at_once() -> None:
    protocol = Protocol(Side.SERVER, assemble=False)
    protocol.receive_data(masked(Opcode.TEXT, b"Hello") + masked(Opcode.TEXT, b"bad", rsv2=True))
    assert [f.opcode for f in sent_frames(protocol)] == [Opcode.CLOSE]


def test_an_error_with_nothing_unread_before_it_is_acted_on_at_once() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.TEXT, b"Hello"))
    protocol.events_received()
    protocol.caught_up()
    protocol.receive_data(masked(Opcode.TEXT, b"bad", rsv2=True))
    assert not protocol.holding
    assert [f.opcode for f in sent_frames(protocol)] == [Opcode.CLOSE]


def test_data_pings_and_pongs_behind_a_message_are_handled_at_once() -> None:
    protocol = server()
    protocol.send_ping(b"k")
    protocol.data_to_send()
    protocol.receive_data(
        masked(Opcode.TEXT, b"a", fin=False)
        + masked(Opcode.PING, b"p")
        + masked(Opcode.CONT, b"b", fin=True)
        + masked(Opcode.BINARY, b"c")
        + masked(Opcode.PING, b"q")
        + masked(Opcode.PONG, b"k")
    )
    assert protocol.events_received() == [
        Fragment("a", True, False),
        Ping(b"p"),
        Fragment("b", False, True),
        Fragment(b"c", True, True),
        Ping(b"q"),
        Pong(b"k", (b"k",)),
    ]
    assert [(f.opcode, f.data) for f in sent_frames(protocol)] == [
        (Opcode.PONG, b"p"),
        (Opcode.PONG, b"q"),
    ]


def test_a_close_behind_messages_is_held_then_answered() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.TEXT, b"1") + masked(Opcode.CLOSE, b"\x03\xe8"))
    assert protocol.events_received() == [Fragment("1", True, True)]
    assert protocol.holding and protocol.close_rcvd is None
    protocol.caught_up()
    (event,) = protocol.events_received()
    assert isinstance(event, CloseReceived) and event.close.code == 1000
    assert [f.opcode for f in sent_frames(protocol)] == [Opcode.CLOSE]
    assert protocol.close_rcvd_then_sent is True


def test_closing_acts_on_a_held_close() -> None:
    protocol = server()
    protocol.receive_data(
        masked(Opcode.TEXT, b"1") + masked(Opcode.TEXT, b"2") + masked(Opcode.CLOSE, b"\x03\xe8")
    )
    assert protocol.events_received() == [Fragment("1", True, True), Fragment("2", True, True)]
    protocol.send_close(1000)
    (event,) = protocol.events_received()
    assert isinstance(event, CloseReceived) and event.close.code == 1000
    assert protocol.close_rcvd_then_sent is False


def test_eof_acts_on_a_held_close() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.TEXT, b"1") + masked(Opcode.CLOSE, b"\x0f\xa0bye"))
    protocol.events_received()
    protocol.receive_eof()
    assert protocol.close_rcvd == Close(4000, "bye")
    assert protocol.close_code == 4000


def test_an_invalid_held_close_fails_with_1002() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.TEXT, b"1") + masked(Opcode.CLOSE, b"\x03"))
    protocol.events_received()
    protocol.caught_up()
    assert Close.parse(sent_frames(protocol)[0].data).code == 1002


def test_buffered_counts_unparsed_bytes() -> None:
    protocol = server()
    second = masked(Opcode.BINARY, b"x" * 100)
    protocol.receive_data(masked(Opcode.BINARY, b"1") + second[:50])
    assert protocol.buffered == 50
    protocol.receive_data(second[50:])
    assert protocol.buffered == 0


def test_pongs_deferred_while_the_output_is_full_answer_only_the_latest_ping() -> None:
    protocol = server()
    protocol.pause_output()
    protocol.receive_data(b"".join(masked(Opcode.PING, b"%d" % i) for i in range(1000)))
    assert protocol.data_to_send() == []
    assert protocol.pong_due == b"999"
    assert protocol.resume_output() is True
    assert [(f.opcode, f.data) for f in sent_frames(protocol)] == [(Opcode.PONG, b"999")]
    assert protocol.resume_output() is False
    assert protocol.data_to_send() == []


def test_a_deferred_pong_is_dropped_once_the_connection_is_not_open() -> None:
    protocol = server()
    protocol.pause_output()
    protocol.receive_data(masked(Opcode.PING, b"late"))
    protocol.fail(1011, "gone")
    protocol.data_to_send()
    assert protocol.resume_output() is False
    assert protocol.data_to_send() == []


def test_a_failure_drops_the_partial_frame_at_once() -> None:
    protocol = server()
    protocol.receive_data(masked(Opcode.BINARY, b"x" * 10000)[:5000])
    assert protocol.buffered == 5000
    protocol.fail(1011, "bye")
    assert protocol.buffered == 0


# --- UTF-8 validated while a text frame arrives (Autobahn 6.4.3, 6.4.4) ----------------------


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    protocol = Protocol(Side.SERVER)
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"  # U+110000 is out of range
    raw = masked(Opcode.TEXT, payload)
    cut = len(raw) - len(payload) + 10  # header + the valid part
    protocol.receive_data(raw[:cut])
    assert protocol.data_to_send() == []
    protocol.receive_data(raw[cut : cut + 2])  # F4 90: already impossible
    frames = sent_frames(protocol)
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    assert Close.parse(frames[0].data).code == 1007


def test_invalid_utf8_in_a_continuation_frame_still_arriving() -> None:
    protocol = Protocol(Side.CLIENT)
    first = serialize_frame(Frame(Opcode.TEXT, b"ok \xce", fin=False), mask=False)
    cont = serialize_frame(Frame(Opcode.CONT, b"\xbaX\xff" + b"y" * 200), mask=False)
    protocol.receive_data(first + cont[:6])  # header (4 bytes) + CE's continuation + "X"
    assert protocol.data_to_send() == []
    protocol.receive_data(cont[6:7])  # FF
    frames = sent_frames(protocol)
    assert Close.parse(frames[0].data).code == 1007


def test_valid_text_arriving_byte_by_byte_is_accepted() -> None:
    protocol = Protocol(Side.SERVER)
    text = "héllo wörld €𝄞" * 20
    for byte in masked(Opcode.TEXT, text.encode()):
        protocol.receive_data(bytes([byte]))
    (event,) = protocol.events_received()
    assert event.data == text  # type: ignore[union-attr]
    assert protocol.data_to_send() == []


def test_surrogate_prefix_in_an_incomplete_frame_fails() -> None:
    protocol = Protocol(Side.SERVER)
    raw = masked(Opcode.TEXT, b"ab\xed\xa0\x80cd")
    protocol.receive_data(raw[: len(raw) - 3])  # ... ED A0
    assert Close.parse(sent_frames(protocol)[0].data).code == 1007


def test_message_limit_wins_over_utf8_whatever_the_chunking() -> None:
    from tether.limits import Limits

    raw = masked(Opcode.TEXT, b"\xff" + b"x" * 200)
    results = []
    for chunk in (len(raw), 7):
        protocol = Protocol(Side.SERVER, limits=Limits(max_message_size=100))
        for start in range(0, len(raw), chunk):
            protocol.receive_data(raw[start : start + chunk])
        results.append(Close.parse(sent_frames(protocol)[0].data).code)
    assert results == [1009, 1009]


def test_holding_frees_the_message_in_progress_at_once() -> None:
    protocol = Protocol(Side.SERVER)  # assembles messages: the fragments are kept
    protocol.hold_end_after_message = True
    protocol.receive_data(
        masked(Opcode.TEXT, b"1")
        + masked(Opcode.BINARY, b"x" * 1000, fin=False)
        + masked(Opcode.CLOSE, b"\x03\xe8")
    )
    assert protocol.holding
    assert (protocol._message.opcode, protocol._message.size) == (None, 0)
    protocol.caught_up()
    assert protocol.close_rcvd == Close(1000, "")
