"""Tests for tether.extensions.permessage_deflate: negotiation tables, the engine, limits.

Every test is deterministic and runs in memory; the whole file takes a few seconds.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import tracemalloc
import weakref
import zlib
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import _require
from tether.exceptions import (
    DuplicateParameter,
    InvalidParameterName,
    InvalidParameterValue,
    InvalidState,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from tether.extensions import permessage_deflate
from tether.extensions.base import RSV1, RSV2, Extension
from tether.extensions.permessage_deflate import (
    DEFAULT_COMPRESS_THRESHOLD,
    PRESETS,
    ClientPerMessageDeflateFactory,
    DeflateSettings,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    compress_payload,
)
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame
from tether.sansio.headers import build_extension_list, parse_extension_list
from tether.typing import ExtensionName, ExtensionParameter

zlib_ng: ModuleType | None
try:
    from zlib_ng import zlib_ng
except ImportError:  # pragma: no cover - a test dependency, and CI installs it
    zlib_ng = None

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


@pytest.fixture(autouse=True, params=["zlib", "zlib-ng"])
def backend(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """Every test runs with the standard library's zlib and with zlib-ng's bindings (the
    ``zlib-ng`` extra), whichever is installed by default. The engine reads the module's
    ``_zlib`` when it is built and ``compress_payload`` when it is called."""
    module = zlib if request.param == "zlib" else zlib_ng
    if module is None:  # pragma: no cover
        _require("zlib-ng is not installed (pip install 'tether[zlib-ng]')")
        raise AssertionError("unreachable: _require skips or fails")
    saved = permessage_deflate._zlib
    permessage_deflate._zlib = module
    try:
        yield module
    finally:
        permessage_deflate._zlib = saved


MARKER = b"\x00\x00\xff\xff"

SNCT = ("server_no_context_takeover", None)
CNCT = ("client_no_context_takeover", None)


def SMWB(value: str | None) -> ExtensionParameter:
    return ("server_max_window_bits", value)


def CMWB(value: str | None) -> ExtensionParameter:
    return ("client_max_window_bits", value)


#: Settings that neither ask nor impose anything, to test one parameter at a time.
OPEN = DeflateSettings(server_max_window_bits=None, client_max_window_bits=None)


def engine(
    remote_no_context_takeover: bool = False,
    local_no_context_takeover: bool = False,
    remote_max_window_bits: int = 15,
    local_max_window_bits: int = 15,
    compress_threshold: int = 0,
) -> PerMessageDeflate:
    return PerMessageDeflate(
        remote_no_context_takeover,
        local_no_context_takeover,
        remote_max_window_bits,
        local_max_window_bits,
        compress_threshold=compress_threshold,
    )


def negotiate(
    client_settings: DeflateSettings | str, server_settings: DeflateSettings | str = OPEN
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Run the whole negotiation; return (client extension, server extension)."""
    client_factory = ClientPerMessageDeflateFactory(client_settings)
    server_factory = ServerPerMessageDeflateFactory(server_settings)
    answer, server = server_factory.process_request_params(client_factory.get_request_params(), [])
    client = client_factory.process_response_params(answer, [])
    return client, server


def agreed(extension: PerMessageDeflate) -> tuple[bool, bool, int, int]:
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def transfer(
    sender: PerMessageDeflate, receiver: PerMessageDeflate, frames: Sequence[Frame]
) -> tuple[list[Frame], bytes]:
    """Encode frames on one side, decode on the other: (frames on the wire, message received)."""
    wire = [sender.encode(frame) for frame in frames]
    received = b"".join(receiver.decode(frame).data for frame in wire)
    return wire, received


def fragments(opcode: Opcode, *parts: bytes) -> list[Frame]:
    """One message as frames: the first with ``opcode``, then continuations."""
    return [
        Frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    ]


def inflate(payloads: Sequence[bytes], window_bits: int) -> list[bytes]:
    """Inflate compressed messages with plain zlib and one shared window, per RFC 7692 7.2.2."""
    decoder = zlib.decompressobj(-window_bits)
    return [decoder.decompress(payload + MARKER) for payload in payloads]


def deflate(messages: Sequence[bytes], window_bits: int) -> list[bytes]:
    """Compress messages with plain zlib and one shared window, per RFC 7692 7.2.1."""
    encoder = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
    payloads = []
    for message in messages:
        data = encoder.compress(message) + encoder.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(MARKER)
        payloads.append(data[:-4])
    return payloads


def repeats_beyond(window_bits: int) -> bytes:
    """Data whose only redundancy lies further back than a window of ``window_bits``."""
    block = os.urandom(2**window_bits + 64)
    return block + block


# --- settings ---------------------------------------------------------------------------------


class TestSettings:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"server_max_window_bits": 7},
            {"server_max_window_bits": 16},
            {"client_max_window_bits": 7},
            {"client_max_window_bits": 16},
            {"mem_level": 0},
            {"mem_level": 10},
            {"compression_level": -1},
            {"compression_level": 10},
            {"compress_threshold": -1},
        ],
    )
    def test_out_of_range_values_are_refused(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            DeflateSettings(**kwargs)

    def test_defaults_are_the_balanced_preset(self) -> None:
        assert PRESETS["balanced"] == DeflateSettings()
        assert DeflateSettings().compress_threshold == DEFAULT_COMPRESS_THRESHOLD == 32
        assert (DeflateSettings().server_max_window_bits, DeflateSettings().mem_level) == (12, 5)

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_presets_by_name(self, name: str) -> None:
        assert ClientPerMessageDeflateFactory(name).settings is PRESETS[name]
        assert ServerPerMessageDeflateFactory(name).settings is PRESETS[name]
        client, server = negotiate(name, name)
        assert agreed(client)[2] == agreed(server)[3]

    def test_unknown_preset(self) -> None:
        with pytest.raises(ValueError, match="unknown permessage-deflate preset 'tiny'"):
            ClientPerMessageDeflateFactory("tiny")
        with pytest.raises(ValueError, match="known: balanced, small, fast, max"):
            ServerPerMessageDeflateFactory("tiny")

    def test_client_cannot_compress_with_an_8_bit_window(self) -> None:
        with pytest.raises(ValueError, match="client_max_window_bits=8"):
            ClientPerMessageDeflateFactory(DeflateSettings(client_max_window_bits=8))

    def test_server_cannot_compress_with_an_8_bit_window(self) -> None:
        with pytest.raises(ValueError, match="server_max_window_bits=8"):
            ServerPerMessageDeflateFactory(DeflateSettings(server_max_window_bits=8))

    def test_each_side_may_ask_the_peer_for_an_8_bit_window(self) -> None:
        # We only inflate the peer's data; the peer decides whether it can honour 8 bits.
        client = ClientPerMessageDeflateFactory(DeflateSettings(server_max_window_bits=8))
        assert SMWB("8") in client.get_request_params()
        ServerPerMessageDeflateFactory(DeflateSettings(client_max_window_bits=8))

    @pytest.mark.parametrize("bits", [7, 16])
    def test_engine_refuses_impossible_windows(self, bits: int) -> None:
        with pytest.raises(ValueError):
            engine(remote_max_window_bits=bits)
        with pytest.raises(ValueError):
            engine(local_max_window_bits=bits)

    @pytest.mark.parametrize("kwargs", [{"mem_level": 0}, {"compression_level": 10}])
    def test_engine_refuses_bad_zlib_options_up_front(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            PerMessageDeflate(False, False, 15, 15, **kwargs)

    def test_zlib_indeed_refuses_8_bit_raw_deflate(self) -> None:
        # The premise of the 8-bit rules; if a future zlib accepts it, revisit them.
        with pytest.raises(ValueError):
            zlib.compressobj(6, zlib.DEFLATED, -8)


# --- negotiation: the client's offer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "offer"),
    [
        ("balanced", [SMWB("12"), CMWB("12")]),
        (OPEN, [CMWB(None)]),
        (DeflateSettings(server_max_window_bits=None, client_max_window_bits=9), [CMWB("9")]),
        (
            DeflateSettings(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=10,
                client_max_window_bits=11,
            ),
            [SNCT, CNCT, SMWB("10"), CMWB("11")],
        ),
        ("small", [SNCT, CNCT, SMWB("10"), CMWB("10")]),
        ("max", [CMWB(None)]),
    ],
)
def test_client_offer(settings: DeflateSettings | str, offer: list[ExtensionParameter]) -> None:
    assert ClientPerMessageDeflateFactory(settings).get_request_params() == offer


def test_client_offer_serializes_as_browsers_write_it() -> None:
    params = ClientPerMessageDeflateFactory(OPEN).get_request_params()
    header = build_extension_list([("permessage-deflate", params)])
    assert header == "permessage-deflate; client_max_window_bits"


# --- negotiation: the server's answer ---------------------------------------------------------

N12 = DeflateSettings(server_max_window_bits=12, client_max_window_bits=12)


@pytest.mark.parametrize(
    ("server_settings", "offer", "answer", "result"),
    [
        # result: (local_nct, remote_nct, local_bits, remote_bits) of the server extension
        (OPEN, [], [], (False, False, 15, 15)),
        # server_no_context_takeover
        (OPEN, [SNCT], [SNCT], (True, False, 15, 15)),
        (DeflateSettings(server_no_context_takeover=True), [], [SNCT, SMWB("12")], None),
        (
            DeflateSettings(server_no_context_takeover=True, server_max_window_bits=None),
            [],
            [SNCT],
            (True, False, 15, 15),
        ),
        # client_no_context_takeover: echoed, or added by the server
        (OPEN, [CNCT], [CNCT], (False, True, 15, 15)),
        (
            DeflateSettings(client_no_context_takeover=True, server_max_window_bits=None),
            [],
            [CNCT],
            (False, True, 15, 15),
        ),
        # server_max_window_bits: the same or a smaller value; added by the server
        (OPEN, [SMWB("10")], [SMWB("10")], (False, False, 10, 15)),
        (N12, [SMWB("10")], [SMWB("10")], (False, False, 10, 15)),
        (N12, [SMWB("14")], [SMWB("12")], (False, False, 12, 15)),
        (N12, [], [SMWB("12")], (False, False, 12, 15)),
        (DeflateSettings(server_max_window_bits=15), [], [], (False, False, 15, 15)),
        (OPEN, [SMWB("8")], [SMWB("8")], (False, False, 8, 15)),
        (OPEN, [SMWB("15")], [SMWB("15")], (False, False, 15, 15)),
        # client_max_window_bits: only if offered; never above the client's hint
        (OPEN, [CMWB(None)], [], (False, False, 15, 15)),
        (OPEN, [CMWB("10")], [CMWB("10")], (False, False, 15, 10)),
        (N12, [CMWB(None)], [SMWB("12"), CMWB("12")], (False, False, 12, 12)),
        (N12, [CMWB("10")], [SMWB("12"), CMWB("10")], (False, False, 12, 10)),
        (N12, [CMWB("14")], [SMWB("12"), CMWB("12")], (False, False, 12, 12)),
        (N12, [CMWB("9")], [SMWB("12"), CMWB("9")], (False, False, 12, 9)),
        (OPEN, [CMWB("8")], [CMWB("8")], (False, False, 15, 8)),
        # all together, in an unusual order and spelling
        (
            OPEN,
            [
                CMWB("11"),
                ("Server_Max_Window_Bits", "9"),
                CNCT,
                ("SERVER_NO_CONTEXT_TAKEOVER", None),
            ],
            [SNCT, CNCT, SMWB("9"), CMWB("11")],
            (True, True, 9, 11),
        ),
    ],
)
def test_server_answer(
    server_settings: DeflateSettings,
    offer: list[ExtensionParameter],
    answer: list[ExtensionParameter],
    result: tuple[bool, bool, int, int] | None,
) -> None:
    factory = ServerPerMessageDeflateFactory(server_settings)
    params, extension = factory.process_request_params(offer, [])
    assert params == answer
    assert extension.params == answer
    assert extension.name == "permessage-deflate"
    assert extension.rsv_mask == RSV1
    if result is not None:
        assert agreed(extension) == result


@pytest.mark.parametrize(
    ("offer", "error"),
    [
        ([("foo", None)], InvalidParameterName),
        ([("max_window_bits", "10")], InvalidParameterName),
        ([("x-webkit-deflate-frame", None)], InvalidParameterName),
        ([SNCT, SNCT], DuplicateParameter),
        ([CNCT, ("client_no_context_takeover", None)], DuplicateParameter),
        ([SMWB("10"), SMWB("11")], DuplicateParameter),
        ([SMWB("10"), ("SERVER_MAX_WINDOW_BITS", "10")], DuplicateParameter),
        ([CMWB(None), CMWB("10")], DuplicateParameter),
        ([("server_no_context_takeover", "1")], InvalidParameterValue),
        ([("client_no_context_takeover", "")], InvalidParameterValue),
        ([SMWB(None)], InvalidParameterValue),
        ([SMWB("7")], InvalidParameterValue),
        ([SMWB("16")], InvalidParameterValue),
        ([SMWB("0")], InvalidParameterValue),
        ([SMWB("08")], InvalidParameterValue),
        ([SMWB("010")], InvalidParameterValue),
        ([SMWB("+10")], InvalidParameterValue),
        ([SMWB("-10")], InvalidParameterValue),
        ([SMWB("10 ")], InvalidParameterValue),
        ([SMWB("9.0")], InvalidParameterValue),
        ([SMWB("0xa")], InvalidParameterValue),
        ([SMWB("\u0661\u0660")], InvalidParameterValue),  # Arabic-Indic "10": not DIGIT
        ([SMWB("")], InvalidParameterValue),
        ([CMWB("7")], InvalidParameterValue),
        ([CMWB("16")], InvalidParameterValue),
        ([CMWB("09")], InvalidParameterValue),
        ([CMWB("")], InvalidParameterValue),
    ],
)
def test_server_declines_offer(
    offer: list[ExtensionParameter], error: type[NegotiationError]
) -> None:
    factory = ServerPerMessageDeflateFactory(OPEN)
    with pytest.raises(error) as raised:
        factory.process_request_params(offer, [])
    assert type(raised.value) is error
    # A decline is a NegotiationError: the connection moves on to the next offer.
    assert isinstance(raised.value, NegotiationError)


def test_server_decline_messages_name_the_parameter() -> None:
    factory = ServerPerMessageDeflateFactory(OPEN)
    with pytest.raises(NegotiationError, match=r"invalid value for parameter .*: 010"):
        factory.process_request_params([SMWB("010")], [])
    with pytest.raises(NegotiationError, match="duplicate parameter: server_no_context"):
        factory.process_request_params([SNCT, SNCT], [])
    with pytest.raises(NegotiationError, match="invalid parameter name: foo"):
        factory.process_request_params([("foo", None)], [])
    with pytest.raises(NegotiationError, match="missing value for parameter server_max"):
        factory.process_request_params([SMWB(None)], [])


class OtherRsv1Extension(Extension):
    name = ExtensionName("x-other")
    rsv_mask = RSV1

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


def test_server_declines_second_offer_after_one_was_accepted() -> None:
    factory = ServerPerMessageDeflateFactory(OPEN)
    _, first = factory.process_request_params([CMWB(None)], [])
    with pytest.raises(NegotiationError, match="permessage-deflate is already agreed"):
        factory.process_request_params([], [first])


def test_server_declines_when_another_extension_uses_rsv1() -> None:
    factory = ServerPerMessageDeflateFactory(OPEN)
    with pytest.raises(NegotiationError, match="RSV1 is already used by x-other"):
        factory.process_request_params([], [OtherRsv1Extension()])


def test_server_reads_quoted_values_from_the_header() -> None:
    # RFC 7692 section 7: a quoted value must satisfy the grammar once unquoted.
    header = 'permessage-deflate; server_max_window_bits="10"; client_max_window_bits="9"'
    [(name, params)] = parse_extension_list([header])
    assert name == "permessage-deflate"
    answer, extension = ServerPerMessageDeflateFactory(OPEN).process_request_params(params, [])
    assert answer == [SMWB("10"), CMWB("9")]
    assert agreed(extension) == (False, False, 10, 9)
    [(_, params)] = parse_extension_list(['permessage-deflate; server_max_window_bits="010"'])
    with pytest.raises(InvalidParameterValue):
        ServerPerMessageDeflateFactory(OPEN).process_request_params(params, [])


def test_server_agrees_8_bits_for_itself_but_never_compresses() -> None:
    _, extension = ServerPerMessageDeflateFactory(OPEN).process_request_params([SMWB("8")], [])
    assert not extension.can_compress
    frame = Frame(TEXT, b"a" * 1000)
    assert extension.encode(frame) == frame


# --- negotiation: the client checks the answer ------------------------------------------------


@pytest.mark.parametrize(
    ("client_settings", "answer", "result"),
    [
        # result: (local_nct, remote_nct, local_bits, remote_bits) of the client extension
        ("balanced", [SMWB("12")], (False, False, 12, 12)),
        ("balanced", [SMWB("10"), CMWB("9")], (False, False, 9, 10)),
        ("balanced", [SMWB("12"), CMWB("15")], (False, False, 12, 12)),  # hint ignored: fine
        ("balanced", [SMWB("12"), SNCT], (False, True, 12, 12)),  # added by the server
        ("balanced", [SMWB("12"), CNCT], (True, False, 12, 12)),  # added by the server
        ("balanced", [SMWB("8")], (False, False, 12, 8)),
        ("balanced", [SMWB("12"), CMWB("8")], (False, False, 8, 12)),  # agreed, never compress
        (OPEN, [], (False, False, 15, 15)),
        (OPEN, [SMWB("11")], (False, False, 15, 11)),
        (OPEN, [CMWB("10")], (False, False, 10, 15)),
        (
            DeflateSettings(server_no_context_takeover=True),
            [SNCT, SMWB("12")],
            (False, True, 12, 12),
        ),
        (DeflateSettings(client_no_context_takeover=True), [SMWB("12")], (True, False, 12, 12)),
        (
            OPEN,
            [("Client_Max_Window_Bits", "9"), ("SERVER_NO_CONTEXT_TAKEOVER", None)],
            (False, True, 9, 15),
        ),
    ],
)
def test_client_accepts_answer(
    client_settings: DeflateSettings | str,
    answer: list[ExtensionParameter],
    result: tuple[bool, bool, int, int],
) -> None:
    extension = ClientPerMessageDeflateFactory(client_settings).process_response_params(answer, [])
    assert agreed(extension) == result
    assert extension.params == answer
    assert extension.can_compress is (result[2] != 8)


@pytest.mark.parametrize(
    ("client_settings", "answer", "error", "message"),
    [
        ("balanced", [], NegotiationError, "server ignored server_max_window_bits"),
        ("balanced", [SMWB("13")], NegotiationError, "server_max_window_bits=13 is above the 12"),
        (
            DeflateSettings(server_no_context_takeover=True, server_max_window_bits=None),
            [],
            NegotiationError,
            "server ignored server_no_context_takeover",
        ),
        (OPEN, [("foo", None)], InvalidParameterName, "foo"),
        (OPEN, [SNCT, SNCT], DuplicateParameter, "server_no_context_takeover"),
        (OPEN, [CMWB("10"), CMWB("10")], DuplicateParameter, "client_max_window_bits"),
        (OPEN, [SMWB(None)], InvalidParameterValue, "server_max_window_bits"),
        (OPEN, [CMWB(None)], InvalidParameterValue, "client_max_window_bits"),
        (OPEN, [SMWB("16")], InvalidParameterValue, "16"),
        (OPEN, [SMWB("7")], InvalidParameterValue, "7"),
        (OPEN, [SMWB("08")], InvalidParameterValue, "08"),
        (OPEN, [CMWB("010")], InvalidParameterValue, "010"),
        (OPEN, [("client_no_context_takeover", "true")], InvalidParameterValue, "true"),
    ],
)
def test_client_rejects_answer(
    client_settings: DeflateSettings | str,
    answer: list[ExtensionParameter],
    error: type[NegotiationError],
    message: str,
) -> None:
    factory = ClientPerMessageDeflateFactory(client_settings)
    with pytest.raises(error, match=message) as raised:
        factory.process_response_params(answer, [])
    assert type(raised.value) is error


def test_client_rejects_a_second_answer() -> None:
    factory = ClientPerMessageDeflateFactory(OPEN)
    first = factory.process_response_params([], [])
    with pytest.raises(NegotiationError, match="already agreed"):
        factory.process_response_params([], [first])
    with pytest.raises(NegotiationError, match="RSV1 is already used"):
        factory.process_response_params([], [OtherRsv1Extension()])


def test_factories_repr() -> None:
    assert repr(ClientPerMessageDeflateFactory(OPEN)).startswith(
        "ClientPerMessageDeflateFactory(DeflateSettings(server_no_context_takeover=False"
    )
    assert "mem_level=5" in repr(ServerPerMessageDeflateFactory())


def test_extension_repr_shows_the_answer() -> None:
    _, server = negotiate(DeflateSettings(server_no_context_takeover=True), "balanced")
    assert repr(server) == (
        "<PerMessageDeflate permessage-deflate; server_no_context_takeover; "
        "server_max_window_bits=12; client_max_window_bits=12>"
    )


# --- the RFC 7692 section 7.2.3 examples, byte for byte -----------------------------------------

HELLO = bytes.fromhex("f2 48 cd c9 c9 07 00")


class TestRfcExamples:
    def test_7_2_3_1_one_compressed_block(self) -> None:
        sender = engine()
        frame = sender.encode(Frame(TEXT, b"Hello"))
        assert frame == Frame(TEXT, HELLO, rsv1=True)
        assert engine().decode(frame) == Frame(TEXT, b"Hello")

    def test_7_2_3_1_fragmented(self) -> None:
        receiver = engine()
        first = receiver.decode(Frame(TEXT, bytes.fromhex("f2 48 cd"), fin=False, rsv1=True))
        second = receiver.decode(Frame(CONT, bytes.fromhex("c9 c9 07 00")))
        assert (first.opcode, first.fin, first.rsv1) == (TEXT, False, False)
        assert (second.opcode, second.fin, second.rsv1) == (CONT, True, False)
        assert first.data + second.data == b"Hello"

    def test_7_2_3_2_sharing_the_window(self) -> None:
        sender, receiver = engine(), engine()
        assert sender.encode(Frame(TEXT, b"Hello")).data == HELLO
        second = sender.encode(Frame(TEXT, b"Hello"))
        assert second == Frame(TEXT, bytes.fromhex("f2 00 11 00 00"), rsv1=True)
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"
        assert receiver.decode(second).data == b"Hello"

    def test_7_2_3_2_without_context_takeover(self) -> None:
        sender = engine(local_no_context_takeover=True)
        assert sender.encode(Frame(TEXT, b"Hello")).data == HELLO
        assert sender.encode(Frame(TEXT, b"Hello")).data == HELLO
        # A receiver that dropped its window cannot follow a reference into the last message.
        receiver = engine(remote_no_context_takeover=True)
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"
        with pytest.raises(ProtocolError, match="invalid distance too far back"):
            receiver.decode(Frame(TEXT, bytes.fromhex("f2 00 11 00 00"), rsv1=True))

    def test_7_2_3_3_block_with_no_compression(self) -> None:
        payload = bytes.fromhex("00 05 00 fa ff 48 65 6c 6c 6f 00")
        assert engine().decode(Frame(TEXT, payload, rsv1=True)).data == b"Hello"

    def test_7_2_1_ending_with_an_empty_final_stored_block(self) -> None:
        # 7.2.3.3's stored block, then 7.2.1 step 2's empty stored block with BFINAL set
        # (01 00 00 ff ff), whose last four bytes step 3 removes: the payload ends with 01.
        payload = bytes.fromhex("00 05 00 fa ff 48 65 6c 6c 6f") + bytes.fromhex("01")
        receiver = engine()
        assert receiver.decode(Frame(TEXT, payload, rsv1=True)).data == b"Hello"
        # The stream ended: the next message starts a new one.
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"
        # The same across two frames, the final block in the last one.
        first = Frame(TEXT, payload[:-1], fin=False, rsv1=True)
        assert receiver.decode(first).data == b"Hello"
        assert receiver.decode(Frame(CONT, payload[-1:])).data == b""

    def test_7_2_3_4_block_with_bfinal_set(self) -> None:
        receiver = engine()
        payload = bytes.fromhex("f3 48 cd c9 c9 07 00 00")
        assert receiver.decode(Frame(TEXT, payload, rsv1=True)).data == b"Hello"
        # The stream ended: the next message starts a new one, with an empty window.
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"
        assert receiver.decode(Frame(TEXT, payload[:-1], rsv1=True)).data == b"Hello"

    def test_7_2_3_5_two_blocks(self) -> None:
        payload = bytes.fromhex("f2 48 05 00 00 00 ff ff ca c9 c9 07 00")
        assert engine().decode(Frame(TEXT, payload, rsv1=True)).data == b"Hello"

    def test_empty_message(self) -> None:
        frame = engine().encode(Frame(BINARY, b""))
        assert frame == Frame(BINARY, b"\x00", rsv1=True)
        assert engine().decode(frame) == Frame(BINARY, b"")


# --- the engine -------------------------------------------------------------------------------


class TestDecode:
    def test_uncompressed_message_passes_through_with_its_continuations(self) -> None:
        receiver = engine()
        frames = fragments(TEXT, b"not ", b"compressed", b"")
        assert [receiver.decode(frame) for frame in frames] == frames
        # ...and does not disturb the next compressed message.
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"

    def test_control_frames_pass_through_in_the_middle_of_a_message(self) -> None:
        receiver = engine()
        first = receiver.decode(Frame(TEXT, bytes.fromhex("f2 48 cd"), fin=False, rsv1=True))
        ping = Frame(Opcode.PING, b"\xf2\x48")
        assert receiver.decode(ping) == ping
        last = receiver.decode(Frame(CONT, bytes.fromhex("c9 c9 07 00")))
        assert first.data + last.data == b"Hello"

    def test_rsv1_on_a_continuation_frame(self) -> None:
        receiver = engine()
        receiver.decode(Frame(TEXT, bytes.fromhex("f2 48 cd"), fin=False, rsv1=True))
        with pytest.raises(ProtocolError, match="RSV1 set on a continuation frame"):
            receiver.decode(Frame(CONT, bytes.fromhex("c9 c9 07 00"), rsv1=True))

    def test_rsv1_on_a_continuation_of_an_uncompressed_message(self) -> None:
        receiver = engine()
        receiver.decode(Frame(BINARY, b"abc", fin=False))
        with pytest.raises(ProtocolError, match="RSV1 set on a continuation frame"):
            receiver.decode(Frame(CONT, b"def", rsv1=True))

    @pytest.mark.parametrize(
        "payload",
        [
            b"\xff\xff\xff\xff",  # reserved block type
            bytes.fromhex("00 05 00 00 00 48 65 6c 6c 6f"),  # stored block, NLEN != ~LEN
            bytes.fromhex("f2 00 11 00 00"),  # back-reference before the start of the stream
        ],
    )
    def test_malformed_deflate_data_fails_with_protocol_error(
        self, payload: bytes, backend: ModuleType
    ) -> None:
        # Close code 1002: see "Corrupt compressed data" in the module docstring.
        receiver = engine()
        try:
            receiver.decode(Frame(BINARY, payload, rsv1=True))
        except ProtocolError as exc:
            assert str(exc).startswith("invalid compressed data: ")
            assert isinstance(exc.__cause__, backend.error)
        else:
            pytest.fail("no ProtocolError")

    def test_data_after_the_final_block(self) -> None:
        payload = bytes.fromhex("f3 48 cd c9 c9 07 00") + b"junk"
        with pytest.raises(ProtocolError, match="data after the final DEFLATE block"):
            engine().decode(Frame(TEXT, payload, rsv1=True))

    def test_data_after_the_final_block_in_a_later_fragment(self) -> None:
        receiver = engine()
        first = Frame(TEXT, bytes.fromhex("f3 48 cd c9 c9 07 00"), fin=False, rsv1=True)
        assert receiver.decode(first).data == b"Hello"
        with pytest.raises(ProtocolError, match="data after the final DEFLATE block"):
            receiver.decode(Frame(CONT, b"\x00\x01", fin=False))

    def test_final_block_then_padding_in_a_later_fragment(self) -> None:
        receiver = engine()
        receiver.decode(Frame(TEXT, bytes.fromhex("f3 48 cd c9 c9 07 00"), fin=False, rsv1=True))
        assert receiver.decode(Frame(CONT, b"\x00", fin=False)).data == b""
        assert receiver.decode(Frame(CONT, b"")).data == b""
        assert receiver.decode(Frame(TEXT, HELLO, rsv1=True)).data == b"Hello"

    def test_peer_exceeding_the_agreed_window_is_caught(self) -> None:
        # We inflate with the agreed window (memory), so a peer that refers further back into
        # an earlier message fails. (Within one call zlib accepts any distance it has output
        # for, so the check only bites across frames and messages.)
        block = os.urandom(2**10 + 64)
        payloads = deflate([block, block], 15)
        receiver = engine(remote_max_window_bits=10)
        assert receiver.decode(Frame(BINARY, payloads[0], rsv1=True)).data == block
        with pytest.raises(ProtocolError, match="too far back"):
            receiver.decode(Frame(BINARY, payloads[1], rsv1=True))
        receiver = engine(remote_max_window_bits=11)
        assert [receiver.decode(Frame(BINARY, p, rsv1=True)).data for p in payloads] == [block] * 2

    def test_a_peer_granted_8_bits_may_use_9(self) -> None:
        # We inflate with at least 9 bits, so a peer granted 8 bits that compresses with a
        # full 9-bit window (zlib itself never refers further back than 250 bytes at 9 bits)
        # still works. Simulated here with a 10-bit zlib window and a 300-byte distance.
        block = os.urandom(300)
        payloads = deflate([block, block], 10)
        with pytest.raises(zlib.error, match="too far back"):
            inflate(payloads, 8)
        receiver = engine(remote_max_window_bits=8)
        assert [receiver.decode(Frame(BINARY, p, rsv1=True)).data for p in payloads] == [block] * 2


class TestSizeLimit:
    def test_exactly_the_limit_passes(self) -> None:
        # The boundary, both sides of it.
        data = os.urandom(1000)
        [payload] = deflate([data], 15)
        frame = Frame(BINARY, payload, rsv1=True)
        assert engine().decode(frame, max_size=1000).data == data
        with pytest.raises(PayloadTooBig, match="more than 999 bytes"):
            engine().decode(frame, max_size=999)

    def test_zero_limit(self) -> None:
        assert engine().decode(Frame(BINARY, b"\x00", rsv1=True), max_size=0).data == b""
        with pytest.raises(PayloadTooBig):
            engine().decode(Frame(BINARY, HELLO, rsv1=True), max_size=0)

    def test_limit_applies_per_frame_with_what_remains(self) -> None:
        [payload] = deflate([b"a" * 300], 15)
        receiver = engine()
        first = receiver.decode(Frame(TEXT, payload[:3], fin=False, rsv1=True), max_size=300)
        remaining = 300 - len(first.data)
        assert len(receiver.decode(Frame(CONT, payload[3:]), max_size=remaining).data) == remaining

    def test_decompression_bomb_is_stopped_after_one_limit(self, bomb: bytes) -> None:
        # 64 MiB of zeros in under 64 KiB, received under a 1 MiB limit. Inflating all of it
        # would allocate 64 MiB and take about 60 times the CPU time of inflating 1 MiB
        # (0.2 s against 3 ms here); process time ignores the load of other processes.
        assert len(bomb) <= 64 * 1024
        receiver = engine()
        tracemalloc.start()
        start = time.process_time()
        try:
            with pytest.raises(PayloadTooBig):
                receiver.decode(Frame(BINARY, bomb, rsv1=True), max_size=2**20)
            elapsed = time.process_time() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * 2**20, peak
        assert elapsed < 0.05, elapsed

    def test_bomb_inflates_fully_without_a_limit(self, bomb: bytes) -> None:
        # Guards the test above: the payload really is a 64 MiB message.
        decoder = zlib.decompressobj(-15)
        total = 0
        data = bomb + MARKER
        while data:
            total += len(decoder.decompress(data, 2**22))
            data = decoder.unconsumed_tail
        assert total == 64 * 2**20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    # Sync-flushed output of a fresh compressor starts and ends on a byte boundary and refers
    # to nothing before it, so 16 copies of 4 MiB of zeros make one 64 MiB message.
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = encoder.compress(bytes(4 * 2**20)) + encoder.flush(zlib.Z_SYNC_FLUSH)
    return (chunk * 16)[:-4]


class TestEncode:
    def test_rsv1_only_on_the_first_frame(self) -> None:
        sender, receiver = engine(), engine()
        wire, received = transfer(sender, receiver, fragments(TEXT, b"Hello, ", b"world", b"!"))
        assert [(frame.opcode, frame.rsv1, frame.fin) for frame in wire] == [
            (TEXT, True, False),
            (CONT, False, False),
            (CONT, False, True),
        ]
        assert received == b"Hello, world!"

    def test_each_fragment_can_be_inflated_on_arrival(self) -> None:
        sender, receiver = engine(), engine()
        frames = fragments(BINARY, b"first part ", b"second part", b"")
        wire = [sender.encode(frame) for frame in frames]
        assert receiver.decode(wire[0]).data == b"first part "
        assert receiver.decode(wire[1]).data == b"second part"
        assert receiver.decode(wire[2]).data == b""

    def test_only_the_end_of_the_message_loses_its_marker(self) -> None:
        sender = engine()
        wire = [sender.encode(frame) for frame in fragments(TEXT, b"abc", b"def")]
        assert wire[0].data.endswith(MARKER)
        assert not wire[1].data.endswith(MARKER)
        assert inflate([wire[0].data + wire[1].data], 15) == [b"abcdef"]

    def test_control_frames_pass_through(self) -> None:
        sender = engine()
        sender.encode(Frame(TEXT, b"abc", fin=False))
        for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
            frame = Frame(opcode, b"\x03\xe8")
            assert sender.encode(frame) == frame
        assert sender.encode(Frame(CONT, b"def")).rsv1 is False

    def test_other_rsv_bits_are_kept(self) -> None:
        frame = engine().encode(Frame(TEXT, b"Hello", rsv2=True))
        assert (frame.rsv1, frame.rsv2, frame.rsv3) == (True, True, False)

    def test_threshold(self) -> None:
        sender = engine(compress_threshold=32)
        small = Frame(TEXT, b"x" * 31)
        assert sender.encode(small) == small
        large = sender.encode(Frame(TEXT, b"x" * 32))
        assert large.rsv1 and len(large.data) < 32

    def test_threshold_looks_at_the_first_frame_only(self) -> None:
        sender = engine(compress_threshold=32)
        frames = fragments(TEXT, b"tiny", b"x" * 1000, b"y" * 1000)
        assert [sender.encode(frame) for frame in frames] == frames
        frames = fragments(TEXT, b"x" * 32, b"")
        wire = [sender.encode(frame) for frame in frames]
        assert wire[0].rsv1 and wire[1].data == b"\x00"

    def test_uncompressed_messages_leave_the_context_alone(self) -> None:
        sender, receiver = engine(compress_threshold=10), engine()
        wire = [
            sender.encode(Frame(TEXT, b"Hello" * 2)),
            sender.encode(Frame(TEXT, b"skip")),
            sender.encode(Frame(TEXT, b"Hello" * 2)),
        ]
        assert [frame.rsv1 for frame in wire] == [True, False, True]
        assert wire[1].data == b"skip"
        # The second compressed message refers to the first, as if "skip" never happened.
        assert [frame.data for frame in (wire[0], wire[2])] == deflate([b"Hello" * 2] * 2, 15)
        received = [receiver.decode(frame).data for frame in wire]
        assert received == [b"HelloHello", b"skip", b"HelloHello"]

    def test_local_8_bit_window_means_never_compress(self) -> None:
        sender = engine(local_max_window_bits=8)
        frame = Frame(TEXT, b"a" * 10_000)
        assert sender.encode(frame) == frame
        assert not sender.can_compress


class TestSharedEncoding:
    def test_compress_message_matches_encode(self) -> None:
        data = b'{"type": "quote", "symbol": "ACME", "bid": 12.5}' * 3
        extension = engine(local_no_context_takeover=True, local_max_window_bits=11)
        assert extension.can_share_encoding
        shared = extension.compress_message(data)
        assert extension.encode(Frame(TEXT, data)).data == shared
        assert extension.encode(Frame(TEXT, data)).data == shared
        assert compress_payload(data, window_bits=11) == shared

    def test_equal_keys_give_equal_bytes(self) -> None:
        data = b"broadcast " * 100
        one = engine(local_no_context_takeover=True, local_max_window_bits=12)
        two = engine(local_no_context_takeover=True, local_max_window_bits=12)
        two.encode(Frame(TEXT, b"something else entirely, sent before"))
        assert one.shared_encoding_key == two.shared_encoding_key == (12, 5, 2)
        assert one.compress_message(data) == two.compress_message(data)

    def test_pre_compressed_frames_pass_through_encode(self) -> None:
        data = os.urandom(100) * 20
        sender = engine(local_no_context_takeover=True, local_max_window_bits=12)
        payload = compress_payload(data, window_bits=10)
        frames = [
            Frame(BINARY, payload[:50], fin=False, rsv1=True),
            Frame(CONT, payload[50:]),
        ]
        wire = [sender.encode(frame) for frame in frames]
        assert wire == frames
        # A peer that granted us 12 bits inflates a 10-bit payload, then our next message.
        receiver = engine(remote_no_context_takeover=True, remote_max_window_bits=12)
        assert b"".join(receiver.decode(frame).data for frame in wire) == data
        assert receiver.decode(sender.encode(Frame(TEXT, b"Hello"))).data == b"Hello"

    def test_refused_with_context_takeover(self) -> None:
        extension = engine(local_max_window_bits=12)
        assert not extension.can_share_encoding
        with pytest.raises(InvalidState, match="context takeover"):
            extension.compress_message(b"data")
        with pytest.raises(InvalidState, match="pre-compressed"):
            extension.encode(Frame(TEXT, compress_payload(b"data"), rsv1=True))

    def test_refused_when_the_window_forbids_compressing(self) -> None:
        extension = engine(local_no_context_takeover=True, local_max_window_bits=8)
        assert not extension.can_share_encoding
        with pytest.raises(InvalidState):
            extension.compress_message(b"data")


# --- round trips in every parameter combination -----------------------------------------------

WINDOWS = range(9, 16)


def message_set(window_bits: int) -> list[list[Frame]]:
    text = b"The quick brown fox jumps over the lazy dog. " * 10
    return [
        fragments(TEXT, text),
        fragments(TEXT, text),  # the same again: tells context takeover apart
        fragments(BINARY, repeats_beyond(window_bits)),
        fragments(TEXT, text[:100], text[100:300], text[300:]),
        fragments(BINARY, b"", b""),
        fragments(BINARY, b"short"),
    ]


def check_direction(
    sender: PerMessageDeflate, receiver: PerMessageDeflate, no_context_takeover: bool, bits: int
) -> None:
    messages = message_set(bits)
    expected = [b"".join(frame.data for frame in frames) for frames in messages]
    payloads = []
    for frames, message in zip(messages, expected, strict=True):
        wire, received = transfer(sender, receiver, frames)
        assert received == message
        payloads.append(b"".join(frame.data for frame in wire))
    first, second = payloads[0], payloads[1]
    if no_context_takeover:
        assert first == second
        # Each message inflates on its own with plain zlib and the agreed window, which also
        # shows that the compressor kept to that window.
        assert [inflate([payload], bits)[0] for payload in payloads] == expected
    else:
        # The second message refers back into the first: shorter, and it does not inflate
        # alone.
        assert len(second) < len(first)
        with pytest.raises(zlib.error, match="too far back"):
            inflate([second], bits)
        # The whole stream inflates with plain zlib, one window of the agreed size.
        assert inflate(payloads, bits) == expected


@pytest.mark.parametrize(
    ("server_nct", "client_nct"), list(itertools.product([False, True], repeat=2))
)
@pytest.mark.parametrize("keep_zlib_objects", [False, True])
def test_round_trips_in_every_combination(
    server_nct: bool, client_nct: bool, keep_zlib_objects: bool
) -> None:
    for server_bits, client_bits in itertools.product(WINDOWS, WINDOWS):
        client, server = negotiate(
            DeflateSettings(
                server_no_context_takeover=server_nct,
                client_no_context_takeover=client_nct,
                server_max_window_bits=server_bits,
                client_max_window_bits=client_bits,
                compress_threshold=0,
                keep_zlib_objects=keep_zlib_objects,
            ),
            # The server imposes nothing: what is agreed is what the client asked for.
            DeflateSettings(
                server_max_window_bits=None,
                client_max_window_bits=None,
                compress_threshold=0,
                keep_zlib_objects=keep_zlib_objects,
            ),
        )
        assert agreed(client) == (client_nct, server_nct, client_bits, server_bits)
        assert agreed(server) == (server_nct, client_nct, server_bits, client_bits)
        check_direction(client, server, client_nct, client_bits)
        check_direction(server, client, server_nct, server_bits)


def test_zlib_streams_decode_with_context_takeover() -> None:
    messages = [b"Hello, world", b"Hello, world", b"Hello again, world", b""]
    receiver = engine(remote_max_window_bits=10)
    decoded = [
        receiver.decode(Frame(TEXT, payload, rsv1=True)).data for payload in deflate(messages, 10)
    ]
    assert decoded == messages


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.lists(st.binary(max_size=300), min_size=1, max_size=4), min_size=1, max_size=6
    ),
    server_bits=st.integers(9, 15),
    client_bits=st.integers(9, 15),
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    threshold=st.sampled_from([0, 1, 32, 200]),
    level=st.integers(0, 9),
    keep_zlib_objects=st.booleans(),
)
def test_any_messages_round_trip(
    messages: list[list[bytes]],
    server_bits: int,
    client_bits: int,
    server_nct: bool,
    client_nct: bool,
    threshold: int,
    level: int,
    keep_zlib_objects: bool,
) -> None:
    both = DeflateSettings(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        compress_threshold=threshold,
        compression_level=level,
        keep_zlib_objects=keep_zlib_objects,
    )
    client, server = negotiate(both, both)
    for parts in messages:
        frames = fragments(BINARY, *parts)
        for sender, receiver in ((client, server), (server, client)):
            wire, received = transfer(sender, receiver, frames)
            assert received == b"".join(parts)
            compressed = len(parts[0]) >= threshold
            assert [frame.rsv1 for frame in wire] == [compressed] + [False] * (len(parts) - 1)


# --- memory -----------------------------------------------------------------------------------


@pytest.fixture
def no_hot_compressors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle connections hold only their window: none keeps its compressor for being recent."""
    monkeypatch.setattr(permessage_deflate, "HOT_COMPRESSORS", 0)


def held_per_connection(
    settings_: DeflateSettings, connections: int = 20, messages: Sequence[bytes] = ()
) -> float:
    messages = messages or [b'{"type": "chat", "text": "hello there, how are you?"}' * 4] * 3
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = []
        for _ in range(connections):
            client, server = negotiate(settings_, settings_)
            for message in messages:
                server.decode(client.encode(Frame(TEXT, message)))
                client.decode(server.encode(Frame(TEXT, message)))
            kept.append(server)
            del client
        return (tracemalloc.get_traced_memory()[0] - base) / connections
    finally:
        tracemalloc.stop()


@pytest.mark.usefixtures("no_hot_compressors")
def test_idle_memory_without_context_takeover_is_near_zero() -> None:
    # zlib objects live only while a message is processed.
    assert held_per_connection(PRESETS["small"]) < 4 * 1024


def test_memory_with_zlib_objects_kept_follows_the_window(backend: ModuleType) -> None:
    # tracemalloc sees zlib's buffers: about 2**(w+2) + 2**(m+9) + 2**w + 13 KiB; zlib-ng's
    # hash table is 128 KiB whatever the memLevel.
    kept = held_per_connection(PRESETS["fast"])
    largest = held_per_connection(PRESETS["max"])
    if backend is zlib:
        assert 40 * 1024 < kept < 64 * 1024
        assert 280 * 1024 < largest < 330 * 1024
    else:
        assert 180 * 1024 < kept < 230 * 1024
        assert 360 * 1024 < largest < 420 * 1024


@pytest.mark.usefixtures("no_hot_compressors")
def test_memory_with_context_takeover_is_the_data_sent_and_received() -> None:
    # The default holds the last bytes of each direction, here three 208-byte messages, and
    # about 500 bytes of Python objects (what "small" holds).
    small = held_per_connection(PRESETS["small"])
    balanced = held_per_connection(PRESETS["balanced"])
    assert 2 * 3 * 208 - 128 < balanced - small < 2 * 3 * 208 + 256
    # ... and never more than a window each way (4 KiB here), however much was sent.
    many = [os.urandom(100) + bytes([i]) * 900 for i in range(20)]
    held = held_per_connection(PRESETS["balanced"], messages=many) - small
    assert 2 * 4096 - 128 < held < 2 * 4096 + 256


@pytest.mark.parametrize("keep_zlib_objects", [False, True])
def test_the_window_survives_fragmented_messages_and_a_final_block(
    keep_zlib_objects: bool,
) -> None:
    settings_ = DeflateSettings(compress_threshold=0, keep_zlib_objects=keep_zlib_objects)
    client, server = negotiate(settings_, settings_)
    text = os.urandom(300)
    # A fragmented message, then the same data: the second refers back into the first.
    _, received = transfer(client, server, fragments(TEXT, text[:100], text[100:], b""))
    assert received == text
    wire, received = transfer(client, server, fragments(TEXT, text))
    assert received == text
    assert len(wire[0].data) < 30
    # A peer that ends its stream with BFINAL starts the next message with an empty window.
    encoder = zlib.compressobj(6, zlib.DEFLATED, -12)
    final = encoder.compress(text) + encoder.flush(zlib.Z_FINISH)
    assert server.decode(Frame(TEXT, final, rsv1=True)).data == text
    fresh = deflate([text], 12)[0]
    assert server.decode(Frame(TEXT, fresh, rsv1=True)).data == text


def test_the_most_recent_connections_keep_their_compressor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(permessage_deflate, "HOT_COMPRESSORS", 2)
    text = b"hot or not, " * 10
    engines = [engine(local_max_window_bits=12) for _ in range(3)]
    for index in range(3):
        engines[index].encode(Frame(TEXT, text))
    assert [sender._encoder is not None for sender in engines] == [False, True, True]
    # The first becomes the most recent again; the second is now the oldest and loses it.
    engines[0].encode(Frame(TEXT, text))
    assert [sender._encoder is not None for sender in engines] == [True, False, True]
    # Without context takeover or with keep_zlib_objects, the set is not involved.
    other = engine(local_no_context_takeover=True)
    other.encode(Frame(TEXT, text))
    kept = PerMessageDeflate(False, False, 15, 15, keep_zlib_objects=True)
    kept.encode(Frame(TEXT, text))
    assert other._encoder is None and kept._encoder is not None
    assert [sender._encoder is not None for sender in engines] == [True, False, True]
    # A connection that is gone leaves a dead entry, which is skipped when evicted.
    gone = weakref.ref(engines.pop())
    assert gone() is None
    newer = [engine(local_max_window_bits=12) for _ in range(2)]
    for index in range(2):
        newer[index].encode(Frame(TEXT, text))
    assert engines[0]._encoder is None
    assert [sender._encoder is not None for sender in newer] == [True, True]


def test_losing_the_compressor_between_frames_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another connection finishing a message may take a hot compressor away in the middle of
    # a fragmented message; the next frame is compressed by a new one primed with the window.
    monkeypatch.setattr(permessage_deflate, "HOT_COMPRESSORS", 1)
    sender, other = engine(local_max_window_bits=10), engine()
    receiver = engine(remote_max_window_bits=10)
    text = b"the same words again and again, " * 40
    first = sender.encode(Frame(TEXT, text))
    assert sender._encoder is not None
    second = [sender.encode(Frame(TEXT, text[:500], fin=False))]
    other.encode(Frame(BINARY, b"evicts the sender's compressor " * 3))
    assert sender._encoder is None
    second.append(sender.encode(Frame(CONT, text[500:], fin=False)))
    second.append(sender.encode(Frame(CONT, text)))
    payloads = [first.data, b"".join(frame.data for frame in second)]
    expected = [text, text + text]
    assert inflate(payloads, 10) == expected
    assert receiver.decode(first).data == text
    assert b"".join(receiver.decode(frame).data for frame in second) == text + text
    with pytest.raises(zlib.error, match="too far back"):  # it refers to the first message
        inflate(payloads[1:], 10)


def test_a_window_larger_than_our_limit_is_kept_whole() -> None:
    # The inflater keeps 2**remote_max_window_bits bytes: a back-reference reaching the far
    # end of a 32 KiB window into the previous message still inflates.
    receiver = engine(remote_max_window_bits=15, local_max_window_bits=9)
    block = os.urandom(30_000)
    first, second = deflate([block, block[:5_000]], 15)
    assert len(second) < 100
    assert receiver.decode(Frame(BINARY, first, rsv1=True)).data == block
    assert receiver.decode(Frame(BINARY, second, rsv1=True)).data == block[:5_000]


# --- interoperability with websockets' implementation ----------------------------------------

try:
    import websockets.extensions.permessage_deflate as ws_deflate
    import websockets.frames as ws_frames
except ImportError:  # pragma: no cover - websockets is a test dependency
    ws_deflate = ws_frames = None  # type: ignore[assignment]

needs_websockets = pytest.mark.skipif(ws_deflate is None, reason="websockets is not installed")


class WebsocketsSide:
    """Wraps a websockets extension so that it speaks tether frames."""

    def __init__(self, extension: object) -> None:
        self.extension = extension

    def encode(self, frame: Frame) -> Frame:
        out = self.extension.encode(  # type: ignore[attr-defined]
            ws_frames.Frame(ws_frames.Opcode(frame.opcode.value), frame.data, frame.fin)
        )
        return Frame(Opcode(out.opcode.value), bytes(out.data), out.fin, out.rsv1)

    def decode(self, frame: Frame) -> Frame:
        out = self.extension.decode(  # type: ignore[attr-defined]
            ws_frames.Frame(ws_frames.Opcode(frame.opcode.value), frame.data, frame.fin, frame.rsv1)
        )
        return Frame(Opcode(out.opcode.value), bytes(out.data), out.fin, out.rsv1)


def exchange(ours: PerMessageDeflate, theirs: WebsocketsSide) -> None:
    text = b"interoperability test message, " * 20
    for frames in (
        fragments(TEXT, text),
        fragments(TEXT, text),
        fragments(BINARY, text[:200], text[200:], b""),
        fragments(BINARY, os.urandom(3000)),
    ):
        message = b"".join(frame.data for frame in frames)
        wire = [ours.encode(frame) for frame in frames]
        assert wire[0].rsv1
        assert b"".join(theirs.decode(frame).data for frame in wire) == message
        wire = [theirs.encode(frame) for frame in frames]
        assert wire[0].rsv1
        assert b"".join(ours.decode(frame).data for frame in wire) == message


@needs_websockets
@pytest.mark.parametrize(
    ("settings_", "ws_kwargs"),
    [
        ("balanced", {}),
        ("small", {}),
        ("max", {"server_max_window_bits": 10, "client_max_window_bits": 11}),
        (OPEN, {"server_no_context_takeover": True, "client_no_context_takeover": True}),
    ],
)
def test_tether_client_with_websockets_server(
    settings_: DeflateSettings | str, ws_kwargs: dict[str, Any]
) -> None:
    factory = ClientPerMessageDeflateFactory(settings_)
    answer, extension = ws_deflate.ServerPerMessageDeflateFactory(
        **ws_kwargs
    ).process_request_params(factory.get_request_params(), [])
    ours = factory.process_response_params(answer, [])
    exchange(ours, WebsocketsSide(extension))


@needs_websockets
@pytest.mark.parametrize(
    ("settings_", "ws_kwargs"),
    [
        ("balanced", {}),
        ("small", {}),
        ("max", {"server_max_window_bits": 10, "client_max_window_bits": 9}),
        (OPEN, {"server_no_context_takeover": True, "client_no_context_takeover": True}),
        (OPEN, {"client_max_window_bits": None}),
    ],
)
def test_websockets_client_with_tether_server(
    settings_: DeflateSettings | str, ws_kwargs: dict[str, Any]
) -> None:
    factory = ws_deflate.ClientPerMessageDeflateFactory(**ws_kwargs)
    answer, ours = ServerPerMessageDeflateFactory(settings_).process_request_params(
        factory.get_request_params(), []
    )
    extension = factory.process_response_params(answer, [])
    exchange(ours, WebsocketsSide(extension))


class OtherRsv2Extension(Extension):
    """An extension that leaves RSV1 alone and has no parameters (the base class's default)."""

    name = ExtensionName("x-rsv2")
    rsv_mask = RSV2

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


def test_another_extension_on_another_bit_goes_with_permessage_deflate() -> None:
    other = OtherRsv2Extension()
    assert other.params == []
    server = ServerPerMessageDeflateFactory(OPEN)
    _, agreed = server.process_request_params([], [other])
    assert isinstance(agreed, PerMessageDeflate)
    client = ClientPerMessageDeflateFactory(OPEN)
    assert isinstance(client.process_response_params([], [other]), PerMessageDeflate)


# --- which zlib -------------------------------------------------------------------------------


def backend_in_subprocess(tmp_path: Any, env_value: str | None, hide_zlib_ng: bool) -> str:
    """ZLIB_BACKEND in a fresh interpreter, with TETHER_NO_ZLIB_NG as given and zlib-ng's
    package shadowed by one that fails to import (as if it were not installed)."""
    env = dict(os.environ)
    env.pop("TETHER_NO_ZLIB_NG", None)
    if env_value is not None:
        env["TETHER_NO_ZLIB_NG"] = env_value
    if hide_zlib_ng:
        (tmp_path / "zlib_ng").mkdir()
        (tmp_path / "zlib_ng" / "__init__.py").write_text("raise ImportError('hidden')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    code = "from tether.extensions import permessage_deflate as p; print(p.ZLIB_BACKEND)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize("backend", ["zlib"], indirect=True)
@pytest.mark.parametrize(
    ("env_value", "hide", "expected"),
    [
        (None, False, "zlib-ng"),
        ("0", False, "zlib-ng"),
        ("1", False, "zlib"),
        (None, True, "zlib"),
    ],
)
def test_zlib_ng_is_used_when_installed_and_not_disabled(
    tmp_path: Any, env_value: str | None, hide: bool, expected: str
) -> None:
    name, _, version = backend_in_subprocess(tmp_path, env_value, hide).partition(" ")
    assert name == expected
    if expected == "zlib":
        assert version == zlib.ZLIB_RUNTIME_VERSION
    else:
        assert zlib_ng is not None
        assert version == zlib_ng.ZLIBNG_VERSION
