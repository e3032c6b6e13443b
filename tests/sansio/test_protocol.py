"""The sans-I/O connection, driven with raw frame bytes (RFC 6455 sections 5 to 8).

Every example test builds a :class:`Protocol` in state OPEN, feeds it the bytes a peer would
send and checks all three outputs: the events, the bytes written (decoded by the small,
independent codec below, which also checks masking and minimal length encoding) and the state.
Most tests run once per side: frames sent to a server are masked, frames sent to a client are
not.

The property tests at the end (hypothesis) check that:

1. Any sequence of messages (text or binary), cut into any fragments, with pings anywhere,
   goes from one Protocol to its peer and arrives unchanged, whatever the chunk sizes of the
   byte stream; pongs come back and acknowledge the pings; the close handshake completes.
2. Arbitrary bytes fed to a Protocol never raise: they produce events and, at worst, one
   close frame with 1002, 1007 or 1009 (or the echo of a close frame the bytes happened to
   hold), and the result does not depend on how the bytes were cut into chunks.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as outcome
from hypothesis import strategies as st

from tether.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from tether.extensions.base import RSV1, RSV2, RSV3, Extension
from tether.limits import Limits
from tether.sansio import frames as frames_module
from tether.sansio.codes import Opcode
from tether.sansio.events import (
    BinaryMessage,
    CloseReceived,
    Fragment,
    Ping,
    Pong,
    TextMessage,
)
from tether.sansio.frames import Close, Frame
from tether.sansio.protocol import Event, Protocol, Side, State
from tether.typing import ExtensionName

SERVER, CLIENT = Side.SERVER, Side.CLIENT
OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED
CONT, TEXT, BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG

#: The masking key of the examples in RFC 6455 5.7.
MASK_KEY = b"\x37\xfa\x21\x3d"


# --- an independent frame codec for the tests -------------------------------------------------


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR with the key repeated (5.3), as one big-integer operation: fast and obviously right."""
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
) -> bytes:
    """One frame on the wire, with the shortest length encoding (5.2)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 2**16:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if mask_key is None:
        return head + payload
    return head + mask_key + apply_mask(payload, mask_key)


def inbound(
    side: Side, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0
) -> bytes:
    """A frame as the peer of ``side`` sends it: masked toward a server, unmasked toward a
    client."""
    key = MASK_KEY if side is SERVER else None
    return encode(opcode, payload, fin=fin, rsv=rsv, mask_key=key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


@dataclasses.dataclass(frozen=True)
class W:
    """A frame as decoded from what the protocol wrote."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0


#: What ``b""`` in ``data_to_send()`` means: half-close the TCP connection.
EOF = "EOF"


def decode(data: bytes, *, masked: bool) -> list[tuple[W, bytes]]:
    """Split ``data`` into frames; check the mask bit and the length encoding of each."""
    frames: list[tuple[W, bytes]] = []
    i = 0
    while i < len(data):
        assert len(data) - i >= 2, "truncated frame header"
        b0, b1 = data[i], data[i + 1]
        assert bool(b1 & 0x80) is masked, "mask bit is wrong for this side"
        n = b1 & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(data[i : i + 2], "big")
            i += 2
            assert n >= 126, "16-bit length used for a short payload"
        elif n == 127:
            n = int.from_bytes(data[i : i + 8], "big")
            i += 8
            assert 2**16 <= n < 2**63, "64-bit length used for a short payload, or high bit set"
        key = b""
        if masked:
            key = data[i : i + 4]
            assert len(key) == 4
            i += 4
        payload = data[i : i + n]
        assert len(payload) == n, "truncated payload"
        i += n
        if masked:
            payload = apply_mask(payload, key)
        frames.append((W(b0 & 0x0F, payload, bool(b0 & 0x80), b0 & 0x70), key))
    return frames


def written_with_keys(protocol: Protocol) -> list[tuple[W, bytes] | str]:
    # A frame may span several writes (a large payload is written apart from its header).
    out: list[tuple[W, bytes] | str] = []
    pending = b""
    for data in protocol.data_to_send():
        assert isinstance(data, bytes)
        assert EOF not in out, "data written after EOF"
        if data == b"":
            if pending:
                out.extend(decode(pending, masked=protocol.side is CLIENT))
                pending = b""
            out.append(EOF)
        else:
            pending += data
    if pending:
        out.extend(decode(pending, masked=protocol.side is CLIENT))
    return out


def written(protocol: Protocol) -> list[W | str]:
    """Everything the protocol wrote since the last call, as frames and EOF."""
    return [item if isinstance(item, str) else item[0] for item in written_with_keys(protocol)]


def eof(side: Side) -> list[W | str]:
    """A server closes the TCP connection once the close frames are exchanged or on failure
    (7.1.1, 7.1.7); a client waits for the server to do it."""
    return [EOF] if side is SERVER else []


def check(
    protocol: Protocol,
    *,
    events: Sequence[object] | None = None,
    writes: Sequence[W | str] | None = None,
    state: State = OPEN,
) -> None:
    assert protocol.events_received() == list(events or [])
    assert written(protocol) == list(writes or [])
    assert protocol.state is state


def check_failed(
    protocol: Protocol,
    code: int,
    exc_type: type[Exception],
    *,
    events: list[object] | None = None,
) -> bytes:
    """The protocol failed the connection with ``code`` because of an ``exc_type``: one close
    frame, then EOF if it is the server, and from now on input is ignored. Returns the reason
    it wrote."""
    assert protocol.events_received() == (events or [])
    writes = written(protocol)
    assert len(writes) == 1 + len(eof(protocol.side)), writes
    frame = writes[0]
    assert isinstance(frame, W)
    assert frame.opcode == CLOSE and frame.fin and frame.rsv == 0
    assert frame.payload[:2] == close_payload(code)
    reason = frame.payload[2:]
    reason.decode()  # a reason must be UTF-8
    assert len(frame.payload) <= 125
    assert writes[1:] == eof(protocol.side)
    assert protocol.state is CLOSING
    assert protocol.close_sent == Close(code, reason.decode())
    assert protocol.close_rcvd_then_sent is False
    assert isinstance(protocol.parser_exc, exc_type)
    assert protocol.close_expected()
    # 7.1.7: once failed, nothing more is read and nothing more is sent, whatever follows.
    for junk in (b"\xff" * 20, inbound(protocol.side, TEXT, b"late"), encode(CLOSE, b"\x03\xe8")):
        protocol.receive_data(junk)
        check(protocol, state=CLOSING)
    return reason


@pytest.fixture(params=[SERVER, CLIENT], ids=["server", "client"])
def side(request: pytest.FixtureRequest) -> Side:
    result: Side = request.param
    return result


class Reverse(Extension):
    """An extension that owns RSV1: it reverses payloads and flags them with RSV1."""

    name = ExtensionName("x-reverse")
    rsv_mask = RSV1

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if not frame.rsv1:
            return frame
        return dataclasses.replace(frame, data=frame.data[::-1], rsv1=False)

    def encode(self, frame: Frame) -> Frame:
        return dataclasses.replace(frame, data=frame.data[::-1], rsv1=True)


class Suffix(Extension):
    """An extension that owns RSV2: it appends ``!`` to payloads and requires it on receipt."""

    name = ExtensionName("x-suffix")
    rsv_mask = RSV2

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if not frame.rsv2:
            return frame
        if not frame.data.endswith(b"!"):
            raise ProtocolError("missing suffix")
        return dataclasses.replace(frame, data=frame.data[:-1], rsv2=False)

    def encode(self, frame: Frame) -> Frame:
        return dataclasses.replace(frame, data=frame.data + b"!", rsv2=True)


class Broken(Extension):
    """An extension whose decode raises whatever it is given."""

    name = ExtensionName("x-broken")

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        raise self.exc

    def encode(self, frame: Frame) -> Frame:
        return frame


def with_extensions(side: Side, *extensions: Extension, **kwargs: Any) -> Protocol:
    """A protocol that agreed ``extensions``, opened the way the two roles do it."""
    protocol = Protocol(side, state=State.CONNECTING, **kwargs)
    protocol.extensions = list(extensions)
    protocol._open()
    return protocol


# --- frame codec: input -----------------------------------------------------------------------


def test_client_receives_unmasked_text_frame_from_rfc() -> None:
    client = Protocol(CLIENT)
    client.receive_data(b"\x81\x05\x48\x65\x6c\x6c\x6f")
    check(client, events=[TextMessage("Hello")])


def test_server_receives_masked_text_frame_from_rfc() -> None:
    server = Protocol(SERVER)
    server.receive_data(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    check(server, events=[TextMessage("Hello")])


def test_client_receives_fragmented_text_message_from_rfc() -> None:
    client = Protocol(CLIENT)
    client.receive_data(b"\x01\x03\x48\x65\x6c")
    check(client)
    client.receive_data(b"\x80\x02\x6c\x6f")
    check(client, events=[TextMessage("Hello")])


def test_server_receives_masked_pong_from_rfc() -> None:
    server = Protocol(SERVER)
    server.receive_data(b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    check(server, events=[Pong(b"Hello", ())])


def test_client_receives_256_byte_binary_frame_from_rfc() -> None:
    client = Protocol(CLIENT)
    client.receive_data(b"\x82\x7e\x01\x00" + bytes(range(256)))
    check(client, events=[BinaryMessage(bytes(range(256)))])


def test_client_receives_64_kib_binary_frame_from_rfc() -> None:
    client = Protocol(CLIENT)
    client.receive_data(b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + b"\xab" * 65536)
    check(client, events=[BinaryMessage(b"\xab" * 65536)])


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000], ids=lambda n: f"{n}B")
def test_receives_binary_frame_of_each_length_form(side: Side, size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, BINARY, payload))
    check(protocol, events=[BinaryMessage(payload)])


@pytest.mark.parametrize("size", [0, 125, 126, 65536], ids=lambda n: f"{n}B")
def test_receives_text_frame_of_each_length_form(side: Side, size: int) -> None:
    text = ("aé€😀" * size)[:size]
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, text.encode()))
    check(protocol, events=[TextMessage(text)])


def test_receives_frame_one_byte_at_a_time(side: Side) -> None:
    protocol = Protocol(side)
    data = inbound(side, TEXT, "café".encode(), fin=False) + inbound(side, CONT, b"!" * 200)
    for byte in data[:-1]:
        protocol.receive_data(bytes([byte]))
        check(protocol)
    protocol.receive_data(data[-1:])
    check(protocol, events=[TextMessage("café" + "!" * 200)])


def test_receives_several_frames_in_one_chunk(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(
        bytearray(
            inbound(side, TEXT, b"one")
            + inbound(side, BINARY, b"two")
            + inbound(side, PING, b"three")
            + inbound(side, PONG, b"four")
        )
    )
    check(
        protocol,
        events=[TextMessage("one"), BinaryMessage(b"two"), Ping(b"three"), Pong(b"four")],
        writes=[W(PONG, b"three")],
    )


def test_receives_memoryview(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(memoryview(inbound(side, BINARY, b"\x00\x01")))
    check(protocol, events=[BinaryMessage(b"\x00\x01")])


def test_receives_empty_chunk(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(b"")
    check(protocol)
    data = inbound(side, TEXT, b"ok")
    protocol.receive_data(data[:1])
    protocol.receive_data(b"")
    protocol.receive_data(data[1:])
    check(protocol, events=[TextMessage("ok")])


def test_server_receives_unmasked_frame() -> None:
    server = Protocol(SERVER)
    server.receive_data(encode(TEXT, b"Hello"))
    check_failed(server, 1002, ProtocolError)


def test_server_receives_unmasked_control_frame() -> None:
    server = Protocol(SERVER)
    server.receive_data(encode(PING, b"Hello"))
    check_failed(server, 1002, ProtocolError)


def test_client_receives_masked_frame() -> None:
    client = Protocol(CLIENT)
    client.receive_data(encode(TEXT, b"Hello", mask_key=MASK_KEY))
    check_failed(client, 1002, ProtocolError)


def test_client_receives_masked_frame_with_zero_key() -> None:
    # The mask bit is what matters, even when the key changes nothing.
    client = Protocol(CLIENT)
    client.receive_data(encode(TEXT, b"Hello", mask_key=b"\x00\x00\x00\x00"))
    check_failed(client, 1002, ProtocolError)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_receives_reserved_opcode(side: Side, opcode: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, opcode, b"x"))
    check_failed(protocol, 1002, ProtocolError)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3], ids=["rsv1", "rsv2", "rsv3"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE], ids=lambda o: o.name)
def test_receives_reserved_bit_without_extension(side: Side, opcode: Opcode, rsv: int) -> None:
    protocol = Protocol(side)
    payload = close_payload(1000) if opcode is CLOSE else b"x"
    protocol.receive_data(inbound(side, opcode, payload, rsv=rsv))
    check_failed(protocol, 1002, ProtocolError)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3], ids=["rsv1", "rsv2", "rsv3"])
def test_receives_reserved_bit_on_continuation_without_extension(side: Side, rsv: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"a", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, b"b", rsv=rsv))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_reserved_bit_owned_by_extension(side: Side) -> None:
    protocol = with_extensions(side, Reverse())
    protocol.receive_data(inbound(side, TEXT, b"olleH", rsv=RSV1))
    check(protocol, events=[TextMessage("Hello")])
    # Frames without the bit go through the extension untouched.
    protocol.receive_data(inbound(side, BINARY, b"abc"))
    check(protocol, events=[BinaryMessage(b"abc")])


def test_receives_reserved_bit_not_owned_by_extension(side: Side) -> None:
    protocol = with_extensions(side, Reverse())
    protocol.receive_data(inbound(side, TEXT, b"olleH", rsv=RSV1 | RSV2))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_extension_bit_on_control_frame(side: Side) -> None:
    # No extension gives a meaning to the reserved bits of control frames (RFC 7692 6.1).
    protocol = with_extensions(side, Reverse())
    protocol.receive_data(inbound(side, PING, b"x", rsv=RSV1))
    check_failed(protocol, 1002, ProtocolError)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=lambda o: o.name)
def test_receives_control_frame_over_125_bytes(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    payload = close_payload(1000, b"x" * 124) if opcode is CLOSE else b"x" * 126
    protocol.receive_data(inbound(side, opcode, payload))
    check_failed(protocol, 1002, ProtocolError)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=lambda o: o.name)
def test_receives_control_frame_of_125_bytes(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    payload = close_payload(1000, b"x" * 123) if opcode is CLOSE else b"x" * 125
    protocol.receive_data(inbound(side, opcode, payload))
    if opcode is PING:
        check(protocol, events=[Ping(payload)], writes=[W(PONG, payload)])
    elif opcode is PONG:
        check(protocol, events=[Pong(payload)])
    else:
        check(
            protocol,
            events=[CloseReceived(Close(1000, "x" * 123))],
            writes=[W(CLOSE, close_payload(1000)), *eof(side)],
            state=CLOSING,
        )


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=lambda o: o.name)
def test_receives_fragmented_control_frame(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    payload = close_payload(1000) if opcode is CLOSE else b"x"
    protocol.receive_data(inbound(side, opcode, payload, fin=False))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_64_bit_length_with_high_bit_set(side: Side) -> None:
    # 5.2: "the most significant bit MUST be 0". Only the header is sent: the protocol must
    # not wait for a payload that could never arrive.
    protocol = Protocol(side)
    head = b"\x82" + bytes([(0x80 if side is SERVER else 0) | 127])
    head += (2**63 + 5).to_bytes(8, "big") + (MASK_KEY if side is SERVER else b"")
    protocol.receive_data(head)
    check_failed(protocol, 1002, ProtocolError)


def test_receives_64_bit_length_with_high_bit_set_and_no_limit(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_frame_size=None, max_message_size=None))
    head = b"\x82" + bytes([(0x80 if side is SERVER else 0) | 127])
    head += (2**63).to_bytes(8, "big") + (MASK_KEY if side is SERVER else b"")
    protocol.receive_data(head)
    check_failed(protocol, 1002, ProtocolError)


# --- frame codec: output ----------------------------------------------------------------------


def test_client_masks_every_frame_with_a_fresh_key() -> None:
    client = Protocol(CLIENT)
    client.send_text("Hello")
    client.send_binary(b"Hello")
    client.send_text("Hel", fin=False)
    client.send_continuation(b"lo", fin=True)
    client.send_ping(b"Hello")
    client.send_pong(b"Hello")
    client.send_message(b"")
    client.send_close(1000, "Hello")
    out = written_with_keys(client)
    frames = [item[0] for item in out if not isinstance(item, str)]
    keys = [item[1] for item in out if not isinstance(item, str)]
    assert frames == [
        W(TEXT, b"Hello"),
        W(BINARY, b"Hello"),
        W(TEXT, b"Hel", fin=False),
        W(CONT, b"lo"),
        W(PING, b"Hello"),
        W(PONG, b"Hello"),
        W(BINARY, b""),
        W(CLOSE, close_payload(1000, b"Hello")),
    ]
    # A fresh, unpredictable key per frame (5.3): with random 32-bit keys, eight frames all
    # get different keys except with odds of about 1 in 600 million.
    assert len(set(keys)) == len(keys)
    assert client.state is CLOSING


def test_client_masks_the_pong_it_answers_with() -> None:
    client = Protocol(CLIENT)
    client.receive_data(encode(PING, b"abc"))
    out = written_with_keys(client)  # decode() checks the mask bit
    assert [item[0] for item in out if not isinstance(item, str)] == [W(PONG, b"abc")]


def test_server_sends_every_opcode_unmasked() -> None:
    server = Protocol(SERVER)
    server.send_text("Hello")
    server.send_binary(b"Hello")
    server.send_text("Hel", fin=False)
    server.send_continuation("lo", fin=True)
    server.send_ping(b"Hello")
    server.send_pong(b"Hello")
    server.send_close(1000, "")
    assert server.data_to_send() == [
        b"\x81\x05Hello",
        b"\x82\x05Hello",
        b"\x01\x03Hel",
        b"\x80\x02lo",
        b"\x89\x05Hello",
        b"\x8a\x05Hello",
        b"\x88\x02\x03\xe8",
    ]
    check(server, state=CLOSING)


def test_client_sends_masked_frame_from_rfc(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pin the key to the RFC's so the bytes can be compared with 5.7.
    monkeypatch.setattr(frames_module, "_mask_source", lambda: MASK_KEY)
    client = Protocol(CLIENT)
    client.send_text("Hello")
    client.send_pong(b"Hello")
    assert client.data_to_send() == [
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
    ]
    check(client)


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
    ids=lambda v: f"{v}B" if isinstance(v, int) else None,
)
def test_server_sends_shortest_length_form(size: int, header: bytes) -> None:
    server = Protocol(SERVER)
    server.send_binary(b"\x00" * size)
    assert b"".join(server.data_to_send()) == header + b"\x00" * size
    check(server)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536], ids=lambda n: f"{n}B")
def test_client_sends_shortest_length_form(size: int) -> None:
    client = Protocol(CLIENT)
    client.send_binary(b"\x5a" * size)
    # decode() refuses a longer length form than needed.
    check(client, writes=[W(BINARY, b"\x5a" * size)])


def test_sends_frames_through_extension(side: Side) -> None:
    protocol = with_extensions(side, Reverse())
    protocol.send_text("Hello")
    protocol.send_ping(b"ping")  # control frames are never encoded by extensions
    check(protocol, writes=[W(TEXT, b"olleH", rsv=RSV1), W(PING, b"ping")])


def test_applies_extensions_in_order_on_send_and_reverse_order_on_receive(side: Side) -> None:
    # 9.1: encode in the order agreed, decode in the reverse order.
    protocol = with_extensions(side, Reverse(), Suffix())
    protocol.send_text("Hello")
    check(protocol, writes=[W(TEXT, b"olleH!", rsv=RSV1 | RSV2)])
    protocol.receive_data(inbound(side, TEXT, b"olleH!", rsv=RSV1 | RSV2))
    check(protocol, events=[TextMessage("Hello")])


# --- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=lambda o: o.name)
def test_receives_fragmented_message(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, opcode, b"Hel", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, b"", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, b"lo", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, b"!"))
    expected = TextMessage("Hello!") if opcode is TEXT else BinaryMessage(b"Hello!")
    check(protocol, events=[expected])
    # The next message starts afresh.
    protocol.receive_data(inbound(side, opcode, b"next"))
    expected = TextMessage("next") if opcode is TEXT else BinaryMessage(b"next")
    check(protocol, events=[expected])


def test_receives_empty_messages(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b""))
    protocol.receive_data(inbound(side, BINARY, b""))
    protocol.receive_data(inbound(side, TEXT, b"", fin=False) + inbound(side, CONT, b""))
    check(protocol, events=[TextMessage(""), BinaryMessage(b""), TextMessage("")])


def test_receives_ping_between_fragments(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"Hel", fin=False))
    protocol.receive_data(inbound(side, PING, b"are you there?"))
    # The pong goes out at once, not after the message.
    check(protocol, events=[Ping(b"are you there?")], writes=[W(PONG, b"are you there?")])
    protocol.receive_data(inbound(side, CONT, b"lo"))
    check(protocol, events=[TextMessage("Hello")])


def test_receives_pong_between_fragments(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_ping(b"1")
    check(protocol, writes=[W(PING, b"1")])
    protocol.receive_data(inbound(side, BINARY, b"\x01", fin=False))
    protocol.receive_data(inbound(side, PONG, b"1"))
    protocol.receive_data(inbound(side, CONT, b"\x02"))
    check(protocol, events=[Pong(b"1", (b"1",)), BinaryMessage(b"\x01\x02")])


def test_receives_continuation_with_nothing_to_continue(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CONT, b"orphan"))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_continuation_after_message_ended(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"a", fin=False) + inbound(side, CONT, b"b"))
    check(protocol, events=[TextMessage("ab")])
    protocol.receive_data(inbound(side, CONT, b"c"))
    check_failed(protocol, 1002, ProtocolError)


@pytest.mark.parametrize("first", [TEXT, BINARY], ids=lambda o: o.name)
@pytest.mark.parametrize("second", [TEXT, BINARY], ids=lambda o: o.name)
def test_receives_data_frame_inside_fragmented_message(
    side: Side, first: Opcode, second: Opcode
) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, first, b"a", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, second, b"b"))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_fragments_when_not_assembling(side: Side) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(inbound(side, TEXT, b"caf", fin=False))
    check(protocol, events=[Fragment("caf", True, False)])
    protocol.receive_data(inbound(side, CONT, "é".encode()[:1], fin=False))
    # Half a character: nothing to deliver yet, but the fragment is reported.
    check(protocol, events=[Fragment("", False, False)])
    protocol.receive_data(inbound(side, CONT, "é".encode()[1:] + b"!"))
    check(protocol, events=[Fragment("é!", False, True)])
    protocol.receive_data(inbound(side, BINARY, b"\x00", fin=False))
    protocol.receive_data(inbound(side, CONT, b"\x01"))
    check(protocol, events=[Fragment(b"\x00", True, False), Fragment(b"\x01", False, True)])


def test_receives_unfragmented_messages_when_not_assembling(side: Side) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(inbound(side, TEXT, "é".encode()) + inbound(side, BINARY, b"\xff"))
    events = protocol.events_received()
    assert events == [Fragment("é", True, True), Fragment(b"\xff", True, True)]
    assert [e.text for e in events if isinstance(e, Fragment)] == [True, False]
    check(protocol)


def test_receives_ping_between_fragments_when_not_assembling(side: Side) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(
        inbound(side, BINARY, b"a", fin=False)
        + inbound(side, PING, b"p")
        + inbound(side, CONT, b"b")
    )
    check(
        protocol,
        events=[Fragment(b"a", True, False), Ping(b"p"), Fragment(b"b", False, True)],
        writes=[W(PONG, b"p")],
    )


def test_receives_continuation_with_nothing_to_continue_when_not_assembling(
    side: Side,
) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(inbound(side, CONT, b"x"))
    check_failed(protocol, 1002, ProtocolError)


def test_sends_fragmented_text_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_text("Hel", fin=False)
    protocol.send_ping(b"between")  # control frames may be sent between fragments
    protocol.send_continuation("l", fin=False)
    protocol.send_continuation(b"o", fin=True)
    check(
        protocol,
        writes=[
            W(TEXT, b"Hel", fin=False),
            W(PING, b"between"),
            W(CONT, b"l", fin=False),
            W(CONT, b"o"),
        ],
    )
    # The message is over: a new one may start.
    protocol.send_binary(b"next")
    check(protocol, writes=[W(BINARY, b"next")])


def test_sends_fragmented_binary_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_binary(bytearray(b"\x01"), fin=False)
    protocol.send_continuation(memoryview(b"\x02"), fin=True)
    check(protocol, writes=[W(BINARY, b"\x01", fin=False), W(CONT, b"\x02")])


def test_sends_message_in_one_frame_by_default(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_message("x" * 70000)
    protocol.send_message(b"y" * 70000)
    check(protocol, writes=[W(TEXT, b"x" * 70000), W(BINARY, b"y" * 70000)])


def test_sends_message_split_above_frame_size(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_outgoing_frame_size=4))
    protocol.send_message(b"0123456789")
    check(
        protocol,
        writes=[W(BINARY, b"0123", fin=False), W(CONT, b"4567", fin=False), W(CONT, b"89")],
    )


def test_sends_text_message_split_inside_a_character(side: Side) -> None:
    # Fragments of a text message need not hold whole characters (5.6); the receiver
    # validates the whole.
    protocol = Protocol(side, limits=Limits(max_outgoing_frame_size=3))
    protocol.send_message("€€")  # 6 bytes: e2 82 ac e2 82 ac
    check(protocol, writes=[W(TEXT, "€".encode(), fin=False), W(CONT, "€".encode())])
    protocol.send_message("aé")  # 3 bytes: one frame
    protocol.send_message("aéb")  # 4 bytes: split after a, c3, a9
    check(
        protocol,
        writes=[W(TEXT, "aé".encode()), W(TEXT, "aé".encode(), fin=False), W(CONT, b"b")],
    )


@pytest.mark.parametrize(("size", "frames"), [(9, 2), (10, 1), (11, 1), (5, 2), (4, 3), (1, 10)])
def test_sends_message_split_at_exact_boundaries(side: Side, size: int, frames: int) -> None:
    protocol = Protocol(side, limits=Limits(max_outgoing_frame_size=size))
    protocol.send_message(b"0123456789")
    writes = written(protocol)
    assert len(writes) == frames
    assert all(isinstance(w, W) and len(w.payload) <= size for w in writes)
    assert b"".join(w.payload for w in writes if isinstance(w, W)) == b"0123456789"
    assert [w.opcode for w in writes if isinstance(w, W)] == [BINARY] + [CONT] * (frames - 1)
    assert [w.fin for w in writes if isinstance(w, W)] == [False] * (frames - 1) + [True]


def test_split_message_is_received_whole(side: Side) -> None:
    sender = Protocol(side, limits=Limits(max_outgoing_frame_size=7))
    receiver = Protocol(CLIENT if side is SERVER else SERVER)
    text = "une pâtisserie, s'il vous plaît 😀"
    sender.send_message(text)
    for data in sender.data_to_send():
        receiver.receive_data(data)
    check(receiver, events=[TextMessage(text)])


# --- UTF-8 ------------------------------------------------------------------------------------


def test_receives_invalid_utf8_text_frame(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"caf\xe9"))
    check_failed(protocol, 1007, UnicodeDecodeError)


@pytest.mark.parametrize("assemble", [True, False], ids=["assemble", "stream"])
def test_fails_on_the_fragment_that_breaks_the_text(side: Side, assemble: bool) -> None:
    protocol = Protocol(side, assemble=assemble)
    protocol.receive_data(inbound(side, TEXT, "κόσμε".encode(), fin=False))
    check(protocol, events=[] if assemble else [Fragment("κόσμε", True, False)])
    protocol.receive_data(inbound(side, CONT, b"ok\xffok", fin=False))
    # Failed now, with the message still unfinished: the close frame is already written.
    check_failed(protocol, 1007, UnicodeDecodeError)
    protocol.receive_data(inbound(side, CONT, b"edited"))
    check(protocol, state=CLOSING)


@pytest.mark.parametrize(
    ("part1", "part2"),
    [
        (b"\xf4", b"\x90\x80\x80"),  # above U+10FFFF, split after the lead byte
        (b"\xe0", b"\x80\x80"),  # overlong
        (b"\xed", b"\xa0\x80"),  # a surrogate
        (b"\xce", b"A"),  # a lead byte followed by ASCII
    ],
    ids=["above-max", "overlong", "surrogate", "missing-continuation"],
)
def test_fails_on_sequence_split_across_fragments(side: Side, part1: bytes, part2: bytes) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"abc" + part1, fin=False))
    # A valid prefix so far.
    check(protocol)
    protocol.receive_data(inbound(side, CONT, part2 + b"xyz", fin=False))
    check_failed(protocol, 1007, UnicodeDecodeError)


@pytest.mark.parametrize(
    "tail",
    [b"\xed\xa0", b"\xed\xbf", b"\xf4\x90", b"\xe0\x9f", b"\xf0\x8f", b"\xc1", b"\xf8"],
    ids=lambda b: b.hex(),
)
def test_fails_on_fragment_ending_with_sequence_that_cannot_complete(
    side: Side, tail: bytes
) -> None:
    # No continuation can make these prefixes valid: fail now, not on the next fragment.
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"abc", fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, b"def" + tail, fin=False))
    check_failed(protocol, 1007, UnicodeDecodeError)


def test_fails_on_first_fragment_ending_with_truncated_surrogate(side: Side) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(inbound(side, TEXT, b"\xed\xa0", fin=False))
    check_failed(protocol, 1007, UnicodeDecodeError)


@pytest.mark.parametrize(
    ("tail", "rest"),
    [
        (b"\xed\x9f", b"\xbf"),  # U+D7FF, just below the surrogates
        (b"\xee", b"\x80\x80"),  # U+E000, just above them
        (b"\xf4\x8f", b"\xbf\xbf"),  # U+10FFFF
        (b"\xe0\xa0", b"\x80"),  # U+0800, the shortest 3-byte form
        (b"\xf0\x90\x80", b"\x80"),  # U+10000
        (b"\xc2", b"\xa9"),  # U+00A9
    ],
    ids=lambda b: b.hex(),
)
def test_accepts_fragment_ending_with_sequence_that_can_complete(
    side: Side, tail: bytes, rest: bytes
) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"abc" + tail, fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, rest))
    check(protocol, events=[TextMessage((b"abc" + tail + rest).decode())])


def test_receives_character_split_over_three_fragments(side: Side) -> None:
    protocol = Protocol(side)
    emoji = "😀".encode()  # f0 9f 98 80
    protocol.receive_data(inbound(side, TEXT, emoji[:1], fin=False))
    protocol.receive_data(inbound(side, CONT, emoji[1:3], fin=False))
    check(protocol)
    protocol.receive_data(inbound(side, CONT, emoji[3:]))
    check(protocol, events=[TextMessage("😀")])


@pytest.mark.parametrize("assemble", [True, False], ids=["assemble", "stream"])
def test_fails_on_message_ending_inside_a_character(side: Side, assemble: bool) -> None:
    protocol = Protocol(side, assemble=assemble)
    protocol.receive_data(inbound(side, TEXT, b"ok\xe2\x82", fin=False))
    check(protocol, events=[] if assemble else [Fragment("ok", True, False)])
    protocol.receive_data(inbound(side, CONT, b""))
    check_failed(protocol, 1007, UnicodeDecodeError)


def test_fails_on_unfragmented_text_ending_inside_a_character(side: Side) -> None:
    protocol = Protocol(side, assemble=False)
    protocol.receive_data(inbound(side, TEXT, b"ok\xe2\x82"))
    check_failed(protocol, 1007, UnicodeDecodeError)


def test_accepts_invalid_utf8_in_binary_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, BINARY, b"\xff", fin=False) + inbound(side, CONT, b"\xed"))
    check(protocol, events=[BinaryMessage(b"\xff\xed")])


def test_receives_close_with_invalid_utf8_reason(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000, b"bad \xff")))
    check_failed(protocol, 1007, UnicodeDecodeError)
    assert protocol.close_rcvd is None


def test_receives_close_with_utf8_reason(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1001, "à bientôt".encode())))
    check(
        protocol,
        events=[CloseReceived(Close(1001, "à bientôt"))],
        writes=[W(CLOSE, close_payload(1001)), *eof(side)],
        state=CLOSING,
    )


# --- ping and pong ----------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", b"p" * 125], ids=["empty", "bytes", "125B"])
def test_receives_ping_and_answers_with_same_data(side: Side, payload: bytes) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, PING, payload))
    check(protocol, events=[Ping(payload)], writes=[W(PONG, payload)])


def test_receives_pong_for_ping(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_ping(b"1234")
    check(protocol, writes=[W(PING, b"1234")])
    protocol.receive_data(inbound(side, PONG, b"1234"))
    check(protocol, events=[Pong(b"1234", (b"1234",))])
    # Answered pings are forgotten: the same pong again acknowledges nothing.
    protocol.receive_data(inbound(side, PONG, b"1234"))
    check(protocol, events=[Pong(b"1234", ())])


def test_receives_pong_for_latest_ping_acknowledging_earlier_ones(side: Side) -> None:
    protocol = Protocol(side)
    for payload in (b"1", b"2", b"3"):
        protocol.send_ping(payload)
    check(protocol, writes=[W(PING, b"1"), W(PING, b"2"), W(PING, b"3")])
    protocol.receive_data(inbound(side, PONG, b"2"))
    check(protocol, events=[Pong(b"2", (b"1", b"2"))])
    protocol.receive_data(inbound(side, PONG, b"1"))
    check(protocol, events=[Pong(b"1", ())])
    protocol.receive_data(inbound(side, PONG, b"3"))
    check(protocol, events=[Pong(b"3", (b"3",))])


def test_receives_unsolicited_pong(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_ping(b"1")
    written(protocol)
    protocol.receive_data(inbound(side, PONG, b"heartbeat"))
    check(protocol, events=[Pong(b"heartbeat", ())])
    protocol.receive_data(inbound(side, PONG, b"1"))
    check(protocol, events=[Pong(b"1", (b"1",))])


def test_sends_ping_with_payload_already_waiting(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_ping(b"same")
    written(protocol)
    with pytest.raises(InvalidState):
        protocol.send_ping(b"same")
    check(protocol)
    # The first one still gets acknowledged.
    protocol.receive_data(inbound(side, PONG, b"same"))
    check(protocol, events=[Pong(b"same", (b"same",))])


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_sends_control_frame_over_125_bytes(side: Side, method: str) -> None:
    protocol = Protocol(side)
    with pytest.raises(ValueError):
        getattr(protocol, method)(b"x" * 126)
    check(protocol)
    getattr(protocol, method)(b"x" * 125)
    check(protocol, writes=[W(PING if method == "send_ping" else PONG, b"x" * 125)])


def test_sends_unsolicited_pong(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_pong(b"heartbeat")
    check(protocol, writes=[W(PONG, b"heartbeat")])


def test_receives_ping_after_sending_close(side: Side) -> None:
    # Nothing follows our close frame; the ping is still reported.
    protocol = Protocol(side)
    protocol.send_close(1000)
    written(protocol)
    protocol.receive_data(inbound(side, PING, b"late"))
    check(protocol, events=[Ping(b"late")], state=CLOSING)


# --- close handshake --------------------------------------------------------------------------

LEGAL_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
ILLEGAL_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", LEGAL_CODES)
def test_receives_close_with_legal_code(side: Side, code: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(code, b"why")))
    # 5.5.1: answer with a close frame; we echo the code.
    check(
        protocol,
        events=[CloseReceived(Close(code, "why"))],
        writes=[W(CLOSE, close_payload(code)), *eof(side)],
        state=CLOSING,
    )
    assert protocol.close_rcvd == Close(code, "why")
    assert protocol.close_sent == Close(code, "")
    assert protocol.close_rcvd_then_sent is True
    assert protocol.parser_exc is None


@pytest.mark.parametrize("code", ILLEGAL_CODES)
def test_receives_close_with_illegal_code(side: Side, code: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(code)))
    check_failed(protocol, 1002, ProtocolError)
    assert protocol.close_rcvd is None


def test_receives_close_with_one_byte_payload(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, b"\x03"))
    check_failed(protocol, 1002, ProtocolError)


def test_receives_close_without_payload(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE))
    # No code to echo: the answer has no payload either.
    check(
        protocol,
        events=[CloseReceived(Close(1005, ""))],
        writes=[W(CLOSE, b""), *eof(side)],
        state=CLOSING,
    )
    protocol.receive_eof()
    check(protocol, writes=[EOF] if side is CLIENT else [], state=CLOSED)
    assert protocol.close_code == 1005
    assert isinstance(protocol.close_exc, ConnectionClosedOK)


def test_peer_closes_first(side: Side) -> None:
    protocol = Protocol(side)
    assert not protocol.close_expected()
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000, b"done")))
    check(
        protocol,
        events=[CloseReceived(Close(1000, "done"))],
        writes=[W(CLOSE, close_payload(1000)), *eof(side)],
        state=CLOSING,
    )
    assert protocol.close_rcvd_then_sent is True
    assert protocol.close_expected()
    assert protocol.close_code is None  # not closed yet
    assert protocol.close_reason is None
    protocol.receive_eof()
    # 7.1.1: the client closes its side of TCP after the server did.
    check(protocol, writes=[EOF] if side is CLIENT else [], state=CLOSED)
    assert not protocol.close_expected()
    assert protocol.close_code == 1000
    assert protocol.close_reason == "done"
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedOK)
    assert (exc.rcvd, exc.sent, exc.rcvd_then_sent) == (Close(1000, "done"), Close(1000), True)


def test_we_close_first(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close(1001, "bye")
    check(protocol, writes=[W(CLOSE, close_payload(1001, b"bye"))], state=CLOSING)
    assert protocol.close_rcvd_then_sent is False
    assert protocol.close_expected()
    # After sending a close frame we keep reading until the peer's close frame (7.1.2).
    protocol.receive_data(inbound(side, TEXT, b"in flight"))
    check(protocol, events=[TextMessage("in flight")], state=CLOSING)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000)))
    # No second close frame; the server now closes TCP, the client waits for it.
    check(protocol, events=[CloseReceived(Close(1000))], writes=eof(side), state=CLOSING)
    assert protocol.close_rcvd_then_sent is False
    assert protocol.close_expected()
    protocol.receive_eof()
    check(protocol, writes=[EOF] if side is CLIENT else [], state=CLOSED)
    assert protocol.close_code == 1000
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedOK)
    assert (exc.rcvd, exc.sent, exc.rcvd_then_sent) == (Close(1000), Close(1001, "bye"), False)


def test_we_close_first_without_code(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close()
    check(protocol, writes=[W(CLOSE, b"")], state=CLOSING)
    assert protocol.close_sent == Close(1005)


def test_peer_closes_with_error_code(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1011)))
    written(protocol)
    protocol.receive_eof()
    assert protocol.close_code == 1011
    assert isinstance(protocol.close_exc, ConnectionClosedError)


def test_discards_data_after_close(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(
        inbound(side, CLOSE, close_payload(1000))
        + inbound(side, TEXT, b"after")
        + inbound(side, PING, b"after")
    )
    check(
        protocol,
        events=[CloseReceived(Close(1000))],
        writes=[W(CLOSE, close_payload(1000)), *eof(side)],
        state=CLOSING,
    )
    # Even garbage is ignored now.
    protocol.receive_data(inbound(side, TEXT, b"\xff") + b"\xff\xff\xff")
    check(protocol, state=CLOSING)


def test_discards_data_after_close_in_later_chunk(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close(1000)
    written(protocol)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000)))
    check(protocol, events=[CloseReceived(Close(1000))], writes=eof(side), state=CLOSING)
    protocol.receive_data(inbound(side, BINARY, b"after") + inbound(side, CLOSE, b"\x03"))
    check(protocol, state=CLOSING)


def test_receives_close_during_fragmented_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"never", fin=False))
    protocol.receive_data(inbound(side, CLOSE, close_payload(1001)))
    # The unfinished message is dropped; nothing else is reported.
    check(
        protocol,
        events=[CloseReceived(Close(1001))],
        writes=[W(CLOSE, close_payload(1001)), *eof(side)],
        state=CLOSING,
    )
    protocol.receive_data(inbound(side, CONT, b" ends"))
    check(protocol, state=CLOSING)


def test_sends_close_during_fragmented_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_text("never", fin=False)
    protocol.send_close(1000)
    check(
        protocol,
        writes=[W(TEXT, b"never", fin=False), W(CLOSE, close_payload(1000))],
        state=CLOSING,
    )
    with pytest.raises(InvalidState):
        protocol.send_continuation(b" ends", fin=True)
    check(protocol, state=CLOSING)


def test_receives_close_frame_with_128_byte_reason_split_before_it(side: Side) -> None:
    # Close frames over 125 bytes are refused even when split across reads.
    protocol = Protocol(side)
    data = inbound(side, CLOSE, close_payload(1000, b"r" * 126))
    protocol.receive_data(data[:3])
    check(protocol)
    protocol.receive_data(data[3:])
    check_failed(protocol, 1002, ProtocolError)


def test_receives_eof_without_close(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_eof()
    # 7.1.5: the close code is 1006. Both sides close TCP: nothing else can happen.
    check(protocol, writes=[EOF], state=CLOSED)
    assert protocol.close_code == 1006
    assert protocol.close_reason == ""
    assert not protocol.close_expected()
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006
    assert (exc.rcvd, exc.sent) == (None, None)
    # Bytes or EOF after EOF change nothing.
    protocol.receive_data(inbound(side, TEXT, b"ghost"))
    protocol.receive_eof()
    check(protocol, state=CLOSED)


def test_receives_eof_during_fragmented_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"half", fin=False))
    protocol.receive_eof()
    check(protocol, writes=[EOF], state=CLOSED)
    assert protocol.close_code == 1006


def test_receives_eof_inside_a_frame(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"truncated")[:5])
    protocol.receive_eof()
    check(protocol, writes=[EOF], state=CLOSED)
    assert protocol.close_code == 1006
    assert isinstance(protocol.close_exc, ConnectionClosedError)


def test_receives_eof_after_sending_close(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close(1000)
    written(protocol)
    protocol.receive_eof()
    check(protocol, writes=[EOF], state=CLOSED)
    assert protocol.close_code == 1006
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert (exc.rcvd, exc.sent) == (None, Close(1000))


def test_failure_then_eof(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CONT, b"orphan"))
    check_failed(protocol, 1002, ProtocolError)
    protocol.receive_eof()
    check(protocol, writes=[EOF] if side is CLIENT else [], state=CLOSED)
    assert protocol.close_code == 1006
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.sent is not None and exc.sent.code == 1002
    # The peer's error is chained for the I/O layer to show.
    assert isinstance(exc.__cause__, ProtocolError)


def test_fail_by_the_application(side: Side) -> None:
    protocol = Protocol(side)
    protocol.fail(1008, "policy")
    check(protocol, writes=[W(CLOSE, close_payload(1008, b"policy")), *eof(side)], state=CLOSING)
    # Failing again sends nothing.
    protocol.fail(1011)
    check(protocol, state=CLOSING)
    assert protocol.close_sent == Close(1008, "policy")


def test_fail_truncates_long_reason(side: Side) -> None:
    protocol = Protocol(side)
    protocol.fail(1011, "é" * 200)
    [frame, *rest] = written(protocol)
    assert rest == eof(side)
    assert isinstance(frame, W) and frame.opcode == CLOSE
    assert len(frame.payload) <= 125
    assert frame.payload[:2] == close_payload(1011)
    assert frame.payload[2:].decode().startswith("éé")


def test_fail_after_close_sent_sends_no_second_close(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close(1000)
    written(protocol)
    protocol.receive_data(inbound(side, TEXT, b"\xff"))
    # 1007 cannot be sent any more: our close frame is already out.
    check(protocol, writes=eof(side), state=CLOSING)
    assert isinstance(protocol.parser_exc, UnicodeDecodeError)
    assert protocol.close_sent == Close(1000)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000)))
    check(protocol, state=CLOSING)


def test_sends_eof_only_once(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000)))
    writes = written(protocol)
    protocol.fail(1002)
    writes += written(protocol)
    protocol.receive_eof()
    writes += written(protocol)
    assert writes == [W(CLOSE, close_payload(1000)), EOF]
    assert protocol.state is CLOSED


def test_sends_eof_twice(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_eof()
    written(protocol)
    with pytest.raises(InvalidState):
        protocol.send_eof()
    check(protocol, state=CLOSED)


@pytest.mark.parametrize("code", ILLEGAL_CODES)
def test_sends_close_with_illegal_code(side: Side, code: int) -> None:
    protocol = Protocol(side)
    with pytest.raises(ValueError):
        protocol.send_close(code)
    check(protocol)
    assert protocol.close_sent is None


@pytest.mark.parametrize("code", LEGAL_CODES)
def test_sends_close_with_legal_code(side: Side, code: int) -> None:
    protocol = Protocol(side)
    protocol.send_close(code, "ok")
    check(protocol, writes=[W(CLOSE, close_payload(code, b"ok"))], state=CLOSING)


def test_sends_close_with_too_long_reason(side: Side) -> None:
    protocol = Protocol(side)
    with pytest.raises(ValueError):
        protocol.send_close(1000, "é" * 62)  # 124 bytes
    check(protocol)
    protocol.send_close(1000, "r" * 123)
    check(protocol, writes=[W(CLOSE, close_payload(1000, b"r" * 123))], state=CLOSING)


def test_sends_close_reason_without_code(side: Side) -> None:
    protocol = Protocol(side)
    with pytest.raises(ValueError):
        protocol.send_close(None, "why")
    check(protocol)


# --- limits -----------------------------------------------------------------------------------


def test_receives_frame_at_frame_size_limit(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_frame_size=200))
    protocol.receive_data(inbound(side, BINARY, b"x" * 200))
    check(protocol, events=[BinaryMessage(b"x" * 200)])


def test_receives_frame_over_frame_size_limit(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_frame_size=200))
    protocol.receive_data(inbound(side, BINARY, b"x" * 201))
    check_failed(protocol, 1009, PayloadTooBig)


def test_refuses_huge_frame_from_its_header(side: Side) -> None:
    # The header is enough: no need to buffer 1 TiB to know it is too big.
    protocol = Protocol(side)
    head = b"\x82" + bytes([(0x80 if side is SERVER else 0) | 127])
    head += (2**40).to_bytes(8, "big") + (MASK_KEY if side is SERVER else b"")
    protocol.receive_data(head)
    check_failed(protocol, 1009, PayloadTooBig)


def test_receives_message_at_message_size_limit(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_message_size=10))
    protocol.receive_data(inbound(side, TEXT, b"x" * 10))
    protocol.receive_data(inbound(side, TEXT, b"x" * 6, fin=False) + inbound(side, CONT, b"y" * 4))
    check(protocol, events=[TextMessage("x" * 10), TextMessage("x" * 6 + "y" * 4)])


def test_receives_message_over_message_size_limit(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_message_size=10))
    protocol.receive_data(inbound(side, BINARY, b"x" * 11))
    check_failed(protocol, 1009, PayloadTooBig)


@pytest.mark.parametrize("assemble", [True, False], ids=["assemble", "stream"])
def test_counts_message_size_across_fragments(side: Side, assemble: bool) -> None:
    protocol = Protocol(side, limits=Limits(max_message_size=10), assemble=assemble)
    protocol.receive_data(inbound(side, BINARY, b"x" * 4, fin=False))
    protocol.receive_data(inbound(side, CONT, b"x" * 4, fin=False))
    check(
        protocol,
        events=[]
        if assemble
        else [Fragment(b"xxxx", True, False), Fragment(b"xxxx", False, False)],
    )
    protocol.receive_data(inbound(side, CONT, b"x" * 3))
    check_failed(protocol, 1009, PayloadTooBig)


def test_message_size_counter_restarts_with_each_message(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_message_size=10))
    for _ in range(3):
        protocol.receive_data(inbound(side, BINARY, b"x" * 5, fin=False))
        protocol.receive_data(inbound(side, CONT, b"x" * 5))
    check(protocol, events=[BinaryMessage(b"x" * 10)] * 3)


def test_control_frames_do_not_count_toward_message_size(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_message_size=10))
    protocol.receive_data(inbound(side, BINARY, b"x" * 5, fin=False))
    protocol.receive_data(inbound(side, PING, b"p" * 100))
    protocol.receive_data(inbound(side, CONT, b"x" * 5))
    check(
        protocol,
        events=[Ping(b"p" * 100), BinaryMessage(b"x" * 10)],
        writes=[W(PONG, b"p" * 100)],
    )


def test_receives_large_message_without_limits(side: Side) -> None:
    protocol = Protocol(side, limits=Limits(max_frame_size=None, max_message_size=None))
    big = b"z" * (2**20 + 1)
    protocol.receive_data(inbound(side, BINARY, big, fin=False) + inbound(side, CONT, big))
    check(protocol, events=[BinaryMessage(big + big)])


def test_default_limits_refuse_message_over_one_mib(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, BINARY, b"z" * (2**20 + 1)))
    check_failed(protocol, 1009, PayloadTooBig)


# --- one choke point for peer errors ----------------------------------------------------------


def test_extension_internal_error_is_1011_without_details(
    side: Side, caplog: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("secret: password=hunter2")
    protocol = with_extensions(side, Broken(error))
    protocol.receive_data(inbound(side, BINARY, b"x"))
    reason = check_failed(protocol, 1011, RuntimeError)
    assert reason == b""
    assert protocol.parser_exc is error
    assert protocol.close_exc.__cause__ is error
    # The details go to the log, not to the peer.
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ProtocolError("bad extension data"), 1002),
        (PayloadTooBig("inflated too much"), 1009),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 1007),
    ],
    ids=["protocol", "too-big", "utf-8"],
)
def test_extension_errors_map_to_close_codes(side: Side, exc: Exception, code: int) -> None:
    protocol = with_extensions(side, Broken(exc))
    protocol.receive_data(inbound(side, TEXT, b"x"))
    check_failed(protocol, code, type(exc))
    assert protocol.parser_exc is exc


def test_logs_at_debug_level(side: Side, caplog: pytest.LogCaptureFixture) -> None:
    # Debug logging formats every frame, including ones that fail: it must never raise.
    caplog.set_level(logging.DEBUG, logger="tether.protocol")
    protocol = Protocol(side)
    protocol.send_text("out")
    protocol.receive_data(inbound(side, TEXT, b"in", fin=False) + inbound(side, CONT, b"\xff"))
    lost = Protocol(side)
    lost.receive_data(inbound(side, BINARY, b"\x00", fin=False))
    lost.receive_eof()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "> TEXT 'out' [3 bytes]",
        "< TEXT 'in' [2 bytes] [continued]",
        "< CONT ff [1 byte]",
        "! failing connection with 1007: invalid UTF-8: invalid start byte",
        "> CLOSE 1007 (invalid frame payload data) invalid UTF-8: invalid start byte [35 bytes]",
        "= connection is CLOSING",
        *(["> EOF"] if side is SERVER else []),
        "< BINARY 00 [1 byte] [continued]",
        "< EOF",
        "connection lost in the middle of a message",
        "> EOF",
        "= connection is CLOSED",
    ]


# --- misuse of the API ------------------------------------------------------------------------

SENDS = [
    ("send_text", ("x",)),
    ("send_binary", (b"x",)),
    ("send_message", ("x",)),
    ("send_continuation", (b"x", True)),
    ("send_ping", (b"x",)),
    ("send_pong", (b"x",)),
    ("send_close", (1000,)),
]


def closing_by_us(side: Side) -> Protocol:
    protocol = Protocol(side)
    protocol.send_close(1000)
    return protocol


def closing_by_peer(side: Side) -> Protocol:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CLOSE, close_payload(1000)))
    protocol.events_received()
    return protocol


def failed(side: Side) -> Protocol:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, CONT, b"x"))
    return protocol


def closed(side: Side) -> Protocol:
    protocol = Protocol(side)
    protocol.receive_eof()
    return protocol


def connecting(side: Side) -> Protocol:
    return Protocol(side, state=State.CONNECTING)


@pytest.mark.parametrize(("method", "args"), SENDS, ids=[name for name, _ in SENDS])
@pytest.mark.parametrize(
    "make", [closing_by_us, closing_by_peer, failed, closed, connecting], ids=lambda f: f.__name__
)
def test_sends_when_not_open(side: Side, make: object, method: str, args: tuple[object]) -> None:
    protocol = make(side)  # type: ignore[operator]
    state = protocol.state
    written(protocol)
    close_sent = protocol.close_sent
    with pytest.raises(InvalidState):
        getattr(protocol, method)(*args)
    check(protocol, state=state)
    assert protocol.close_sent == close_sent


def test_invalid_state_is_not_a_peer_error() -> None:
    # The I/O layer tells them apart by type.
    assert not issubclass(InvalidState, ProtocolError | PayloadTooBig)


def test_sends_continuation_without_message(side: Side) -> None:
    protocol = Protocol(side)
    with pytest.raises(InvalidState):
        protocol.send_continuation(b"x", fin=True)
    with pytest.raises(InvalidState):
        protocol.send_continuation(b"x", fin=False)
    check(protocol)
    # The connection is unaffected.
    protocol.send_text("fine")
    check(protocol, writes=[W(TEXT, b"fine")])


def test_sends_continuation_after_message_ended(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_binary(b"a", fin=False)
    protocol.send_continuation(b"b", fin=True)
    written(protocol)
    with pytest.raises(InvalidState):
        protocol.send_continuation(b"c", fin=True)
    check(protocol)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("send_text", ("x",)),
        ("send_text", ("x", False)),
        ("send_binary", (b"x",)),
        ("send_binary", (b"x", False)),
        ("send_message", ("x",)),
        ("send_message", (b"x" * 100,)),
    ],
)
def test_starts_message_during_fragmented_message(
    side: Side, method: str, args: tuple[object]
) -> None:
    protocol = Protocol(side, limits=Limits(max_outgoing_frame_size=10))
    protocol.send_text("a", fin=False)
    written(protocol)
    with pytest.raises(InvalidState):
        getattr(protocol, method)(*args)
    check(protocol)
    # The message in progress can still be finished.
    protocol.send_continuation("b", fin=True)
    check(protocol, writes=[W(CONT, b"b")])


def test_misuse_keeps_incoming_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(inbound(side, TEXT, b"a", fin=False))
    with pytest.raises(InvalidState):
        protocol.send_continuation(b"x", fin=True)
    protocol.receive_data(inbound(side, CONT, b"b"))
    check(protocol, events=[TextMessage("ab")])


# --- tricky orders ----------------------------------------------------------------------------


def test_ping_pong_and_close_between_fragments(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_ping(b"mine")
    written(protocol)
    protocol.receive_data(
        inbound(side, BINARY, b"1", fin=False)
        + inbound(side, PING, b"theirs")
        + inbound(side, CONT, b"2", fin=False)
        + inbound(side, PONG, b"mine")
        + inbound(side, CONT, b"3", fin=False)
        + inbound(side, CLOSE, close_payload(1000))
        + inbound(side, CONT, b"4")
    )
    check(
        protocol,
        events=[Ping(b"theirs"), Pong(b"mine", (b"mine",)), CloseReceived(Close(1000))],
        writes=[W(PONG, b"theirs"), W(CLOSE, close_payload(1000)), *eof(side)],
        state=CLOSING,
    )


def test_error_in_later_frame_of_a_chunk_keeps_earlier_events(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(
        inbound(side, TEXT, b"good") + inbound(side, PING, b"p") + inbound(side, CONT, b"bad")
    )
    assert protocol.events_received() == [TextMessage("good"), Ping(b"p")]
    writes = written(protocol)
    assert writes[0] == W(PONG, b"p")
    assert isinstance(writes[1], W) and writes[1].payload[:2] == close_payload(1002)
    assert writes[2:] == eof(side)
    assert protocol.state is CLOSING


def test_close_frame_split_across_reads(side: Side) -> None:
    protocol = Protocol(side)
    data = inbound(side, CLOSE, close_payload(4000, b"split"))
    for i in range(len(data) - 1):
        protocol.receive_data(data[i : i + 1])
    check(protocol)
    protocol.receive_data(data[-1:])
    check(
        protocol,
        events=[CloseReceived(Close(4000, "split"))],
        writes=[W(CLOSE, close_payload(4000)), *eof(side)],
        state=CLOSING,
    )


def test_interleaving_is_independent_of_chunking(side: Side) -> None:
    data = (
        inbound(side, TEXT, "Ünï".encode(), fin=False)
        + inbound(side, PING, b"")
        + inbound(side, CONT, "cødé".encode())
        + inbound(side, BINARY, b"\x00" * 300)
    )
    reference = Protocol(side)
    reference.receive_data(data)
    expected_events = reference.events_received()
    expected_writes = written(reference)
    assert expected_events == [Ping(b""), TextMessage("Ünïcødé"), BinaryMessage(b"\x00" * 300)]
    for a, b in itertools.combinations(range(0, len(data), 7), 2):
        protocol = Protocol(side)
        for chunk in (data[:a], data[a:b], data[b:]):
            protocol.receive_data(chunk)
        check(protocol, events=expected_events, writes=expected_writes)


# --- properties -------------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def other(side: Side) -> Side:
    return CLIENT if side is SERVER else SERVER


def chunked(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """Cut ``data`` into chunks of the given sizes, cycling through them."""
    i = 0
    n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        yield data[i : i + size]
        i += size
        n += 1


def pipe(sender: Protocol, receiver: Protocol, sizes: list[int]) -> bool:
    """Move what ``sender`` wrote into ``receiver``; return whether it wrote EOF."""
    writes = sender.data_to_send()
    data = b"".join(writes)
    for chunk in chunked(data, sizes):
        receiver.receive_data(chunk)
    if b"" in writes:
        assert writes.index(b"") == len(writes) - 1
        receiver.receive_eof()
        return True
    return False


# --- 1. round trip ----------------------------------------------------------------------------


@dataclasses.dataclass
class Message:
    data: str | bytes
    #: Cut points in the UTF-8 (or binary) payload; empty: one frame.
    cuts: list[int]
    #: Before which fragments (0 = before the first) a ping goes out.
    pings: list[bool]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    data: str | bytes = draw(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
    payload = data.encode() if isinstance(data, str) else data
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pings = draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    return Message(data, cuts, pings)


def normalise(events: list[Event]) -> list[object]:
    """Whole messages and pings, in order, from either assembled or streamed events."""
    out: list[object] = []
    pieces: list[str | bytes] = []
    for event in events:
        if isinstance(event, Fragment):
            assert event.first is (not pieces)
            pieces.append(event.data)
            if event.last:
                if isinstance(event.data, str):
                    assert all(isinstance(p, str) for p in pieces)
                    out.append(TextMessage("".join(p for p in pieces if isinstance(p, str))))
                else:
                    assert all(isinstance(p, bytes) for p in pieces)
                    out.append(BinaryMessage(b"".join(p for p in pieces if isinstance(p, bytes))))
                pieces = []
        else:
            out.append(event)
    assert not pieces, "a streamed message did not end"
    return out


@SETTINGS
@given(
    side=st.sampled_from([SERVER, CLIENT]),
    assemble=st.booleans(),
    frame_size=st.one_of(st.none(), st.integers(1, 16)),
    batch=st.lists(messages(), max_size=6),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    back_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    extension=st.booleans(),
)
def test_messages_round_trip(
    side: Side,
    assemble: bool,
    frame_size: int | None,
    batch: list[Message],
    sizes: list[int],
    back_sizes: list[int],
    extension: bool,
) -> None:
    # Optionally through an extension that owns RSV1 and rewrites every data frame.
    extensions = [Reverse()] if extension else []
    sender = with_extensions(side, *extensions, limits=Limits(max_outgoing_frame_size=frame_size))
    receiver = with_extensions(other(side), *extensions, assemble=assemble)
    expected: list[object] = []
    pings: list[bytes] = []

    def ping() -> None:
        payload = f"ping {len(pings)}".encode()
        sender.send_ping(payload)
        pings.append(payload)
        expected.append(Ping(payload))

    for message in batch:
        text = isinstance(message.data, str)
        payload = message.data.encode() if isinstance(message.data, str) else message.data
        if message.pings[0]:
            ping()
        if frame_size is not None and not message.cuts:
            # Automatic fragmentation.
            sender.send_message(message.data)
        else:
            bounds = [0, *message.cuts, len(payload)]
            parts = [payload[a:b] for a, b in itertools.pairwise(bounds)]
            send_first = sender.send_text if text else sender.send_binary
            send_first(parts[0], fin=len(parts) == 1)
            for i, part in enumerate(parts[1:], start=1):
                if message.pings[i]:
                    ping()
                sender.send_continuation(part, fin=i == len(parts) - 1)
        if isinstance(message.data, str):
            expected.append(TextMessage(message.data))
        else:
            expected.append(BinaryMessage(payload))
        # Feed in the middle of the batch too: nothing depends on reading it all at once.
        pipe(sender, receiver, sizes)

    assert normalise(receiver.events_received()) == expected
    assert receiver.state is State.OPEN

    # The receiver answered every ping, in order; the pongs acknowledge them one by one.
    pongs = b"".join(receiver.data_to_send())
    assert [w for w, _ in decode(pongs, masked=receiver.side is CLIENT)] == [
        W(PONG, p) for p in pings
    ]
    for chunk in chunked(pongs, back_sizes):
        sender.receive_data(chunk)
    assert sender.events_received() == [Pong(p, (p,)) for p in pings]

    # The sender closes, the receiver echoes; the server closes TCP first, then the client.
    sender.send_close(1000, "done")
    pipe(sender, receiver, sizes)
    assert receiver.events_received() == [CloseReceived(Close(1000, "done"))]
    eofs = [receiver.side] if pipe(receiver, sender, back_sizes) else []
    assert sender.events_received() == [CloseReceived(Close(1000))]
    for _ in range(3):
        if pipe(sender, receiver, sizes):
            eofs.append(sender.side)
        if pipe(receiver, sender, back_sizes):
            eofs.append(receiver.side)
    assert eofs == [SERVER, CLIENT]
    for protocol in (sender, receiver):
        assert protocol.state is State.CLOSED
        assert protocol.close_code == 1000
        assert protocol.events_received() == []
    assert sender.close_rcvd_then_sent is False
    assert receiver.close_rcvd_then_sent is True


# --- 2. arbitrary input -----------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn, side: Side) -> bytes:
    """A frame that is plausible but may break any rule: any opcode, bits and length."""
    opcode = draw(st.integers(0, 15) | st.sampled_from([0, 1, 2, 8, 9, 10]))
    payload = draw(st.binary(max_size=140))
    if opcode == CLOSE and draw(st.booleans()):
        code = draw(st.integers(0, 5100) | st.sampled_from([1000, 1005, 3000, 4999]))
        reason = draw(st.text(max_size=10)).encode() if draw(st.booleans()) else payload[:20]
        payload = close_payload(code, reason)
    elif opcode in (0, 1) and draw(st.booleans()):
        payload = draw(st.text(max_size=40)).encode()
    fin = draw(st.booleans()) if opcode < 8 else draw(st.integers(0, 9)) > 0
    rsv = draw(st.sampled_from([0, 0, 0, 0x10, 0x20, 0x40]))
    masked = (side is SERVER) if draw(st.integers(0, 9)) > 0 else side is CLIENT
    key = draw(st.binary(min_size=4, max_size=4)) if masked else None
    data = encode(opcode, payload, fin=fin, rsv=rsv, mask_key=key)
    if draw(st.integers(0, 19)) == 0:
        # Lie about the length.
        data = data[:1] + bytes([data[1] ^ draw(st.integers(1, 127))]) + data[2:]
    return data


@st.composite
def streams(draw: st.DrawFn, side: Side) -> bytes:
    """Mostly well-formed traffic, so that the state machine gets deep, with bad parts mixed
    in: invalid UTF-8, oversized or illegal control frames, wild frames, junk, a flipped byte."""

    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        key = draw(st.binary(min_size=4, max_size=4)) if side is SERVER else None
        return encode(opcode, payload, fin=fin, mask_key=key)

    kinds = ["message", "message", "message", "ping", "pong", "close", "wild", "junk"]
    parts: list[bytes] = []
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=6)):
        if kind == "message":
            opcode = draw(st.sampled_from([0x1, 0x2]))
            if opcode == 0x1:
                payload = draw(st.text(max_size=80)).encode()
                if draw(st.integers(0, 4)) == 0:
                    bad = draw(st.sampled_from([b"\xff", b"\xed\xa0", b"\xc3", b"\xf4\x90"]))
                    i = draw(st.integers(0, len(payload)))
                    payload = payload[:i] + bad + payload[i:]
            else:
                # Sizes around the limits the test uses (64 per frame, 100 per message).
                size = draw(st.integers(0, 150) | st.sampled_from([64, 65, 100, 101]))
                payload = draw(st.binary(min_size=size, max_size=size))
            cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
            bounds = [0, *cuts, len(payload)]
            for n, (a, b) in enumerate(itertools.pairwise(bounds)):
                if n and draw(st.integers(0, 3)) == 0:
                    parts.append(frame(PING, draw(st.binary(max_size=8))))
                parts.append(frame(opcode if n == 0 else 0x0, payload[a:b], b == len(payload)))
        elif kind in ("ping", "pong"):
            parts.append(frame(PING if kind == "ping" else PONG, draw(st.binary(max_size=130))))
        elif kind == "close":
            if draw(st.booleans()):
                parts.append(frame(CLOSE, b""))
            else:
                code = draw(st.sampled_from([1000, 1001, 1005, 1006, 3000, 4999, 5000, 999]))
                reason = draw(st.text(max_size=20)).encode()
                if draw(st.integers(0, 3)) == 0:
                    reason += b"\xff"
                parts.append(frame(CLOSE, close_payload(code, reason)))
        elif kind == "wild":
            parts.append(draw(frames(side)))
        else:
            parts.append(draw(st.binary(max_size=20)))
    data = b"".join(parts)
    if data and draw(st.integers(0, 5)) == 0:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    return data


def run(
    side: Side, data: bytes, sizes: list[int], limits: Limits, assemble: bool
) -> tuple[list[Event], list[W | str], Protocol]:
    protocol = Protocol(side, limits=limits, assemble=assemble)
    for chunk in chunked(data, sizes):
        protocol.receive_data(chunk)
    events = protocol.events_received()
    writes: list[W | str] = []
    for out in protocol.data_to_send():
        if out == b"":
            writes.append(EOF)
        else:
            writes.extend(w for w, _ in decode(bytes(out), masked=side is CLIENT))
    return events, writes, protocol


@SETTINGS
@given(
    data=st.data(),
    side=st.sampled_from([SERVER, CLIENT]),
    assemble=st.booleans(),
    max_frame_size=st.sampled_from([None, 64, 2**20]),
    max_message_size=st.sampled_from([None, 100, 2**20]),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
def test_arbitrary_input_fails_cleanly(
    data: st.DataObject,
    side: Side,
    assemble: bool,
    max_frame_size: int | None,
    max_message_size: int | None,
    sizes: list[int],
) -> None:
    if data.draw(st.integers(0, 4)) == 0:
        stream = data.draw(st.binary(max_size=300))
    else:
        stream = data.draw(streams(side))
    limits = Limits(max_frame_size=max_frame_size, max_message_size=max_message_size)
    events, writes, protocol = run(side, stream, sizes, limits, assemble)

    allowed = (TextMessage, BinaryMessage, Fragment, Ping, Pong, CloseReceived)
    assert all(isinstance(event, allowed) for event in events)
    closes = [e for e in events if isinstance(e, CloseReceived)]
    assert len(closes) <= 1
    if closes:
        assert events[-1] is closes[0], "nothing is reported after a close frame"

    # Each ping got its pong, then at most one close frame, then EOF from a server.
    pongs = [W(PONG, e.data) for e in events if isinstance(e, Ping)]
    assert writes[: len(pongs)] == pongs
    rest = writes[len(pongs) :]
    outcome(f"{len(events)} events" if len(events) < 3 else "3+ events")
    if not rest:
        outcome("still open")
        assert protocol.state is State.OPEN
        assert protocol.parser_exc is None
        assert not closes
    else:
        close = rest[0]
        assert isinstance(close, W) and close.opcode == CLOSE and close.fin and not close.rsv
        assert rest[1:] == ([EOF] if side is SERVER else [])
        assert protocol.state is State.CLOSING
        assert protocol.close_expected()
        if closes:
            # The echo of the peer's close frame.
            received = closes[0].close
            outcome("close frame received")
            echo = b"" if received.code == 1005 else close_payload(received.code)
            assert close.payload == echo
            assert protocol.parser_exc is None
        else:
            sent = Close.parse(close.payload)
            outcome(f"failed with {sent.code}")
            assert sent.code in (1002, 1007, 1009)
            assert protocol.parser_exc is not None

    # The same bytes in one chunk give the same result.
    events_once, writes_once, _ = run(side, stream, [len(stream) or 1], limits, assemble)
    assert (events_once, writes_once) == (events, writes)

    # And the connection still ends cleanly.
    protocol.receive_eof()
    assert protocol.state is State.CLOSED  # type: ignore[comparison-overlap]
    assert protocol.close_code is not None
    exc = protocol.close_exc
    assert isinstance(exc, ConnectionClosedOK | ConnectionClosedError)
    assert exc.__cause__ is protocol.parser_exc
    if protocol.parser_exc is not None:
        assert isinstance(exc, ConnectionClosedError)


@settings(SETTINGS, max_examples=100)
@given(
    side=st.sampled_from([SERVER, CLIENT]),
    prefix=st.binary(max_size=30),
    junk=st.binary(min_size=1, max_size=60),
)
def test_valid_message_then_garbage(side: Side, prefix: bytes, junk: bytes) -> None:
    # A valid message, then anything: the message is delivered before whatever happens next.
    key = MASK_KEY if side is SERVER else None
    stream = encode(0x2, prefix, mask_key=key) + junk
    events, writes, protocol = run(side, stream, [7], Limits(), True)
    assert events[0] == BinaryMessage(prefix)
    assert protocol.state in (State.OPEN, State.CLOSING)
    assert all(w == EOF or (isinstance(w, W) and w.opcode in (PONG, CLOSE)) for w in writes)


def test_base_protocol_leaves_the_handshake_to_the_roles() -> None:
    protocol = Protocol(Side.SERVER, state=State.CONNECTING)
    with pytest.raises(NotImplementedError):
        protocol.receive_data(b"GET / HTTP/1.1\r\n")


# --- reusing the buffer of large masked frames (reuse_output / recycle_output) ----------------


def test_large_masked_frames_are_built_in_the_recycled_buffer() -> None:
    client = Protocol(CLIENT)
    payload = bytes(range(256)) * 256  # 64 KiB: SPLIT_WRITE_SIZE
    client.send_binary(payload)
    [plain] = client.data_to_send()
    assert type(plain) is bytes  # reuse_output is off by default
    client.reuse_output = True
    client.send_binary(payload)
    [first] = client.data_to_send()
    assert type(first) is bytearray
    client.recycle_output(first)
    client.send_binary(payload)
    client.send_binary(payload)  # the spare went to the first: a new buffer
    second, third = client.data_to_send()
    assert second is first and third is not first
    # Each carries a fresh key and unmasks to the payload.
    server = Protocol(SERVER)
    server.receive_data(bytes(second) + bytes(third) + plain)
    assert [event.data for event in server.events_received()] == [payload] * 3  # type: ignore[union-attr]
    assert second[10:14] != third[10:14]  # the masking keys
    client.recycle_output(b"ignored")  # only bytearrays are kept
    client.send_binary(b"small")  # below SPLIT_WRITE_SIZE: bytes as always
    assert [type(data) for data in client.data_to_send()] == [bytes]


# --- large payloads read in place (payload_buffer / payload_received) ---------------------------


def read_in_place(protocol: Protocol, wire: bytes, chunk: int = 2**17) -> None:
    """What asyncio's BufferedProtocol does with the protocol's payload_buffer()."""
    pos = 0
    while pos < len(wire):
        view = protocol.payload_buffer()
        if view is None:
            protocol.receive_data(wire[pos : pos + chunk])
            pos += chunk
        else:
            n = min(len(view), chunk, len(wire) - pos)
            view[:n] = wire[pos : pos + n]
            protocol.payload_received(n)
            pos += n


@pytest.mark.parametrize("side", [SERVER, CLIENT])
def test_large_message_read_in_place(side: Side) -> None:
    protocol = Protocol(side)
    assert protocol.payload_buffer() is None
    payload = bytes(range(256)) * 2048  # 512 KiB
    read_in_place(protocol, inbound(side, Opcode.BINARY, payload) + inbound(side, Opcode.PING))
    assert protocol.events_received() == [BinaryMessage(payload), Ping(b"")]


def test_invalid_utf8_read_in_place_fails_before_the_frame_ends() -> None:
    # 8.1: fail as soon as the text is not UTF-8, also when the payload is read in place.
    server = Protocol(SERVER)
    payload = "é".encode() * 2**18 + b"\xff" + bytes(2**18)
    wire = inbound(SERVER, Opcode.TEXT, payload)
    cut = len(wire) - 2**17  # the bad byte has arrived, the end of the frame has not
    read_in_place(server, wire[:cut])
    assert server.close_sent is not None and server.close_sent.code == 1007
    assert server.payload_buffer() is None
    server.payload_received(10)  # bytes read into a view taken before: dropped
    assert server.events_received() == []


def test_no_payload_buffer_during_the_handshake_or_after_eof() -> None:
    client = Protocol(CLIENT, state=State.CONNECTING)
    assert client.payload_buffer() is None
    client = Protocol(CLIENT)
    client.receive_data(inbound(CLIENT, Opcode.BINARY, bytes(2**20))[: 2**19 + 100])
    view = client.payload_buffer()
    assert view is not None
    client.receive_eof()
    assert client.payload_buffer() is None
    client.payload_received(len(view))  # ignored: the connection is closed
    assert client.events_received() == []
