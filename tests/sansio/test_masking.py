"""Tests for tether.sansio.masking: both implementations against a naive reference, and MaskSource.

Every masking test runs twice: once with the pure-Python functions (``py_apply_mask`` ...) and
once with the compiled ones from ``tether.sansio._speedups``. The C run is skipped, with the
reason in the summary, only when the extension was not built (no C compiler at install time);
with ``TETHER_NO_SKIP=1`` it fails instead, so that a build that silently fell back to pure
Python cannot pass unnoticed.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.sansio import frames, masking
from tether.sansio.codes import Opcode
from tether.sansio.frames import Frame, FrameParser, serialize_frame
from tether.sansio.masking import (
    KEEP,
    SMALL_MASK_SIZE,
    SPREAD,
    TABLE_SIZE,
    MaskSource,
)

speedups: ModuleType | None
try:
    from tether.sansio import _speedups as speedups
except ImportError as exc:  # pragma: no cover - depends on the build
    speedups = None
    NOT_BUILT = f"C extension tether.sansio._speedups is not built ({exc}); pure Python only"
else:
    NOT_BUILT = ""

#: The masking key of the examples in RFC 6455 section 5.7.
RFC_KEY = bytes((0x37, 0xFA, 0x21, 0x3D))

#: Where the C functions release the GIL (RELEASE_GIL_SIZE in _speedups.c).
RELEASE_GIL_SIZE = 1 << 20


def noise(size: int) -> bytes:
    """Arbitrary but reproducible bytes."""
    return random.Random(size).randbytes(size)


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 5.3 read literally: transformed-octet-i = original-octet-i XOR mask[i MOD 4]."""
    return bytes(octet ^ mask[i % 4] for i, octet in enumerate(data))


@functools.cache
def case(length: int) -> tuple[bytes, bytes, bytes]:
    """Data of ``length`` bytes, a key and the reference result (cached: 1 MiB takes 0.1 s)."""
    data = noise(length)
    mask = noise(4) if length != 4 else b"\x9a\x01\xff\x10"
    return data, mask, naive_mask(data, mask)


# Lengths around every boundary either implementation has: empty, shorter than the key, every
# tail of 1..8 bytes after the C code's 8-byte words, the switch from integer XOR to translate
# in Python, and both sides of the size where the C code releases the GIL.
LENGTHS = [*range(41), 63, 64, 65, 125, 126, TABLE_SIZE, TABLE_SIZE + 1]
LENGTHS += [SMALL_MASK_SIZE - 1, SMALL_MASK_SIZE] + [SMALL_MASK_SIZE + n for n in (1, 2, 3, 4)]
LENGTHS += [4093, 65536, 65539, RELEASE_GIL_SIZE - 1, RELEASE_GIL_SIZE + 3]


@dataclasses.dataclass(frozen=True)
class Implementation:
    name: str
    apply_mask: Callable[..., bytes]
    mask_in_place: Callable[..., None]
    join_masked: Callable[..., bytes]


PYTHON = Implementation(
    "python", masking.py_apply_mask, masking.py_mask_in_place, masking.py_join_masked
)


def compiled() -> Implementation:
    """The C implementation; skips the test (fails under TETHER_NO_SKIP) if it is not built."""
    if speedups is None:  # pragma: no cover - depends on the build
        if os.environ.get("TETHER_NO_SKIP"):
            pytest.fail(f"{NOT_BUILT} (TETHER_NO_SKIP is set)", pytrace=False)
        pytest.skip(NOT_BUILT)
    return Implementation("c", speedups.apply_mask, speedups.mask_in_place, speedups.join_masked)


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> Implementation:
    return PYTHON if request.param == "python" else compiled()


# --- apply_mask -----------------------------------------------------------------------------------


def test_rfc_example(impl: Implementation) -> None:
    # 5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58.
    assert impl.apply_mask(b"Hello", RFC_KEY) == bytes.fromhex("7f9f4d5158")
    assert impl.apply_mask(bytes.fromhex("7f9f4d5158"), RFC_KEY) == b"Hello"


@pytest.mark.parametrize("length", LENGTHS)
def test_apply_mask_matches_reference(impl: Implementation, length: int) -> None:
    data, mask, expected = case(length)
    for given_data in (data, bytearray(data), memoryview(data)):
        result = impl.apply_mask(given_data, mask)
        assert type(result) is bytes
        assert result == expected
    assert impl.apply_mask(expected, mask) == data


@pytest.mark.parametrize("offset", range(9))
@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 300, 4099])
def test_apply_mask_at_any_address(impl: Implementation, offset: int, length: int) -> None:
    # A view starting at an odd offset puts the 8-byte words of the C code at unaligned
    # addresses; the result must not depend on that.
    data, mask, _ = case(length + 8)
    view = memoryview(data)[offset : offset + length]
    assert impl.apply_mask(view, mask) == naive_mask(data[offset : offset + length], mask)
    assert impl.apply_mask(bytearray(data)[offset:], mask) == naive_mask(data[offset:], mask)


def test_apply_mask_empty(impl: Implementation) -> None:
    for empty in (b"", bytearray(), memoryview(b"abc")[3:]):
        assert impl.apply_mask(empty, RFC_KEY) == b""
    assert type(impl.apply_mask(bytearray(), RFC_KEY)) is bytes


def test_apply_mask_memoryview_of_wide_items(impl: Implementation) -> None:
    # A memoryview over 4-byte items is masked as its raw bytes, not item by item.
    for count in (0, 3, 300):
        words = array.array("I", range(count))
        expected = naive_mask(words.tobytes(), RFC_KEY)
        assert impl.apply_mask(memoryview(words), RFC_KEY) == expected


def test_apply_mask_read_only_view(impl: Implementation) -> None:
    data, mask, expected = case(1000)
    assert impl.apply_mask(memoryview(bytearray(data)).toreadonly(), mask) == expected


def test_apply_mask_leaves_input_alone(impl: Implementation) -> None:
    data, mask, _ = case(1001)
    buf = bytearray(data)
    impl.apply_mask(buf, mask)
    assert buf == data
    # The buffer export is released: the bytearray can be resized again.
    buf.append(0)


# --- mask_in_place --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("start", [0, 1, 4, 7])
def test_mask_in_place_leaves_the_head_alone(impl: Implementation, length: int, start: int) -> None:
    data, mask, expected = case(length)
    head = b"header!"[:start]
    buf = bytearray(head + data)
    impl.mask_in_place(buf, mask, start)
    assert buf == head + expected
    impl.mask_in_place(buf, mask, start)
    assert buf == head + data
    buf.append(0)  # no export left behind


def test_mask_in_place_default_start(impl: Implementation) -> None:
    buf = bytearray(b"Hello")
    impl.mask_in_place(buf, RFC_KEY)
    assert buf == bytes.fromhex("7f9f4d5158")


@pytest.mark.parametrize("length", [0, 3, 300])
def test_mask_in_place_at_the_end_is_a_no_op(impl: Implementation, length: int) -> None:
    data, mask, _ = case(length)
    buf = bytearray(data)
    impl.mask_in_place(buf, mask, length)
    assert buf == data


@pytest.mark.parametrize("length", [0, 5, 300])
def test_mask_in_place_start_out_of_range(impl: Implementation, length: int) -> None:
    data, mask, _ = case(length)
    buf = bytearray(data)
    for start in (-1, -length - 1, length + 1, length + 1000):
        with pytest.raises(ValueError, match="start must be between 0 and"):
            impl.mask_in_place(buf, mask, start)
    assert buf == data
    buf.append(0)


# --- join_masked ----------------------------------------------------------------------------------


def cuts(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at a few reproducible places, odd lengths and empty parts included."""
    rng = random.Random(seed)
    points = sorted(rng.choice(range(len(data) + 1)) for _ in range(rng.randrange(6)))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("length", LENGTHS)
def test_join_masked_matches_reference(impl: Implementation, length: int) -> None:
    data, mask, expected = case(length)
    assert impl.join_masked([data], mask) == expected
    assert impl.join_masked((data,), mask, b"\x82\xfe") == b"\x82\xfe" + expected
    for seed in range(3):
        parts = cuts(data, seed)
        result = impl.join_masked(parts, mask, b"head")
        assert type(result) is bytes
        assert result == b"head" + expected


@pytest.mark.parametrize("first", range(1, 9))
def test_join_masked_key_runs_on_across_parts(impl: Implementation, first: int) -> None:
    # Parts of every length 1..8 followed by more: the second part starts at key index
    # first % 4, not at 0.
    data, mask, expected = case(40)
    parts = [data[:first], bytearray(data[first : first + 9]), memoryview(data)[first + 9 :]]
    assert impl.join_masked(parts, mask) == expected


def test_join_masked_inputs(impl: Implementation) -> None:
    data, mask, expected = case(1000)
    # Any iterable of bytes-like objects; prefixes of any bytes-like type, copied unmasked.
    parts = iter([data[:3], bytearray(data[3:500]), memoryview(data)[500:]])
    assert impl.join_masked(parts, mask, bytearray(b"ab")) == b"ab" + expected
    wide = array.array("H", [0x0102, 0x0304])
    assert impl.join_masked([memoryview(wide)], mask, memoryview(wide)) == (
        wide.tobytes() + naive_mask(wide.tobytes(), mask)
    )
    assert impl.join_masked([], mask) == b""
    assert impl.join_masked([], mask, b"only") == b"only"
    assert impl.join_masked([b"", b""], mask, b"") == b""


def test_join_masked_releases_buffers_on_error(impl: Implementation) -> None:
    first = bytearray(b"abcdefgh")
    before = sys.getrefcount(first)
    with pytest.raises(TypeError):
        impl.join_masked([first, 42], RFC_KEY)
    with pytest.raises(TypeError):
        impl.join_masked(42, RFC_KEY)
    with pytest.raises(TypeError):
        impl.join_masked([first], RFC_KEY, 3.5)
    first.append(0)  # would raise BufferError if an export had leaked
    assert sys.getrefcount(first) == before


# --- errors shared by all functions ---------------------------------------------------------------


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_mask_must_be_four_bytes(impl: Implementation, mask: bytes) -> None:
    with pytest.raises(ValueError, match=f"mask must be 4 bytes, got {len(mask)}"):
        impl.apply_mask(b"data", mask)
    buf = bytearray(4)
    with pytest.raises(ValueError, match="4 bytes"):
        impl.mask_in_place(buf, mask)
    with pytest.raises(ValueError, match="4 bytes"):
        impl.join_masked([b"data"], mask, b"")
    assert buf == bytearray(4)


def test_arguments_are_positional_and_typed(impl: Implementation) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask("text", RFC_KEY)
    with pytest.raises(TypeError):
        impl.apply_mask(b"data")
    with pytest.raises(TypeError):
        impl.apply_mask(b"data", RFC_KEY, 0)
    with pytest.raises(TypeError):
        impl.mask_in_place(bytearray(4), RFC_KEY, start=1)
    with pytest.raises(TypeError):
        impl.mask_in_place(bytearray(4), RFC_KEY, 1.0)
    with pytest.raises(TypeError):
        impl.join_masked([b"a"], RFC_KEY, prefix=b"")
    with pytest.raises(TypeError):
        impl.join_masked([b"a"], RFC_KEY, b"", b"")


def test_c_needs_contiguous_writable_buffers() -> None:
    # Outside the documented argument types the C functions refuse what they cannot read or
    # write as one block of memory.
    c = compiled()
    with pytest.raises(BufferError):
        c.apply_mask(memoryview(b"abcdefgh")[::2], RFC_KEY)
    with pytest.raises(BufferError):
        c.mask_in_place(b"read-only", RFC_KEY)
    view = memoryview(bytearray(b"Hello"))
    c.mask_in_place(view, RFC_KEY)
    assert view == bytes.fromhex("7f9f4d5158")


# --- both implementations at once -----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=3000),
    mask=st.binary(min_size=4, max_size=4),
    start=st.integers(min_value=0, max_value=20),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_property_implementations_agree(data: bytes, mask: bytes, start: int, seed: int) -> None:
    expected = naive_mask(data, mask)
    impls = [PYTHON] if speedups is None else [PYTHON, compiled()]
    for one in impls:
        masked = one.apply_mask(data, mask)
        assert masked == expected
        assert one.apply_mask(masked, mask) == data
        head = bytes(range(start))
        buf = bytearray(head + data)
        one.mask_in_place(buf, mask, start)
        assert buf == head + expected
        assert one.join_masked(cuts(data, seed), mask, head) == head + expected


def test_spread_tables() -> None:
    # The identity the pure-Python fast path of the codec relies on, for every table entry.
    for n in range(TABLE_SIZE + 1):
        for mask in (RFC_KEY, b"\xff\xff\xff\xff", b"\x01\x00\x00\x80"):
            repeated = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
            assert int.from_bytes(mask, "little") * SPREAD[n] & KEEP[n] == repeated


# --- which implementation is active ---------------------------------------------------------------


def active_implementation(env_value: str | None) -> str:
    """masking.IMPLEMENTATION in a fresh interpreter with TETHER_NO_SPEEDUPS set as given."""
    env = dict(os.environ)
    env.pop("TETHER_NO_SPEEDUPS", None)
    if env_value is not None:
        env["TETHER_NO_SPEEDUPS"] = env_value
    code = "from tether.sansio import masking; print(masking.IMPLEMENTATION)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_active_implementation_is_exported() -> None:
    assert masking.IMPLEMENTATION in ("c", "python")
    active = masking.apply_mask, masking.mask_in_place, masking.join_masked
    if masking.IMPLEMENTATION == "python":
        assert active == (PYTHON.apply_mask, PYTHON.mask_in_place, PYTHON.join_masked)
    else:
        assert speedups is not None
        assert active == (speedups.apply_mask, speedups.mask_in_place, speedups.join_masked)
    # The codec uses whatever masking.py chose.
    assert vars(frames)["apply_mask"] is masking.apply_mask
    assert vars(frames)["join_masked"] is masking.join_masked


def test_environment_variable_selects_pure_python() -> None:
    built = "python" if speedups is None else "c"
    assert active_implementation("1") == "python"
    assert active_implementation("yes") == "python"
    assert active_implementation(None) == built
    assert active_implementation("0") == built
    assert active_implementation("") == built


def test_implementation_report_names_the_way_to_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking, "IMPLEMENTATION", "c")
    assert "compiled C" in masking.implementation()
    assert "TETHER_NO_SPEEDUPS=1" in masking.implementation()
    monkeypatch.setattr(masking, "IMPLEMENTATION", "python")
    monkeypatch.setattr(masking, "_why_python", "TETHER_NO_SPEEDUPS is set")
    assert masking.implementation().startswith("pure Python (TETHER_NO_SPEEDUPS is set; unset")
    monkeypatch.setattr(masking, "_why_python", "the C speedups are not built (no module)")
    assert masking.implementation() == (
        "pure Python: the C speedups are not built (no module); install from source with a "
        "working C compiler to build them"
    )


# --- the frame codec with each implementation -----------------------------------------------------


@pytest.fixture
def codec(impl: Implementation, monkeypatch: pytest.MonkeyPatch) -> Iterator[Implementation]:
    """frames.py wired to ``impl`` the way it is when masking.py picks that implementation."""
    monkeypatch.setattr(frames, "apply_mask", impl.apply_mask)
    monkeypatch.setattr(frames, "join_masked", impl.join_masked)
    monkeypatch.setattr(frames, "_MASK_INLINE", impl.name == "python")
    yield impl


def masked_wire(payload: bytes, key: bytes) -> bytes:
    """A final masked binary frame, built from 5.2 by hand."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 0x10000:
        head = bytes([0x82, 0xFE]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0xFF]) + n.to_bytes(8, "big")
    return head + key + naive_mask(payload, key)


CODEC_LENGTHS = [0, 1, 2, 5, 16, 125, 126, 127, 128, 129, 256, 257, 4096, 4097, 65535, 65536]
CODEC_LENGTHS += [70001, RELEASE_GIL_SIZE + 1]


@pytest.mark.parametrize("length", CODEC_LENGTHS)
def test_codec_round_trip(codec: Implementation, length: int) -> None:
    payload, key, _ = case(length)
    wire = masked_wire(payload, key)
    assert serialize_frame(Frame(Opcode.BINARY, payload), mask=True, mask_key=key) == wire
    # Whole, then in 1000-byte pieces (the payload is joined and unmasked when it completes),
    # then with a second frame right behind it.
    for piece in (len(wire) + 1, 1000):
        parser = FrameParser(mask_expected=True)
        frames_out = []
        stream = wire + wire[:5]  # a masked header alone is 6 bytes or more
        for i in range(0, len(stream), piece):
            parser.feed(stream[i : i + piece])
            while (frame := parser.next_frame()) is not None:
                frames_out.append(frame)
        assert [f.data for f in frames_out] == [payload]
        assert type(frames_out[0].data) is bytes


# --- MaskSource -----------------------------------------------------------------------------------


class CountingUrandom:
    """A stand-in for os.urandom that returns distinct, known bytes on every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        return bytes((self.calls + i) % 251 for i in range(n))


def test_mask_source_slices_one_pool_into_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = CountingUrandom()
    monkeypatch.setattr(os, "urandom", fake)
    source = MaskSource()
    pool = CountingUrandom()(masking.POOL_SIZE)
    keys = [source() for _ in range(masking.POOL_SIZE // 4)]
    assert fake.calls == 1
    assert b"".join(keys) == pool
    assert all(type(key) is bytes and len(key) == 4 for key in keys)
    # The 1025th key needs a new read from the OS.
    assert source() != keys[0]
    assert fake.calls == 2


def test_mask_source_reads_the_os_csprng_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []

    def recording_urandom(n: int) -> bytes:
        sizes.append(n)
        return bytes(n)

    monkeypatch.setattr(os, "urandom", recording_urandom)
    source = MaskSource()
    for _ in range(3000):
        source()
    assert sizes == [4096, 4096, 4096]


def test_mask_source_keys_differ() -> None:
    source = MaskSource()
    keys = [source() for _ in range(200)]
    # 200 keys out of 2**32: a repeat has probability below 1e-5 unless keys are not random.
    assert len(set(keys)) == 200


def test_forked_child_drops_inherited_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = CountingUrandom()
    monkeypatch.setattr(os, "urandom", fake)
    source = MaskSource()
    first_pool = CountingUrandom()(masking.POOL_SIZE)
    assert source() + source() == first_pool[:8]
    # What os.register_at_fork runs in a child: the rest of the inherited pool is thrown away,
    # so the child does not send the keys the parent is about to send.
    masking._after_fork_in_child()
    child_key = source()
    assert fake.calls == 2
    assert child_key != first_pool[8:12]
    assert child_key == bytes((2 + i) % 251 for i in range(4))


def test_masking_falls_back_to_python_without_the_compiled_module() -> None:
    code = (
        "import sys; sys.modules['tether.sansio._speedups'] = None\n"
        "from tether.sansio import masking\n"
        "print(masking.IMPLEMENTATION, masking.apply_mask is masking.py_apply_mask)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TETHER_NO_SPEEDUPS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "True"]


# --- new_payload: a payload filled in place -----------------------------------------------------


@pytest.mark.parametrize("which", ["python", "c"])
def test_new_payload_is_filled_through_its_view(which: str) -> None:
    new_payload = masking.py_new_payload if which == "python" else compiled_new_payload()
    data, mask, expected = case(65539)
    payload, view = new_payload(len(data))
    assert len(payload) == len(data) and not view.readonly and len(view) == len(data)
    view[:1000] = data[:1000]
    view[1000:] = data[1000:]
    # Unmasked where it lies, through the view (what the parser does for a server).
    (masking.py_mask_in_place if which == "python" else speedups_mask_in_place())(view, mask)
    view.release()
    assert bytes(payload) == expected
    assert type(payload) is (bytearray if which == "python" else bytes)
    for size in (0, 1, -1):
        with pytest.raises(ValueError, match="size must be at least 2"):
            new_payload(size)


def compiled_new_payload() -> Callable[..., tuple[Any, memoryview]]:
    compiled()  # skips (or fails under TETHER_NO_SKIP) when not built
    assert speedups is not None
    new_payload: Callable[..., tuple[Any, memoryview]] = speedups.new_payload
    return new_payload


def speedups_mask_in_place() -> Callable[..., None]:
    assert speedups is not None
    mask_in_place: Callable[..., None] = speedups.mask_in_place
    return mask_in_place


def test_new_payload_view_keeps_the_payload_alive() -> None:
    new_payload = compiled_new_payload()
    payload, view = new_payload(16)
    del payload
    view[:] = b"0123456789abcdef"
    assert view.obj is not None and bytes(view) == b"0123456789abcdef"


# --- mask_into: mask while copying into a buffer ------------------------------------------------


@pytest.mark.parametrize("which", ["python", "c"])
@pytest.mark.parametrize("length", [0, 3, 64, 300, 65539])
@pytest.mark.parametrize("tail", [0, 5])
def test_mask_into_matches_reference(which: str, length: int, tail: int) -> None:
    mask_into: Callable[..., None] = masking.py_mask_into
    if which == "c":
        compiled()
        assert speedups is not None
        mask_into = speedups.mask_into
    data, mask, expected = case(length)
    buf = bytearray(b"\xee" * (7 + length + tail))
    mask_into(buf, 7, data, mask)
    assert buf[:7] == b"\xee" * 7 and buf[7 + length :] == b"\xee" * tail
    assert bytes(buf[7 : 7 + length]) == expected
    for start in (-1, len(buf) - length + 1):
        with pytest.raises(ValueError, match="do not fit"):
            mask_into(buf, start, data, mask)
    with pytest.raises(ValueError, match="4 bytes"):
        mask_into(buf, 0, data, b"abc")
