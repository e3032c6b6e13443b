"""Tests for tether.sansio.frames: the frame codec (RFC 6455 5.2-5.7) and close payloads (7.4).

Fixtures are raw bytes, most of them from the examples of RFC 6455 section 5.7, checked in both
directions: serializing with a fixed masking key gives exactly those bytes, and parsing them gives
the Frame back. Parser rules are checked for both roles (a server expects masked frames, a client
unmasked ones).
"""

from __future__ import annotations

import itertools
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import PayloadTooBig, ProtocolError
from tether.sansio import frames, masking
from tether.sansio.codes import Opcode
from tether.sansio.frames import Close, Frame, FrameParser, serialize_frame
from tether.sansio.masking import apply_mask

#: The masking key of the examples in RFC 6455 section 5.7.
RFC_KEY = bytes((0x37, 0xFA, 0x21, 0x3D))

SERVER = True  # mask_expected: a server receives masked frames
CLIENT = False  # a client receives unmasked frames
ROLES = pytest.mark.parametrize("mask_expected", [SERVER, CLIENT], ids=["server", "client"])


def noise(size: int) -> bytes:
    """Arbitrary but reproducible payload bytes."""
    return random.Random(size).randbytes(size)


DATA_256 = bytes(range(256))
DATA_64K = noise(65536)

# (frame, mask key or None, the bytes on the wire), from RFC 6455 section 5.7.
RFC_EXAMPLES = [
    # A single-frame unmasked text message.
    (Frame(Opcode.TEXT, b"Hello"), None, bytes.fromhex("81 05 48 65 6c 6c 6f")),
    # A single-frame masked text message.
    (Frame(Opcode.TEXT, b"Hello"), RFC_KEY, bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")),
    # A fragmented unmasked text message.
    (Frame(Opcode.TEXT, b"Hel", fin=False), None, bytes.fromhex("01 03 48 65 6c")),
    (Frame(Opcode.CONT, b"lo"), None, bytes.fromhex("80 02 6c 6f")),
    # Unmasked Ping request and masked Ping response.
    (Frame(Opcode.PING, b"Hello"), None, bytes.fromhex("89 05 48 65 6c 6c 6f")),
    (Frame(Opcode.PONG, b"Hello"), RFC_KEY, bytes.fromhex("8a 85 37 fa 21 3d 7f 9f 4d 51 58")),
    # 256 bytes binary message in a single unmasked frame.
    (Frame(Opcode.BINARY, DATA_256), None, bytes.fromhex("82 7E 0100") + DATA_256),
    # 64KiB binary message in a single unmasked frame.
    (Frame(Opcode.BINARY, DATA_64K), None, bytes.fromhex("82 7F 0000000000010000") + DATA_64K),
]
RFC_IDS = ["text", "masked-text", "fragment-1", "fragment-2", "ping", "pong", "256", "64KiB"]


def parse_all(
    wire: bytes, *, mask_expected: bool, chunk: int | None = None, **kwargs: Any
) -> list[Frame]:
    """Feed ``wire`` (at once, or in chunks of ``chunk`` bytes) and collect every frame."""
    parser = FrameParser(mask_expected=mask_expected, **kwargs)
    result: list[Frame] = []
    step = chunk or max(len(wire), 1)
    for i in range(0, len(wire), step):
        parser.feed(wire[i : i + step])
        while (frame := parser.next_frame()) is not None:
            result.append(frame)
    assert parser.buffered == 0
    return result


def parse_one(wire: bytes, *, mask_expected: bool, **kwargs: Any) -> Frame | None:
    parser = FrameParser(mask_expected=mask_expected, **kwargs)
    parser.feed(wire)
    return parser.next_frame()


def header(b0: int, length: int, *, masked: bool, encoding: int | None = None) -> bytes:
    """A frame header with the length in the given encoding (7, 16 or 64 bits; minimal if None)."""
    if encoding is None:
        encoding = 7 if length < 126 else 16 if length < 65536 else 64
    bit = 0x80 if masked else 0
    if encoding == 7:
        head = struct.pack("!BB", b0, bit | length)
    elif encoding == 16:
        head = struct.pack("!BBH", b0, bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, length)
    return head + (RFC_KEY if masked else b"")


def wire_frame(b0: int, payload: bytes, *, masked: bool, encoding: int | None = None) -> bytes:
    body = apply_mask(payload, RFC_KEY) if masked else payload
    return header(b0, len(payload), masked=masked, encoding=encoding) + body


# --- RFC 6455 5.7 examples, both directions -------------------------------------------------------


@pytest.mark.parametrize(("frame", "key", "wire"), RFC_EXAMPLES, ids=RFC_IDS)
def test_rfc_example_serializes(frame: Frame, key: bytes | None, wire: bytes) -> None:
    assert serialize_frame(frame, mask=key is not None, mask_key=key) == wire


@pytest.mark.parametrize(("frame", "key", "wire"), RFC_EXAMPLES, ids=RFC_IDS)
def test_rfc_example_parses(frame: Frame, key: bytes | None, wire: bytes) -> None:
    assert parse_all(wire, mask_expected=key is not None) == [frame]


@pytest.mark.parametrize(("frame", "key", "wire"), RFC_EXAMPLES, ids=RFC_IDS)
def test_rfc_example_parses_byte_by_byte(frame: Frame, key: bytes | None, wire: bytes) -> None:
    assert parse_all(wire, mask_expected=key is not None, chunk=1) == [frame]


def test_rfc_fragmented_message_in_one_chunk() -> None:
    wire = bytes.fromhex("01 03 48 65 6c") + bytes.fromhex("80 02 6c 6f")
    assert parse_all(wire, mask_expected=CLIENT) == [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.CONT, b"lo"),
    ]


def test_parsed_frames_have_opcode_members_and_bytes() -> None:
    (frame,) = parse_all(bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58"), mask_expected=SERVER)
    assert frame.opcode is Opcode.TEXT
    assert type(frame.data) is bytes
    (frame,) = parse_all(bytes.fromhex("82 7E 0100") + DATA_256, mask_expected=CLIENT)
    assert frame.opcode is Opcode.BINARY
    assert type(frame.data) is bytes


# --- serialize_frame ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "head"),
    [
        (0, "82 00"),
        (125, "82 7d"),
        (126, "82 7e 00 7e"),
        (65535, "82 7e ff ff"),
        (65536, "82 7f 00 00 00 00 00 01 00 00"),
    ],
)
def test_serialize_uses_minimal_length_encoding(length: int, head: str) -> None:
    payload = bytes(length)
    wire = serialize_frame(Frame(Opcode.BINARY, payload), mask=False)
    assert wire == bytes.fromhex(head) + payload
    masked = serialize_frame(Frame(Opcode.BINARY, payload), mask=True, mask_key=RFC_KEY)
    expected_head = bytearray.fromhex(head)
    expected_head[1] |= 0x80
    assert masked == bytes(expected_head) + RFC_KEY + apply_mask(payload, RFC_KEY)


@pytest.mark.parametrize(
    ("frame", "b0"),
    [
        (Frame(Opcode.TEXT, b"x", fin=False), 0x01),
        (Frame(Opcode.CONT, b"x", rsv1=True), 0xC0),
        (Frame(Opcode.BINARY, b"x", rsv2=True), 0xA2),
        (Frame(Opcode.BINARY, b"x", rsv3=True), 0x92),
        (Frame(Opcode.TEXT, b"x", fin=False, rsv1=True, rsv2=True, rsv3=True), 0x71),
        (Frame(Opcode.CLOSE, b""), 0x88),
    ],
)
def test_serialize_first_byte(frame: Frame, b0: int) -> None:
    assert serialize_frame(frame, mask=False)[0] == b0
    assert serialize_frame(frame, mask=True)[0] == b0


def test_serialize_rsv_argument_overrides_flags() -> None:
    frame = Frame(Opcode.TEXT, b"x", rsv3=True)
    assert serialize_frame(frame, mask=False, rsv=0x40) == b"\xc1\x01x"
    assert serialize_frame(frame, mask=False, rsv=0) == b"\x81\x01x"
    assert serialize_frame(frame, mask=False, rsv=0x70) == b"\xf1\x01x"
    with pytest.raises(ValueError, match="rsv"):
        serialize_frame(frame, mask=False, rsv=0x80)
    with pytest.raises(ValueError, match="rsv"):
        serialize_frame(frame, mask=False, rsv=0x01)


def test_serialize_picks_fresh_keys() -> None:
    frame = Frame(Opcode.TEXT, b"Hello")
    wires = [serialize_frame(frame, mask=True) for _ in range(20)]
    keys = {wire[2:6] for wire in wires}
    assert len(keys) == 20
    for wire in wires:
        assert parse_all(wire, mask_expected=SERVER) == [frame]


def test_serialize_draws_keys_from_the_module_source(monkeypatch: pytest.MonkeyPatch) -> None:
    # The protocol's tests pin the key this way to compare with RFC bytes.
    monkeypatch.setattr(frames, "_mask_source", lambda: RFC_KEY)
    wire = serialize_frame(Frame(Opcode.TEXT, b"Hello"), mask=True)
    assert wire == bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_serialize_rejects_bad_key(key: bytes) -> None:
    with pytest.raises(ValueError, match="mask_key"):
        serialize_frame(Frame(Opcode.TEXT, b"x"), mask=True, mask_key=key)


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_serialize_checks_control_frames(opcode: Opcode) -> None:
    serialize_frame(Frame(opcode, bytes(125)), mask=False)
    with pytest.raises(ProtocolError, match="control frame too long"):
        serialize_frame(Frame(opcode, bytes(126)), mask=False)
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        serialize_frame(Frame(opcode, b"", fin=False), mask=True)


@pytest.mark.parametrize("length", [5, 1000, 70000])
def test_serialize_accepts_any_bytes_like_data(length: int) -> None:
    payload = noise(length)
    expected = serialize_frame(Frame(Opcode.BINARY, payload), mask=True, mask_key=RFC_KEY)
    for data in (bytearray(payload), memoryview(payload)):
        frame = Frame(Opcode.BINARY, data)  # type: ignore[arg-type]
        assert serialize_frame(frame, mask=True, mask_key=RFC_KEY) == expected
        assert serialize_frame(frame, mask=False) == serialize_frame(
            Frame(Opcode.BINARY, payload), mask=False
        )


def test_serialize_returns_bytes() -> None:
    for length in (5, 5000):
        for mask in (False, True):
            assert type(serialize_frame(Frame(Opcode.TEXT, bytes(length)), mask=mask)) is bytes


# --- parser rules, raw bytes, both roles ----------------------------------------------------------


@ROLES
@pytest.mark.parametrize("opcode", [*range(0x3, 0x8), *range(0xB, 0x10)])
def test_reserved_opcodes_are_rejected(mask_expected: bool, opcode: int) -> None:
    wire = wire_frame(0x80 | opcode, b"", masked=mask_expected)
    with pytest.raises(ProtocolError, match=f"invalid opcode: {opcode:#x}"):
        parse_one(wire, mask_expected=mask_expected)
    # The first two bytes are enough to know.
    with pytest.raises(ProtocolError, match="invalid opcode"):
        parse_one(wire[:2], mask_expected=mask_expected)


@ROLES
@pytest.mark.parametrize("opcode", list(Opcode))
def test_known_opcodes_are_accepted(mask_expected: bool, opcode: Opcode) -> None:
    wire = wire_frame(0x80 | opcode, b"ab", masked=mask_expected)
    assert parse_one(wire, mask_expected=mask_expected) == Frame(opcode, b"ab")


def test_server_rejects_unmasked_frame() -> None:
    with pytest.raises(ProtocolError, match=r"^unmasked frame$"):
        parse_one(b"\x81\x05Hello", mask_expected=SERVER)
    with pytest.raises(ProtocolError, match=r"^unmasked frame$"):
        parse_one(b"\x81\x05", mask_expected=SERVER)


def test_client_rejects_masked_frame() -> None:
    wire = bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")
    with pytest.raises(ProtocolError, match=r"^masked frame$"):
        parse_one(wire, mask_expected=CLIENT)
    with pytest.raises(ProtocolError, match=r"^masked frame$"):
        parse_one(wire[:2], mask_expected=CLIENT)


@ROLES
@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_reserved_bit_without_extension_is_rejected(mask_expected: bool, bit: int) -> None:
    wire = wire_frame(0x81 | bit, b"x", masked=mask_expected)
    with pytest.raises(ProtocolError, match="reserved bits"):
        parse_one(wire, mask_expected=mask_expected)
    # An extension owning another bit does not make this one legal.
    other = 0x70 & ~bit
    with pytest.raises(ProtocolError, match="reserved bits"):
        parse_one(wire, mask_expected=mask_expected, allowed_rsv=other)


@ROLES
@pytest.mark.parametrize(
    ("bit", "flags"),
    [(0x40, (True, False, False)), (0x20, (False, True, False)), (0x10, (False, False, True))],
)
def test_reserved_bit_owned_by_extension_is_reported(
    mask_expected: bool, bit: int, flags: tuple[bool, bool, bool]
) -> None:
    wire = wire_frame(0x82 | bit, b"xyz", masked=mask_expected)
    frame = parse_one(wire, mask_expected=mask_expected, allowed_rsv=bit)
    assert frame == Frame(Opcode.BINARY, b"xyz", True, *flags)


@ROLES
def test_reserved_bits_on_control_frames_are_left_to_the_protocol(mask_expected: bool) -> None:
    wire = wire_frame(0xC9, b"ping", masked=mask_expected)
    frame = parse_one(wire, mask_expected=mask_expected, allowed_rsv=0x40)
    assert frame == Frame(Opcode.PING, b"ping", rsv1=True)


def test_allowed_rsv_is_settable_between_frames() -> None:
    parser = FrameParser(mask_expected=CLIENT)
    parser.feed(b"\xc1\x01a\xc1\x01b")
    parser.allowed_rsv = 0x40
    assert parser.next_frame() == Frame(Opcode.TEXT, b"a", rsv1=True)
    parser.allowed_rsv = 0
    with pytest.raises(ProtocolError, match="reserved bits"):
        parser.next_frame()


@ROLES
@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
@pytest.mark.parametrize(("length", "encoding"), [(126, 16), (65535, 16), (70000, 64), (126, 64)])
def test_control_frame_too_long(
    mask_expected: bool, opcode: int, length: int, encoding: int
) -> None:
    wire = header(0x80 | opcode, length, masked=mask_expected, encoding=encoding)
    # The header alone is enough; the payload never needs to arrive.
    assert parse_one(wire[:-1], mask_expected=mask_expected) is None
    with pytest.raises(ProtocolError, match="control frame too long"):
        parse_one(wire, mask_expected=mask_expected)
    # This is a protocol error (1002) rather than a frame over the size limit (1009).
    with pytest.raises(ProtocolError, match="control frame too long"):
        parse_one(wire, mask_expected=mask_expected, max_frame_size=10)


@ROLES
@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_control_frame_of_125_bytes_is_accepted(mask_expected: bool, opcode: Opcode) -> None:
    payload = bytes(range(125)) if opcode != Opcode.CLOSE else b"\x03\xe8" + b"x" * 123
    for encoding in (7, 16, 64):
        wire = wire_frame(0x80 | opcode, payload, masked=mask_expected, encoding=encoding)
        assert parse_one(wire, mask_expected=mask_expected) == Frame(opcode, payload)


@ROLES
@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_fragmented_control_frame(mask_expected: bool, opcode: int) -> None:
    wire = wire_frame(opcode, b"", masked=mask_expected)
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        parse_one(wire, mask_expected=mask_expected)
    # The first two bytes are enough to know.
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        parse_one(wire[:2], mask_expected=mask_expected)


@ROLES
def test_64_bit_length_with_most_significant_bit_set(mask_expected: bool) -> None:
    head = header(0x82, 0, masked=mask_expected, encoding=64)
    wire = head[:2] + b"\x80" + b"\x00" * 7 + head[10:]
    with pytest.raises(ProtocolError, match="most significant bit"):
        parse_one(wire, mask_expected=mask_expected)
    # Even with no frame size limit at all.
    wire = head[:2] + b"\xff" * 8 + head[10:]
    with pytest.raises(ProtocolError, match="most significant bit"):
        parse_one(wire, mask_expected=mask_expected, max_frame_size=None)


@ROLES
@pytest.mark.parametrize(("length", "encoding"), [(0, 16), (5, 16), (125, 64), (300, 64), (0, 64)])
def test_non_minimal_length_encoding_is_accepted(
    mask_expected: bool, length: int, encoding: int
) -> None:
    payload = noise(length)
    wire = wire_frame(0x82, payload, masked=mask_expected, encoding=encoding)
    assert parse_all(wire, mask_expected=mask_expected) == [Frame(Opcode.BINARY, payload)]
    assert parse_all(wire, mask_expected=mask_expected, chunk=1) == [Frame(Opcode.BINARY, payload)]


@ROLES
@pytest.mark.parametrize(("length", "encoding"), [(101, 7), (1001, 16), (70001, 64), (101, 64)])
def test_payload_too_big_with_only_the_header(
    mask_expected: bool, length: int, encoding: int
) -> None:
    limit = length - 1
    wire = header(0x82, length, masked=mask_expected, encoding=encoding)
    parser = FrameParser(mask_expected=mask_expected, max_frame_size=limit)
    parser.feed(wire[:-1])
    assert parser.next_frame() is None  # the header is not complete yet
    parser.feed(wire[-1:])
    with pytest.raises(PayloadTooBig, match=f"{length} bytes"):
        parser.next_frame()


@ROLES
def test_payload_at_the_limit_is_accepted(mask_expected: bool) -> None:
    payload = noise(1000)
    wire = wire_frame(0x82, payload, masked=mask_expected)
    frame = parse_one(wire, mask_expected=mask_expected, max_frame_size=1000)
    assert frame == Frame(Opcode.BINARY, payload)


def test_max_frame_size_is_settable_between_frames() -> None:
    parser = FrameParser(mask_expected=CLIENT, max_frame_size=None)
    parser.feed(b"\x82\x03abc\x82\x03def")
    assert parser.next_frame() == Frame(Opcode.BINARY, b"abc")
    parser.max_frame_size = 2
    with pytest.raises(PayloadTooBig):
        parser.next_frame()


@ROLES
def test_incomplete_input_returns_none(mask_expected: bool) -> None:
    wire = wire_frame(0x82, bytes(300), masked=mask_expected)
    for cut in (0, 1, 2, 3, 5, len(wire) - 1):
        assert parse_one(wire[:cut], mask_expected=mask_expected) is None


# --- buffering ------------------------------------------------------------------------------------


def mixed_stream(masked: bool) -> tuple[bytes, list[Frame]]:
    """Frames of every size class and opcode, with non-minimal encodings, in one stream."""
    frames_and_encodings = [
        (Frame(Opcode.TEXT, b"Hel", fin=False), None),
        (Frame(Opcode.PING, b""), None),
        (Frame(Opcode.CONT, b"lo"), 64),
        (Frame(Opcode.BINARY, noise(126)), None),
        (Frame(Opcode.BINARY, noise(3000), fin=False), None),
        (Frame(Opcode.CONT, noise(70000)), None),
        (Frame(Opcode.PONG, b"pong"), 16),
        (Frame(Opcode.BINARY, b""), None),
        (Frame(Opcode.CLOSE, b"\x03\xe8bye"), None),
    ]
    wire = b"".join(
        wire_frame(f.opcode | (f.fin << 7), f.data, masked=masked, encoding=e)
        for f, e in frames_and_encodings
    )
    return wire, [f for f, _ in frames_and_encodings]


@ROLES
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 100, 4096, 65536, None])
def test_chunking_does_not_change_frames(mask_expected: bool, chunk: int | None) -> None:
    wire, expected = mixed_stream(mask_expected)
    assert parse_all(wire, mask_expected=mask_expected, chunk=chunk) == expected


@ROLES
def test_feeding_without_draining(mask_expected: bool) -> None:
    wire, expected = mixed_stream(mask_expected)
    parser = FrameParser(mask_expected=mask_expected)
    for i in range(0, len(wire), 999):
        parser.feed(wire[i : i + 999])
    assert parser.buffered == len(wire)
    result = []
    while (frame := parser.next_frame()) is not None:
        result.append(frame)
    assert result == expected
    assert parser.buffered == 0


def test_buffered_counts_bytes_not_yet_returned() -> None:
    parser = FrameParser(mask_expected=CLIENT)
    assert parser.buffered == 0
    wire = b"\x82\x7e\x01\x00" + bytes(256) + b"\x81\x02hi"
    parser.feed(wire[:3])
    assert parser.next_frame() is None
    assert parser.buffered == 3
    parser.feed(wire[3:100])
    assert parser.next_frame() is None
    assert parser.buffered == 100  # header parsed and kept, payload incomplete
    parser.feed(wire[100:262])
    assert parser.buffered == 262
    assert parser.next_frame() == Frame(Opcode.BINARY, bytes(256))
    assert parser.buffered == 2
    assert parser.next_frame() is None
    parser.feed(wire[262:])
    assert parser.buffered == 4
    assert parser.next_frame() == Frame(Opcode.TEXT, b"hi")
    assert parser.buffered == 0
    assert parser.next_frame() is None


def test_feed_copies_mutable_input() -> None:
    # The protocol feeds its handshake buffer and then clears it.
    parser = FrameParser(mask_expected=CLIENT)
    data = bytearray(b"\x81\x05Hel")
    parser.feed(data)
    data.clear()
    parser.feed(bytearray(b"lo"))
    assert parser.next_frame() == Frame(Opcode.TEXT, b"Hello")
    more = bytearray(b"\x81\x02hi")
    parser.feed(memoryview(more))
    more[:] = b"\x00\x00\x00\x00"
    assert parser.next_frame() == Frame(Opcode.TEXT, b"hi")


@ROLES
def test_large_frame_in_chunks(mask_expected: bool) -> None:
    # 16 MiB in 64 KiB pieces, followed in the last piece by another frame. This is the case
    # that would be quadratic if the parser re-copied its buffer on every feed.
    payload = noise(16 * 2**20)
    wire = wire_frame(0x82, payload, masked=mask_expected) + wire_frame(
        0x81, b"after", masked=mask_expected
    )
    parser = FrameParser(mask_expected=mask_expected, max_frame_size=16 * 2**20)
    chunk = 65536
    frames_seen: list[Frame] = []
    for i in range(0, len(wire), chunk):
        parser.feed(wire[i : i + chunk])
        while (frame := parser.next_frame()) is not None:
            frames_seen.append(frame)
        if not frames_seen:
            assert parser.buffered == min(i + chunk, len(wire))
    assert frames_seen == [Frame(Opcode.BINARY, payload), Frame(Opcode.TEXT, b"after")]


# --- properties -----------------------------------------------------------------------------------

data_opcodes = st.sampled_from([Opcode.CONT, Opcode.TEXT, Opcode.BINARY])
control_opcodes = st.sampled_from([Opcode.CLOSE, Opcode.PING, Opcode.PONG])
# Sizes on both sides of the 7/16/64-bit boundaries, without generating megabytes every time.
big_sizes = st.sampled_from([125, 126, 127, 65535, 65536, 65537, 70001])


@st.composite
def any_frame(draw: st.DrawFn) -> Frame:
    if draw(st.booleans()):
        opcode = draw(control_opcodes)
        data = draw(st.binary(max_size=125))
        fin = True
    else:
        opcode = draw(data_opcodes)
        if draw(st.integers(0, 9)) == 0:
            size = draw(big_sizes)
            seed = draw(st.binary(min_size=1, max_size=8))
            data = (seed * (size // len(seed) + 1))[:size]
        else:
            data = draw(st.binary(max_size=1000))
        fin = draw(st.booleans())
    rsv1, rsv2, rsv3 = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return Frame(opcode, data, fin, rsv1, rsv2, rsv3)


@st.composite
def chunked(draw: st.DrawFn, wire: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    edges = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=200, deadline=None)
@given(
    frame_list=st.lists(any_frame(), min_size=1, max_size=4),
    mask=st.booleans(),
    key=st.none() | st.binary(min_size=4, max_size=4),
    data=st.data(),
)
def test_property_round_trip(
    frame_list: list[Frame], mask: bool, key: bytes | None, data: st.DataObject
) -> None:
    wire = b"".join(serialize_frame(f, mask=mask, mask_key=key) for f in frame_list)
    parser = FrameParser(mask_expected=mask, allowed_rsv=0x70)
    result = []
    for piece in data.draw(chunked(wire)):
        parser.feed(piece)
        while (frame := parser.next_frame()) is not None:
            result.append(frame)
    assert result == frame_list
    assert parser.buffered == 0


@settings(max_examples=300, deadline=None)
@given(
    wire=st.binary(max_size=300),
    mask_expected=st.booleans(),
    allowed_rsv=st.sampled_from([0, 0x40, 0x70]),
    max_frame_size=st.none() | st.integers(0, 200),
    data=st.data(),
)
def test_property_arbitrary_bytes(
    wire: bytes,
    mask_expected: bool,
    allowed_rsv: int,
    max_frame_size: int | None,
    data: st.DataObject,
) -> None:
    parser = FrameParser(
        mask_expected=mask_expected, max_frame_size=max_frame_size, allowed_rsv=allowed_rsv
    )
    returned = 0
    try:
        for piece in data.draw(chunked(wire)):
            parser.feed(piece)
            while (frame := parser.next_frame()) is not None:
                assert isinstance(frame, Frame)
                assert isinstance(frame.opcode, Opcode)
                assert type(frame.data) is bytes
                if frame.opcode >= 0x8:  # 5.5: control frames are short and whole
                    assert len(frame.data) <= 125 and frame.fin
                if max_frame_size is not None:
                    assert len(frame.data) <= max_frame_size
                returned += 1
    except (ProtocolError, PayloadTooBig):
        return
    assert parser.buffered <= len(wire)


# --- the unmasked header, written apart from a large payload --------------------------------------


@settings(max_examples=300)
@given(
    opcode=st.sampled_from(list(Opcode)),
    length=st.one_of(
        st.integers(0, 300),
        st.sampled_from([125, 126, 127, 0xFFFF, 0x10000, 0x10001]),
        st.integers(0, 0x10100),
    ),
    fin=st.booleans(),
    rsv1=st.booleans(),
    rsv2=st.booleans(),
    rsv3=st.booleans(),
)
def test_unmasked_header_is_serialize_frame_without_the_data(
    opcode: Opcode, length: int, fin: bool, rsv1: bool, rsv2: bool, rsv3: bool
) -> None:
    frame = Frame(opcode, noise(length), fin, rsv1, rsv2, rsv3)
    try:
        whole = serialize_frame(frame, mask=False)
    except ProtocolError as exc:
        with pytest.raises(ProtocolError, match=str(exc)):
            frames.unmasked_header(frame)
        return
    assert frames.unmasked_header(frame) + frame.data == whole


# --- close payloads (5.5.1, 7.4) ------------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


def test_close_empty_payload_means_no_status() -> None:
    assert Close.parse(b"") == Close(1005, "")


def test_close_one_byte_payload() -> None:
    with pytest.raises(ProtocolError, match="close frame too short"):
        Close.parse(b"\x03")


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_valid_codes(code: int) -> None:
    wire = code.to_bytes(2, "big") + "café".encode()
    assert Close.parse(wire) == Close(code, "café")
    assert Close(code, "café").serialize() == wire
    assert Close.parse(code.to_bytes(2, "big")) == Close(code, "")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_invalid_codes(code: int) -> None:
    with pytest.raises(ProtocolError, match=f"invalid status code: {code}"):
        Close.parse(code.to_bytes(2, "big") + b"reason")
    with pytest.raises(ProtocolError, match=f"invalid status code: {code}"):
        Close(code).serialize()


@pytest.mark.parametrize("reason", [b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"ok\xc0\xafok"])
def test_close_invalid_utf8_reason(reason: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        Close.parse(b"\x03\xe8" + reason)


def test_close_frame_round_trip_through_codec() -> None:
    close = Close(1001, "going away")
    wire = serialize_frame(Frame(Opcode.CLOSE, close.serialize()), mask=True, mask_key=RFC_KEY)
    (frame,) = parse_all(wire, mask_expected=SERVER)
    assert Close.parse(frame.data) == close
    assert str(close) == "1001 (going away) going away"


def test_module_exports() -> None:
    assert set(frames.__all__) >= {"Close", "Frame", "FrameParser", "serialize_frame"}


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (Frame(Opcode.TEXT, b"hi", fin=False), "TEXT 'hi' [2 bytes] [continued]"),
        (Frame(Opcode.BINARY, b"\x01", rsv1=True), "BINARY 01 [1 byte] [rsv1]"),
        (Frame(Opcode.CONT, b"\xff"), "CONT ff [1 byte]"),
        (Frame(Opcode.CONT, b"\xff", rsv1=True), "CONT ff [1 byte] [rsv1]"),
        (Frame(Opcode.CLOSE, b"\x03\xe8"), "CLOSE 1000 (OK) [2 bytes]"),
        (Frame(Opcode.CLOSE, b"\x03"), "CLOSE 03 [1 byte]"),  # invalid close payload: hex
        (Frame(Opcode.CLOSE, b"\x03\xe8\xff"), "CLOSE 03 e8 ff [3 bytes]"),  # invalid UTF-8
        (Frame(Opcode.TEXT, b"a" * 100), f"TEXT '{'a' * 63}...{'a' * 7}' [100 bytes]"),
    ],
)
def test_frame_str(frame: Frame, text: str) -> None:
    assert str(frame) == text
    assert len(text.split(" [")[0]) <= len(frame.opcode.name) + 1 + frames.MAX_LOG_SIZE


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT])
def test_unmasked_header_is_what_serialize_frame_puts_first(opcode: Opcode, length: int) -> None:
    for fin, rsv1 in itertools.product([True, False], repeat=2):
        frame = Frame(opcode, noise(length), fin=fin, rsv1=rsv1)
        assert frames.unmasked_header(frame) + frame.data == serialize_frame(frame, mask=False)


def test_unmasked_header_of_control_frames() -> None:
    ping = Frame(Opcode.PING, b"x" * 125)
    assert frames.unmasked_header(ping) + ping.data == serialize_frame(ping, mask=False)
    with pytest.raises(ProtocolError, match="control frame too long"):
        frames.unmasked_header(Frame(Opcode.PING, b"x" * 126))
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        frames.unmasked_header(Frame(Opcode.PONG, b"", fin=False))


# --- a large masked frame built in a reusable buffer ---------------------------------------------


@pytest.mark.parametrize("length", [0, 125, 126, 0xFFFF, 0x10000, 0x10003])
@pytest.mark.parametrize("rsv1", [False, True])
def test_masked_frame_into_is_serialize_frame(
    monkeypatch: pytest.MonkeyPatch, length: int, rsv1: bool
) -> None:
    monkeypatch.setattr(frames, "_mask_source", lambda: RFC_KEY)
    frame = Frame(Opcode.BINARY, noise(length), fin=True, rsv1=rsv1)
    expected = serialize_frame(frame, mask=True, mask_key=RFC_KEY)
    fresh = frames.masked_frame_into(frame, None)
    assert type(fresh) is bytearray and fresh == expected
    # A spare of the same size is filled in place; one of another size is left alone.
    spare = bytearray(b"\xaa" * len(expected))
    assert frames.masked_frame_into(frame, spare) is spare and spare == expected
    other = bytearray(len(expected) + 1)
    built = frames.masked_frame_into(frame, other)
    assert built is not other and built == expected and other == bytearray(len(expected) + 1)


def test_masked_frame_into_checks_control_frames() -> None:
    with pytest.raises(ProtocolError, match="control frame too long"):
        frames.masked_frame_into(Frame(Opcode.PING, bytes(126)), None)


# --- a large payload read in place (payload_buffer) -----------------------------------------------


@ROLES
@pytest.mark.parametrize("read_size", [65536, 100_000, 262144])
@pytest.mark.parametrize("helper", ["active", "python"])
def test_payload_read_in_place_is_the_frame(
    monkeypatch: pytest.MonkeyPatch, mask_expected: bool, read_size: int, helper: str
) -> None:
    # What asyncio's BufferedProtocol does: read into the view when the parser offers one,
    # else feed a chunk. A small frame follows the large one in the same stream. "python":
    # the pure-Python payload (a bytearray copied into bytes at the end) whatever is active.
    if helper == "python":
        monkeypatch.setattr(frames, "new_payload", masking.py_new_payload)
    payload = noise(600_000)
    wire = wire_frame(0x82, payload, masked=mask_expected) + wire_frame(
        0x89, b"ping", masked=mask_expected
    )
    parser = FrameParser(mask_expected=mask_expected, max_frame_size=2**20)
    frames_out: list[Frame] = []
    pos = 0
    in_place = 0
    while pos < len(wire):
        view = parser.payload_buffer(65536)
        if view is None:
            chunk = wire[pos : pos + read_size]
            parser.feed(chunk)
            pos += len(chunk)
        else:
            n = min(len(view), read_size, len(wire) - pos)
            view[:n] = wire[pos : pos + n]
            parser.payload_written(n)
            pos += n
            in_place += n
        assert parser.buffered <= len(wire) - sum(len(f.data) for f in frames_out)
        while (frame := parser.next_frame()) is not None:
            frames_out.append(frame)
    assert in_place > 0
    assert [(f.opcode, f.data) for f in frames_out] == [
        (Opcode.BINARY, payload),
        (Opcode.PING, b"ping"),
    ]
    assert type(frames_out[0].data) is bytes
    assert parser.buffered == 0 and parser.payload_buffer(65536) is None


@ROLES
def test_bytes_fed_while_a_payload_is_read_in_place(mask_expected: bool) -> None:
    # feed() (data_received, or bytes that came another way) completes the payload in place
    # and keeps what follows it for the next frames; partial_payload sees the bytes so far.
    payload = noise(200_000)
    wire = wire_frame(0x82, payload, masked=mask_expected) + wire_frame(
        0x82, b"next", masked=mask_expected
    )
    parser = FrameParser(mask_expected=mask_expected)
    parser.feed(wire[:150_000])
    assert parser.next_frame() is None
    view = parser.payload_buffer(1024)
    assert view is not None
    header = len(wire) - len(payload) - len(wire_frame(0x82, b"next", masked=mask_expected))
    assert len(view) == len(payload) - (150_000 - header)
    assert parser.pending_frame() == (Opcode.BINARY, False, 150_000 - header, len(payload))
    assert parser.partial_payload(10) == payload[10 : 150_000 - header]
    view[:1000] = wire[150_000:151_000]
    parser.payload_written(1000)
    del view
    parser.feed(wire[151_000:])
    frame = parser.next_frame()
    assert frame is not None and frame.data == payload
    frame = parser.next_frame()
    assert frame is not None and frame.data == b"next"
    assert parser.next_frame() is None and parser.buffered == 0


def test_payload_buffer_waits_for_part_of_the_payload() -> None:
    # A header alone never makes the parser allocate the payload.
    parser = FrameParser(mask_expected=False)
    parser.feed(wire_frame(0x82, bytes(2**20), masked=False)[:100])
    assert parser.next_frame() is None
    assert parser.payload_buffer(65536) is None
    parser.discard()
    parser.feed(wire_frame(0x82, bytes(2**20), masked=False)[: 2**19 + 20])
    assert parser.next_frame() is None
    assert parser.payload_buffer(2**20) is None  # fewer bytes missing than asked for
    view = parser.payload_buffer(65536)
    assert view is not None and len(view) == 2**19 - 10
    parser.discard()
    assert parser.payload_buffer(65536) is None and parser.buffered == 0


def test_bytes_fed_once_the_payload_read_in_place_is_complete() -> None:
    payload = noise(200_000)
    wire = wire_frame(0x82, payload, masked=False)
    parser = FrameParser(mask_expected=False)
    parser.feed(wire[:110_000])  # over half of it: read in place with either helper
    assert parser.next_frame() is None
    view = parser.payload_buffer(65536)
    assert view is not None
    parser.feed(wire[110_000:150_000])  # all of it fits
    view = parser.payload_buffer(1)
    assert view is not None
    rest = wire[150_000:]
    view[:] = rest
    parser.payload_written(len(rest))
    parser.feed(b"\x82\x02ok")  # after the payload, before next_frame(): for the next frame
    frame = parser.next_frame()
    assert frame is not None and frame.data == payload
    frame = parser.next_frame()
    assert frame is not None and frame.data == b"ok"
