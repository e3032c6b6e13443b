"""Payload masking (RFC 6455 section 5.3) and a cheap source of masking keys.

5.3: "Octet i of the transformed data ("transformed-octet-i") is the XOR of octet i of the
original data ("original-octet-i") with octet at index i modulo 4 of the masking key". The same
operation masks and unmasks.

Python has no vectorised XOR of two byte strings, so we use two whole-buffer tricks and pick by
size (measured on CPython 3.11; ``bench/frames.py`` and the notes below give the figures):

* small payloads: turn the data and the repeated key into two integers, XOR them, and turn the
  result back into bytes. Three C-level passes, and the fewest Python-level operations.
* large payloads: XOR with a constant byte is a ``bytes.translate`` with a 256-byte table. Byte
  ``i`` of the data only meets key byte ``i % 4``, so we translate the four interleaved slices
  ``data[j::4]`` with the table of ``mask[j]`` and write them back with extended-slice
  assignment. That is about twice as fast as the integer route above about 1 KiB, because
  ``int.from_bytes`` and ``int.to_bytes`` convert one byte at a time into 30-bit digits.

Nothing here depends on the payload: there is no per-byte Python loop anywhere.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Iterator

__all__ = ["MaskSource", "apply_mask", "apply_mask_into"]

BytesLike = bytes | bytearray | memoryview

#: Payloads up to this many bytes are masked with integer XOR, longer ones with ``translate``.
#: Measured crossover on CPython 3.11 (x86-64): the two are even around 512-1024 bytes.
SMALL_MASK_SIZE = 512

# _XOR_TABLES[k] maps every byte b to b ^ k. 256 tables of 256 bytes: 64 KiB, built once, with
# one integer XOR per table rather than 65536 Python-level operations.
_IDENTITY = int.from_bytes(bytes(range(256)), "little")
_XOR_TABLES: tuple[bytes, ...] = tuple(
    (_IDENTITY ^ int.from_bytes(bytes((k,)) * 256, "little")).to_bytes(256, "little")
    for k in range(256)
)
del _IDENTITY


def apply_mask(data: BytesLike, mask: bytes) -> bytes:
    """Return ``data`` XORed with the 4-byte ``mask`` repeated (5.3); masks and unmasks alike.

    ``data`` is any C-contiguous bytes-like object; a memoryview of a wider item type is read as
    its raw bytes.

    Raises:
        ValueError: ``mask`` is not 4 bytes long.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    if type(data) is memoryview and data.itemsize != 1:
        data = data.cast("B")
    n = len(data)
    if n <= SMALL_MASK_SIZE:
        if n == 0:
            return b""
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    out = bytearray(n)
    _translate_into(out, 0, data, mask)
    return bytes(out)


def apply_mask_into(out: bytearray, offset: int, data: BytesLike, mask: bytes) -> None:
    """Write ``data`` XOR ``mask`` into ``out[offset:]``, which must be exactly ``len(data)`` long.

    This lets a caller build a frame (header, key, masked payload) in one buffer with no extra
    copy of the payload.

    Raises:
        ValueError: ``mask`` is not 4 bytes long, or ``out[offset:]`` is not ``len(data)`` long.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    if type(data) is memoryview and data.itemsize != 1:
        data = data.cast("B")
    if len(out) - offset != len(data) or offset < 0:
        raise ValueError("out[offset:] must be exactly as long as data")
    if len(data) <= SMALL_MASK_SIZE:
        out[offset:] = apply_mask(data, mask)
    else:
        _translate_into(out, offset, data, mask)


def _translate_into(out: bytearray, offset: int, data: BytesLike, mask: bytes) -> None:
    # Strided slicing of a memoryview builds a strided view, and bytes() of that is slow: copy
    # it into bytes first (one fast memcpy).
    if type(data) is memoryview:
        data = data.tobytes()
    tables = _XOR_TABLES
    # Each slice out[offset + j::4] runs to the end of out and so has exactly as many items as
    # data[j::4]; the assignment keeps the length and never resizes the bytearray.
    out[offset::4] = data[0::4].translate(tables[mask[0]])
    out[offset + 1 :: 4] = data[1::4].translate(tables[mask[1]])
    out[offset + 2 :: 4] = data[2::4].translate(tables[mask[2]])
    out[offset + 3 :: 4] = data[3::4].translate(tables[mask[3]])


# --- masking keys -------------------------------------------------------------------------------

#: Bytes read from the operating system's CSPRNG per refill: 1024 keys.
POOL_SIZE = 4096

_split_pool = struct.Struct("4s" * (POOL_SIZE // 4)).unpack

# Every MaskSource alive, so that a forked child can throw away the keys it inherited.
_sources: weakref.WeakSet[MaskSource] = weakref.WeakSet()


class MaskSource:
    """Hands out unpredictable 4-byte masking keys, cheaply.

    5.3: "the masking key MUST be derived from a strong source of entropy, and the masking key
    for a given frame MUST NOT make it simple for a server/proxy to predict the masking key for a
    subsequent frame." Keys come from ``os.urandom`` (the kernel CSPRNG, as ``secrets`` uses),
    read 4096 bytes at a time instead of one system call per frame. Each key is handed out once:
    the pool is split into a tuple of keys and consumed through an iterator, whose ``next`` is a
    single C call and so is safe between threads. After ``os.fork()`` the child discards the keys
    it inherited, so parent and child never send the same keys.
    """

    __slots__ = ("__weakref__", "_iter")

    def __init__(self) -> None:
        self._iter: Iterator[bytes] = iter(())
        _sources.add(self)

    def __call__(self) -> bytes:
        """A fresh 4-byte key."""
        try:
            return next(self._iter)
        except StopIteration:
            self._refill()
            return next(self._iter)

    def _refill(self) -> None:
        self._iter = iter(_split_pool(os.urandom(POOL_SIZE)))

    def _discard(self) -> None:
        self._iter = iter(())


def _after_fork_in_child() -> None:
    for source in list(_sources):
        source._discard()


if hasattr(os, "register_at_fork"):  # pragma: no branch - missing only on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
