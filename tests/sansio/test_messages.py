"""IncomingMessage: fragments assembled, sizes counted, UTF-8 checked as it arrives."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.exceptions import PayloadTooBig
from tether.sansio.codes import Opcode
from tether.sansio.events import BinaryMessage, Fragment, TextMessage
from tether.sansio.frames import FrameParser
from tether.sansio.messages import IncomingMessage, decode_fragment

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


def feed(
    message: IncomingMessage, pieces: list[bytes], opcode: Opcode, assemble: bool
) -> list[TextMessage | BinaryMessage | Fragment]:
    events: list[TextMessage | BinaryMessage | Fragment] = []
    size = 0
    for i, piece in enumerate(pieces):
        size += len(piece)
        fin = i == len(pieces) - 1
        event = message.receive(opcode if i == 0 else CONT, False, piece, size, fin, assemble)
        if event is not None:
            events.append(event)
    return events


def test_text_in_three_fragments_is_one_message() -> None:
    message = IncomingMessage()
    events = feed(message, [b"caf", b"\xc3", b"\xa9!"], TEXT, assemble=True)
    assert events == [TextMessage("café!")]
    assert message.opcode is None and message.size == 0 and message.decoder is None


def test_binary_in_fragments_is_one_message() -> None:
    message = IncomingMessage()
    assert feed(message, [b"\x00\xff", b"", b"\x80"], BINARY, assemble=True) == [
        BinaryMessage(b"\x00\xff\x80")
    ]


def test_without_assembling_each_fragment_is_an_event() -> None:
    message = IncomingMessage()
    events = feed(message, [b"caf", b"\xc3", b"\xa9!"], TEXT, assemble=False)
    assert events == [
        Fragment("caf", True, False),
        Fragment("", False, False),
        Fragment("é!", False, True),
    ]


def test_state_while_in_progress() -> None:
    message = IncomingMessage()
    assert message.receive(TEXT, True, b"ab", 2, False, True) is None
    assert (message.opcode, message.compressed, message.size) == (TEXT, True, 2)
    assert message.decoder is not None
    message.reset()
    assert message.opcode is None and message.size == 0 and message.decoder is None
    # A new message starts from scratch after a reset.
    assert feed(message, [b"x", b"y"], BINARY, assemble=True) == [BinaryMessage(b"xy")]


def test_invalid_utf8_fails_on_the_fragment_that_breaks_it() -> None:
    message = IncomingMessage()
    message.receive(TEXT, False, b"ok", 2, False, True)
    with pytest.raises(UnicodeDecodeError):
        message.receive(CONT, False, b"\xff", 3, False, True)


def test_a_surrogate_prefix_fails_before_the_next_fragment() -> None:
    # CPython's decoder would keep ED A0 pending; it can never become valid UTF-8.
    with pytest.raises(UnicodeDecodeError):
        decode_fragment(codecs.getincrementaldecoder("utf-8")(), b"a\xed\xa0", False)
    # ED 9F is the last valid prefix there (U+D7FF).
    assert decode_fragment(codecs.getincrementaldecoder("utf-8")(), b"a\xed\x9f", False) == "a"


def test_an_incomplete_character_at_the_end_fails() -> None:
    message = IncomingMessage()
    message.receive(TEXT, False, b"a", 1, False, True)
    with pytest.raises(UnicodeDecodeError):
        message.receive(CONT, False, b"\xc3", 2, True, True)


@given(st.text(), st.lists(st.integers(0, 40), max_size=6), st.booleans())
def test_any_split_of_valid_text_gives_the_text(text: str, cuts: list[int], assemble: bool) -> None:
    data = text.encode()
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    if len(pieces) < 2:
        pieces.append(b"")
    events = feed(IncomingMessage(), pieces, TEXT, assemble)
    if assemble:
        assert events == [TextMessage(text)]
    else:
        assert "".join(str(event.data) for event in events) == text


# --- check_partial: a data frame whose payload is still arriving ----------------------------


def partial(opcode: int, payload: bytes, length: int, fin: bool = True) -> FrameParser:
    """A client-side parser holding the header of an unmasked frame and part of its payload."""
    parser = FrameParser(mask_expected=False)
    assert length >= 126
    header = bytes([(0x80 if fin else 0) | opcode, 126]) + length.to_bytes(2, "big")
    parser.feed(header + payload)
    assert parser.next_frame() is None
    assert parser.pending_frame() is not None
    return parser


def test_partial_text_frame_with_invalid_utf8_fails_now() -> None:
    message = IncomingMessage()
    with pytest.raises(UnicodeDecodeError):
        message.check_partial(partial(0x1, b"x" * 50 + b"\xff", 200), None)


def test_partial_text_frame_valid_so_far_passes_and_remembers_where_it_got() -> None:
    message = IncomingMessage()
    message.check_partial(partial(0x1, b"x" * 50 + b"\xc3", 200), None)
    assert message.probe is not None
    assert message.probe_pos == 51


def test_partial_binary_frame_is_not_decoded() -> None:
    message = IncomingMessage()
    message.check_partial(partial(0x2, b"\xff" * 50, 200), None)
    assert message.probe is None


def test_partial_continuation_of_a_text_message_continues_its_decoder() -> None:
    message = IncomingMessage()
    message.receive(TEXT, False, b"\xc3", 1, False, True)  # first half of a character
    message.check_partial(partial(0x0, b"\xa9" + b"x" * 10, 200), None)  # completes it
    message = IncomingMessage()
    message.receive(TEXT, False, b"\xc3", 1, False, True)
    with pytest.raises(UnicodeDecodeError):
        message.check_partial(partial(0x0, b"x" * 10, 200), None)


def test_partial_frame_over_the_message_limit_fails_now() -> None:
    message = IncomingMessage()
    message.receive(BINARY, False, b"x" * 100, 100, False, True)
    with pytest.raises(PayloadTooBig, match="message over 250 bytes"):
        message.check_partial(partial(0x0, b"x", 200), 250)
    # Within the limit: nothing to say.
    message.check_partial(partial(0x0, b"x", 150), 250)


def test_partial_frame_out_of_order_is_left_to_the_protocol() -> None:
    # A new TEXT frame while a message is in progress is a 1002, which the protocol reports
    # when the frame is complete; the size check does not pre-empt it.
    message = IncomingMessage()
    message.receive(BINARY, False, b"x" * 100, 100, False, True)
    message.check_partial(partial(0x1, b"x", 200), 250)
