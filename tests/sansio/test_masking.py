"""Tests for tether.sansio.masking: apply_mask against a naive reference, and MaskSource."""

from __future__ import annotations

import array
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.sansio import masking
from tether.sansio.masking import (
    KEEP,
    SMALL_MASK_SIZE,
    SPREAD,
    TABLE_SIZE,
    MaskSource,
    apply_mask,
    mask_in_place,
)

#: The masking key of the examples in RFC 6455 section 5.7.
RFC_KEY = bytes((0x37, 0xFA, 0x21, 0x3D))


def noise(size: int) -> bytes:
    """Arbitrary but reproducible bytes."""
    return random.Random(size).randbytes(size)


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 5.3 read literally: transformed-octet-i = original-octet-i XOR mask[i MOD 4]."""
    return bytes(octet ^ mask[i % 4] for i, octet in enumerate(data))


# Lengths around every boundary the implementation has: empty, shorter than the key, not a
# multiple of 4, and both sides of the switch from integer XOR to translate.
LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 125, 126, TABLE_SIZE, TABLE_SIZE + 1]
LENGTHS += [SMALL_MASK_SIZE - 1, SMALL_MASK_SIZE]
LENGTHS += [SMALL_MASK_SIZE + n for n in (1, 2, 3, 4)] + [4093, 65536, 65539]


def test_rfc_example() -> None:
    # 5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58.
    assert apply_mask(b"Hello", RFC_KEY) == bytes.fromhex("7f9f4d5158")
    assert apply_mask(bytes.fromhex("7f9f4d5158"), RFC_KEY) == b"Hello"


@pytest.mark.parametrize("length", LENGTHS)
def test_matches_reference_at_boundaries(length: int) -> None:
    data = noise(length)
    mask = noise(4)
    expected = naive_mask(data, mask)
    assert apply_mask(data, mask) == expected
    assert apply_mask(bytearray(data), mask) == expected
    assert apply_mask(memoryview(data), mask) == expected


@pytest.mark.parametrize("length", LENGTHS)
def test_returns_bytes(length: int) -> None:
    assert type(apply_mask(bytearray(length), b"abcd")) is bytes


def test_memoryview_slice_and_wide_items() -> None:
    data = noise(2000)
    view = memoryview(data)[3:1501]
    assert apply_mask(view, RFC_KEY) == naive_mask(data[3:1501], RFC_KEY)
    # A memoryview over 4-byte items is masked as its raw bytes, not item by item.
    for count in (3, 300):
        words = array.array("I", range(count))
        raw = words.tobytes()
        assert apply_mask(memoryview(words), RFC_KEY) == naive_mask(raw, RFC_KEY)


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_mask_must_be_four_bytes(mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"data", mask)
    with pytest.raises(ValueError, match="4 bytes"):
        mask_in_place(bytearray(4), mask)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("start", [0, 1, 4, 7])
def test_mask_in_place_leaves_the_head_alone(length: int, start: int) -> None:
    data = noise(length)
    mask = noise(4)
    head = b"header!"[:start]
    buf = bytearray(head + data)
    mask_in_place(buf, mask, start)
    assert buf == head + naive_mask(data, mask)
    mask_in_place(buf, mask, start)
    assert buf == head + data


def test_mask_in_place_default_start() -> None:
    buf = bytearray(b"Hello")
    mask_in_place(buf, RFC_KEY)
    assert buf == bytes.fromhex("7f9f4d5158")


def test_spread_tables() -> None:
    # The identity the fast path of the codec relies on, for every table entry.
    for n in range(TABLE_SIZE + 1):
        for mask in (RFC_KEY, b"\xff\xff\xff\xff", b"\x01\x00\x00\x80"):
            repeated = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
            assert int.from_bytes(mask, "little") * SPREAD[n] & KEEP[n] == repeated


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_property_inverse_and_reference(data: bytes, mask: bytes) -> None:
    masked = apply_mask(data, mask)
    assert masked == naive_mask(data, mask)
    assert apply_mask(masked, mask) == data
    assert len(masked) == len(data)


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
