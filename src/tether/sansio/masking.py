"""Payload masking (RFC 6455 section 5.3) and a cheap source of masking keys.

5.3: "Octet i of the transformed data ("transformed-octet-i") is the XOR of octet i of the
original data ("original-octet-i") with octet at index i modulo 4 of the masking key". The same
operation masks and unmasks.

Python has no vectorised XOR of two byte strings, so we use two whole-buffer tricks and pick by
size. Figures on CPython 3.11, x86-64, CPU time (see ``bench/frames.py`` for the codec as a
whole):

* up to :data:`SMALL_MASK_SIZE` bytes: read the data as one integer, XOR it with the key
  repeated to the same length, and write the integer back (``int.from_bytes`` /
  ``int.to_bytes``). Fewest Python-level operations; about 0.9 us for 128 bytes. The repeated
  key is the 32-bit key times a precomputed "spreading" integer (``0x...00000001_00000001``)
  for payloads up to :data:`TABLE_SIZE` bytes, which is cheaper than building it as bytes.
* above: XOR with a constant byte is ``bytes.translate`` with a 256-byte table, and byte ``i``
  of the data only ever meets key byte ``i % 4``. So we copy the data into a bytearray and, for
  each ``j`` in 0..3, translate the interleaved slice ``buf[j::4]`` with the table of
  ``mask[j]`` and assign it back in place. About 0.8 GB/s from 8 KiB up, against 0.3-0.45 GB/s
  for the integer route, which converts bytes to 30-bit digits one byte at a time. (Filling a
  zeroed bytearray from slices of the source measured 30% slower than copying first: the
  strided writes then land on fresh pages.)

There is no per-byte Python loop anywhere.

The optional C module ``tether.sansio._speedups`` (built from ``_speedups.c`` when the package
is installed and a C compiler works) XORs 8 bytes at a time: about 0.1 us a call for payloads up
to a few hundred bytes (10-30 times less than the above) and 13 GB/s on large ones, 15-20 times
the pure-Python rate. It is used when it is importable and the environment variable
``TETHER_NO_SPEEDUPS`` is unset, empty or ``0``: then the module-level :func:`apply_mask`,
:func:`mask_in_place` and :func:`join_masked` are the C functions. Otherwise they are the
pure-Python ones, which stay available as :func:`py_apply_mask`, :func:`py_mask_in_place` and
:func:`py_join_masked` either way. :data:`IMPLEMENTATION` says which is active.

The two implementations take the same (positional-only) arguments, return the same results and
raise the same exception types for arguments of the documented types; the tests check them
against a naive reference and against each other. Outside those types they may differ: the C
functions take any buffer (including a writable memoryview to mask in place) but raise
``BufferError`` for a non-contiguous memoryview or a read-only buffer to mask in place.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

__all__ = [
    "IMPLEMENTATION",
    "MaskSource",
    "apply_mask",
    "implementation",
    "join_masked",
    "mask_in_place",
    "mask_into",
    "new_payload",
]

BytesLike = bytes | bytearray | memoryview

#: Payloads up to this many bytes are masked with integer XOR, longer ones with ``translate``.
#: Measured crossover on CPython 3.11: the two are even between 256 and 384 bytes.
SMALL_MASK_SIZE = 256

#: Largest payload for which :data:`SPREAD` and :data:`KEEP` hold precomputed integers.
TABLE_SIZE = 128

#: ``SPREAD[n] * key`` is the little-endian 32-bit ``key`` repeated over at least ``n`` bytes;
#: ``& KEEP[n]`` cuts it to exactly ``n`` bytes. For a 4-byte mask ``m`` and ``n <= TABLE_SIZE``:
#: ``int.from_bytes((m * n)[:n], "little") == int.from_bytes(m, "little") * SPREAD[n] & KEEP[n]``.
SPREAD: tuple[int, ...] = tuple(
    int.from_bytes(b"\x01\x00\x00\x00" * ((n + 3) >> 2), "little") for n in range(TABLE_SIZE + 1)
)
KEEP: tuple[int, ...] = tuple((1 << (8 * n)) - 1 for n in range(TABLE_SIZE + 1))

# _XOR_TABLES[k] maps every byte b to b ^ k. 256 tables of 256 bytes: 64 KiB, built once, with
# one integer XOR per table rather than 65536 Python-level operations.
_IDENTITY = int.from_bytes(bytes(range(256)), "little")
_XOR_TABLES: tuple[bytes, ...] = tuple(
    (_IDENTITY ^ int.from_bytes(bytes((k,)) * 256, "little")).to_bytes(256, "little")
    for k in range(256)
)
del _IDENTITY


def py_apply_mask(data: BytesLike, mask: bytes, /) -> bytes:
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
        if n <= TABLE_SIZE:
            key = int.from_bytes(mask, "little") * SPREAD[n] & KEEP[n]
        else:
            key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
    buf = bytearray(data)
    _translate_in_place(buf, 0, mask)
    return bytes(buf)


def py_mask_in_place(buf: bytearray | memoryview, mask: bytes, start: int = 0, /) -> None:
    """XOR ``buf[start:]`` with the 4-byte ``mask`` repeated, in place.

    This lets a caller that builds a frame in a bytearray (header, then payload) mask the
    payload where it lies, with no temporary copy of it. ``buf`` may also be a writable
    one-dimensional memoryview of bytes.

    Raises:
        ValueError: ``mask`` is not 4 bytes long, or ``start`` is not between 0 and
            ``len(buf)``.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    if not 0 <= start <= len(buf):
        raise ValueError(f"start must be between 0 and {len(buf)}, got {start}")
    if len(buf) - start <= SMALL_MASK_SIZE or type(buf) is not bytearray:
        # Same length in and out: the bytearray is not resized. (A writable memoryview has
        # no translate(): it goes this way whatever its size.)
        buf[start:] = py_apply_mask(memoryview(buf)[start:], mask)
    else:
        _translate_in_place(buf, start, mask)


def py_join_masked(parts: Iterable[BytesLike], mask: bytes, prefix: BytesLike = b"", /) -> bytes:
    """Return ``prefix`` followed by the concatenation of ``parts``, masked with ``mask``.

    The key runs on across the parts: byte ``i`` of the joined parts meets ``mask[i % 4]``,
    as if they were one payload. ``prefix`` (a frame header, say) is copied unmasked. This is
    how the codec builds a masked frame, or unmasks a payload that arrived in pieces, in one
    result object: the C version writes straight into it; this one joins into a bytearray,
    masks it in place and freezes it.

    Raises:
        ValueError: ``mask`` is not 4 bytes long.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    buf = bytearray().join([prefix, *parts])
    py_mask_in_place(buf, mask, memoryview(prefix).nbytes)
    return bytes(buf)


def py_mask_into(buf: bytearray, start: int, data: BytesLike, mask: bytes, /) -> None:
    """Write ``data`` masked with ``mask`` into ``buf[start:start + len(data)]`` (the C
    version does it in one pass; this one copies, then masks in place).

    Raises:
        ValueError: ``mask`` is not 4 bytes long, or ``data`` does not fit at ``start``.
    """
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(mask)}")
    n = memoryview(data).nbytes
    if not 0 <= start <= len(buf) - n:
        raise ValueError(f"{n} bytes do not fit at {start} in a buffer of {len(buf)}")
    with memoryview(buf) as view:
        view[start : start + n] = memoryview(data).cast("B")
    if start + n == len(buf):
        py_mask_in_place(buf, mask, start)
    else:
        with memoryview(buf) as view:
            view[start : start + n] = py_apply_mask(view[start : start + n], mask)


def py_new_payload(size: int, /) -> tuple[bytearray, memoryview]:
    """Where a large received payload of ``size`` bytes is read in place: the object and a
    writable view of it. The C version returns a ``bytes`` object, which becomes the payload
    as it is; this one a ``bytearray``, which the parser copies into ``bytes`` once full.

    Raises:
        ValueError: ``size`` is less than 2.
    """
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    buf = bytearray(size)
    return buf, memoryview(buf)


def _translate_in_place(buf: bytearray, start: int, mask: bytes) -> None:
    tables = _XOR_TABLES
    # Each slice buf[start + j::4] runs to the end of buf, so reading it, translating it and
    # assigning it back keeps its length and never resizes the bytearray.
    buf[start::4] = buf[start::4].translate(tables[mask[0]])
    buf[start + 1 :: 4] = buf[start + 1 :: 4].translate(tables[mask[1]])
    buf[start + 2 :: 4] = buf[start + 2 :: 4].translate(tables[mask[2]])
    buf[start + 3 :: 4] = buf[start + 3 :: 4].translate(tables[mask[3]])


# --- choosing the implementation ----------------------------------------------------------------

#: Which masking functions are active: ``"c"`` (the compiled module) or ``"python"``.
IMPLEMENTATION: Literal["c", "python"] = "python"
apply_mask = py_apply_mask
mask_in_place = py_mask_in_place
join_masked = py_join_masked
mask_into = py_mask_into
new_payload: Callable[[int], tuple[bytes | bytearray, memoryview]] = py_new_payload

# Why the pure-Python functions are active, for implementation().
_why_python = "TETHER_NO_SPEEDUPS is set"

if os.environ.get("TETHER_NO_SPEEDUPS", "") in ("", "0"):
    try:
        from ._speedups import apply_mask, join_masked, mask_in_place, mask_into, new_payload
    except ImportError as exc:  # not built: no compiler at install time, or an unusual platform
        _why_python = f"the C speedups are not built ({exc})"
    else:
        IMPLEMENTATION = "c"


def implementation() -> str:
    """One line that says which masking code runs and how to pick the other one.

    ``tether --version`` prints it. The compiled module is used unless the environment
    variable ``TETHER_NO_SPEEDUPS`` is set (to anything but ``0``) before tether is imported.
    """
    if IMPLEMENTATION == "c":
        return (
            "compiled C speedups (tether.sansio._speedups); "
            "set TETHER_NO_SPEEDUPS=1 to force pure Python"
        )
    if _why_python == "TETHER_NO_SPEEDUPS is set":
        return "pure Python (TETHER_NO_SPEEDUPS is set; unset it to use the compiled C speedups)"
    return (
        f"pure Python: {_why_python}; install from source with a working C compiler to build them"
    )


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
