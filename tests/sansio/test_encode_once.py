"""Compress-once broadcast as a sans-I/O API: encode_message, send_encoded, MessageEncoder."""

from __future__ import annotations

import pytest

from tether.exceptions import InvalidState
from tether.extensions.permessage_deflate import PerMessageDeflate
from tether.limits import Limits
from tether.sansio.codes import Opcode
from tether.sansio.events import BinaryMessage, TextMessage
from tether.sansio.frames import FrameParser
from tether.sansio.protocol import MessageEncoder, Protocol, Side


def deflate(no_context_takeover: bool = True, window: int = 15) -> PerMessageDeflate:
    # (remote_no_context_takeover, local_no_context_takeover, remote bits, local bits)
    return PerMessageDeflate(False, no_context_takeover, 15, window)


def server(*extensions: PerMessageDeflate, limits: Limits | None = None) -> Protocol:
    protocol = Protocol(Side.SERVER, limits=limits)
    protocol.extensions = list(extensions)
    return protocol


def receive(wire: bytes | bytearray, *extensions: PerMessageDeflate) -> list[object]:
    """What a client with ``extensions`` reads from ``wire``."""
    client = Protocol(Side.CLIENT)
    client.extensions = list(extensions)
    client._start_frames()  # the extensions' RSV bits are allowed from now on
    client.receive_data(wire)
    return list(client.events_received())


def test_plain_protocols_share_one_encoding() -> None:
    a, b = server(), server()
    assert a.encoding_key(5) == b.encoding_key(5) == ()
    encoder = MessageEncoder("hello")
    first, second = encoder.encode_for(a), encoder.encode_for(b)
    assert first is second
    a.send_encoded(first)
    b.send_encoded(second)
    assert a.data_to_send() == b.data_to_send() == [b"\x81\x05hello"]


def test_compressed_once_per_group_of_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = PerMessageDeflate.compress_message

    def spy(self: PerMessageDeflate, data: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return original(self, data)

    monkeypatch.setattr(PerMessageDeflate, "compress_message", spy)
    group_15 = [server(deflate()) for _ in range(3)]
    group_10 = [server(deflate(window=10)) for _ in range(2)]
    message = "compress me once " * 20
    encoder = MessageEncoder(message)
    for protocol in group_15 + group_10:
        protocol.send_encoded(encoder.encode_for(protocol))
    assert calls == 2
    for protocol in group_15:
        (wire,) = protocol.data_to_send()
        assert wire[0] & 0x40  # RSV1: compressed
        assert receive(wire, PerMessageDeflate(True, False, 15, 15)) == [TextMessage(message)]


def test_small_messages_go_uncompressed_in_one_group() -> None:
    plain_key = server(deflate()).encoding_key(3)
    assert plain_key == server(deflate(window=9)).encoding_key(3)
    encoded = server(deflate()).encode_message(b"abc")
    assert encoded.data == b"\x82\x03abc"


def test_context_takeover_encodes_per_connection_through_the_extension() -> None:
    protocol = server(deflate(no_context_takeover=False))
    assert protocol.encoding_key(1000) is None
    encoded = MessageEncoder(b"x" * 1000).encode_for(protocol)
    assert encoded.key is None and encoded.data == b""
    protocol.send_encoded(encoded)  # compressed by the connection's own compressor
    (wire,) = protocol.data_to_send()
    assert receive(wire, PerMessageDeflate(False, True, 15, 15)) == [BinaryMessage(b"x" * 1000)]


def test_clients_mask_so_they_never_share() -> None:
    client = Protocol(Side.CLIENT)
    assert client.encoding_key(4) is None
    client.send_encoded(MessageEncoder("ping").encode_for(client))
    (wire,) = client.data_to_send()
    parser = FrameParser(mask_expected=True)
    parser.feed(wire)
    frame = parser.next_frame()
    assert frame is not None and frame.data == b"ping"
    assert frame.opcode is Opcode.TEXT  # a str goes as text, unshared too


def test_unshared_protocols_get_the_payload_encoded_once() -> None:
    # Context takeover or masking: nothing to share, but the str is not encoded per protocol.
    encoder = MessageEncoder("h\u00e9 " * 100)
    protocols = [server(deflate(no_context_takeover=False)) for _ in range(2)]
    protocols.append(Protocol(Side.CLIENT))
    encoded = [encoder.encode_for(protocol) for protocol in protocols]
    assert all(e is encoded[0] for e in encoded)
    assert encoded[0].key is None and encoded[0].text
    assert encoded[0].payload is encoder.payload == ("h\u00e9 " * 100).encode()
    assert encoder.size == encoded[0].size == 400
    for protocol in protocols:
        protocol.send_encoded(encoded[0])
    (wire,) = protocols[0].data_to_send()
    expected = [TextMessage("h\u00e9 " * 100)]
    assert receive(wire, PerMessageDeflate(False, True, 15, 15)) == expected


def test_split_messages_are_encoded_by_each_connection() -> None:
    protocol = server(limits=Limits(max_outgoing_frame_size=4))
    assert protocol.encoding_key(10) is None
    assert protocol.encoding_key(4) == ()
    protocol.send_encoded(MessageEncoder(b"0123456789").encode_for(protocol))
    assert len(protocol.data_to_send()) == 3  # three frames


def test_send_encoded_checks_state_and_parameters() -> None:
    protocol = server()
    protocol.send_binary(b"part", fin=False)
    assert protocol.sending_fragmented
    with pytest.raises(InvalidState, match="fragmented message"):
        protocol.send_encoded(MessageEncoder("x").encode_for(protocol))
    protocol.send_continuation(b"", fin=True)
    assert not protocol.sending_fragmented
    compressed = server(deflate()).encode_message("y" * 100)
    with pytest.raises(ValueError, match="other parameters"):
        protocol.send_encoded(compressed)
    protocol.send_close(1000)
    with pytest.raises(InvalidState):
        protocol.send_encoded(MessageEncoder("x").encode_for(protocol))


def test_encode_message_leaves_the_protocol_untouched() -> None:
    protocol = server(deflate())
    protocol.encode_message("z" * 500)
    assert protocol.data_to_send() == []


def test_encode_message_without_a_shared_key_carries_only_the_message() -> None:
    client = Protocol(Side.CLIENT)  # masks every frame: nothing to share
    client._start_frames()
    encoded = client.encode_message(b"\x01\x02")
    assert encoded.key is None and encoded.data == b"" and encoded.size == 2
    assert (encoded.payload, encoded.text) == (b"\x01\x02", False)
    client.send_encoded(encoded)
    (wire,) = client.data_to_send()
    assert wire[0] == 0x82 and wire[1] == 0x80 | 2  # masked binary frame of 2 bytes


def test_send_encoded_logs_in_debug_mode(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    protocol = server()
    protocol.logger = logging.getLogger("tether.test.encode")
    protocol.debug = True
    caplog.set_level(logging.DEBUG, logger="tether.test.encode")
    protocol.send_encoded(protocol.encode_message("hi"))
    assert "> pre-encoded message, 4 bytes" in caplog.messages


def test_failing_before_any_frame_drops_nothing_it_does_not_have() -> None:
    from tether.sansio.server import ServerProtocol

    protocol = ServerProtocol()  # no frame parser yet: still in the handshake
    protocol.receive_data(b"GET / HTTP/1.1\r\n")
    protocol._drop_input()
    assert protocol.buffered == 0


def test_send_message_text_flag_overrides_the_type() -> None:
    protocol = server()
    protocol.send_message(b"hi", text=True)
    protocol.send_message("hi", text=False)
    assert protocol.data_to_send() == [b"\x81\x02hi", b"\x82\x02hi"]
