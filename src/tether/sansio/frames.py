"""Frames, the frame codec and close payloads (RFC 6455 sections 5 and 7).

Two halves: :func:`serialize_frame` turns a :class:`Frame` into the bytes of one frame, and
:class:`FrameParser` turns received bytes back into frames, checking every rule of section 5
that can be checked without knowing the state of the connection. Both are on the hot path of
every message, so they work on whole buffers: no per-byte Python loops, header fields read with
``struct`` and integer operations, payloads cut out with one slice (see :class:`FrameParser` for
how the receive buffer avoids re-copying a large frame that arrives in pieces).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from ..exceptions import PayloadTooBig, ProtocolError
from .codes import CloseCode, Opcode, explain, is_valid_close_code
from .masking import (
    IMPLEMENTATION,
    KEEP,
    SMALL_MASK_SIZE,
    SPREAD,
    TABLE_SIZE,
    MaskSource,
    apply_mask,
    join_masked,
    mask_in_place,
    mask_into,
    new_payload,
)

__all__ = ["MAX_LOG_SIZE", "Close", "Frame", "FrameParser", "masked_frame_into", "serialize_frame"]

#: Payloads longer than this are elided in ``str(frame)``.
MAX_LOG_SIZE = 75


@dataclasses.dataclass(slots=True)
class Frame:
    """One WebSocket frame, unmasked. ``data`` is the payload as it is on the wire after unmasking
    (compressed, if an extension compressed it)."""

    opcode: Opcode
    data: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __str__(self) -> str:
        length = f"{len(self.data)} byte{'' if len(self.data) == 1 else 's'}"
        flags = "" if self.fin else " [continued]"
        if self.rsv1:
            flags += " [rsv1]"
        if self.opcode is Opcode.TEXT or (self.opcode is Opcode.CONT and not self.rsv1):
            try:
                shown = repr(bytes(self.data).decode())
            except UnicodeDecodeError:
                shown = bytes(self.data).hex(" ")
        elif self.opcode is Opcode.CLOSE:
            try:
                shown = str(Close.parse(self.data))
            except (ProtocolError, UnicodeDecodeError):
                shown = bytes(self.data).hex(" ")
        else:
            shown = bytes(self.data).hex(" ")
        if len(shown) > MAX_LOG_SIZE:
            shown = shown[: MAX_LOG_SIZE - 11] + "..." + shown[-8:]
        return f"{self.opcode.name} {shown} [{length}]{flags}"


def _check_control(fin: bool | int, length: int) -> None:
    # 5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST NOT be
    # fragmented." Shared by serialize_frame, unmasked_header and the parser, which applies it
    # to the header alone so that a bad control frame fails before its payload arrives.
    if length > 125:
        raise ProtocolError("control frame too long")
    if not fin:
        raise ProtocolError("fragmented control frame")


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """The payload of a close frame: a code and a reason (5.5.1)."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.code} ({explain(self.code)})"
        return f"{text} {self.reason}" if self.reason else text

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """Parse a close frame payload.

        Raises:
            ProtocolError: the payload is one byte long, or the code is not allowed on the wire.
            UnicodeDecodeError: the reason is not valid UTF-8.
        """
        if len(data) == 0:
            return cls(CloseCode.NO_STATUS_RCVD, "")
        if len(data) == 1:
            raise ProtocolError("close frame too short")
        close = cls(int.from_bytes(data[:2], "big"), bytes(data[2:]).decode())
        close.check()
        return close

    def serialize(self) -> bytes:
        """The payload of a close frame carrying this code and reason."""
        self.check()
        return self.code.to_bytes(2, "big") + self.reason.encode()

    def check(self) -> None:
        """Raise ProtocolError if the code may not appear on the wire (7.4)."""
        if not is_valid_close_code(self.code):
            raise ProtocolError(f"invalid status code: {self.code}")


# --- the codec -----------------------------------------------------------------------------------

# 5.2, first byte: FIN, RSV1, RSV2, RSV3, then the 4-bit opcode. The table maps every possible
# first byte to the fields of a Frame, or to None for the opcodes 5.2 reserves (0x3-0x7 and
# 0xB-0xF), so that the parser reads them with one lookup and no bit twiddling.
_FIRST_BYTE: tuple[tuple[Opcode, bool, bool, bool, bool] | None, ...] = tuple(
    (
        Opcode(b & 0x0F),
        bool(b & 0x80),
        bool(b & 0x40),
        bool(b & 0x20),
        bool(b & 0x10),
    )
    if b & 0x0F in {opcode.value for opcode in Opcode}
    else None
    for b in range(256)
)

# Header layouts (5.2): 7-bit length, 16-bit length after 126, 64-bit length after 127; the
# "4s" variants carry the masking key right after the length.
_HEADER_7 = struct.Struct("!BB").pack
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack
_HEADER_7_KEY = struct.Struct("!BB4s").pack
_HEADER_16_KEY = struct.Struct("!BBH4s").pack
_HEADER_64_KEY = struct.Struct("!BBQ4s").pack
_UNPACK_16 = struct.Struct("!H").unpack_from
_UNPACK_64 = struct.Struct("!Q").unpack_from
_UNPACK_KEY = struct.Struct("<I").unpack_from

# How small payloads are masked. In pure Python, the integer method of masking.py written out
# inline is the cheapest (no call, no memoryview). With the C helper one call costs about 0.1 us
# whatever the size up to a few KiB, two to four times less than the inline integer method even
# for a 2-byte payload, so the codec calls it for every masked payload. Payloads up to
# _SLICE_MASK_SIZE are handed to it as a bytes slice of the receive buffer: copying a few KiB
# costs less than creating a memoryview.
_MASK_INLINE = IMPLEMENTATION == "python"
_SLICE_MASK_SIZE = 4096

#: A pending payload is read in place once 1/_IN_PLACE_RATIO of it has arrived (see
#: FrameParser.payload_buffer).
_IN_PLACE_RATIO = 2 if _MASK_INLINE else 8

#: Where a masking client gets its keys when the caller does not pass one. Tests may replace it
#: with any callable returning 4 bytes, to get the RFC's example key.
_mask_source: Callable[[], bytes] = MaskSource()


def serialize_frame(
    frame: Frame, *, mask: bool, mask_key: bytes | None = None, rsv: int | None = None
) -> bytes:
    """The bytes of one frame carrying ``frame`` (5.2).

    The payload length uses the shortest of the three encodings, as 5.2 requires ("the minimal
    number of bytes MUST be used to encode the length"). A client passes ``mask=True`` (5.3: "a
    client MUST mask all frames that it sends to the server"); the key is ``mask_key`` if given
    (tests use the RFC's example key), otherwise a fresh one from a module-level
    :class:`~tether.sansio.masking.MaskSource`.

    The reserved bits are ``frame.rsv1/2/3``, unless ``rsv`` is given: then it is the bit mask of
    the reserved bits to set (``0x40`` RSV1, ``0x20`` RSV2, ``0x10`` RSV3) and the frame's flags
    are ignored.

    Unmasked, the payload is copied once, into the result. Masked, it is also read once to
    mask it: into a temporary up to :data:`~tether.sansio.masking.SMALL_MASK_SIZE` bytes;
    above that, :func:`~tether.sansio.masking.join_masked` puts the header and the masked
    payload in one result (the C helper writes straight into it; in pure Python the payload is
    masked in place in a bytearray, which is then frozen into ``bytes``).

    Raises:
        ProtocolError: a control frame is longer than 125 bytes or is fragmented (5.5).
        ValueError: ``mask_key`` is not 4 bytes, or ``rsv`` has bits outside ``0x70``.
    """
    opcode = frame.opcode
    data = frame.data
    n = len(data)
    if opcode >= 0x8:
        _check_control(frame.fin, n)
    if rsv is None:
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            rsv = (frame.rsv1 << 6) | (frame.rsv2 << 5) | (frame.rsv3 << 4)
        else:
            rsv = 0
    elif rsv & ~0x70:
        raise ValueError(f"rsv must be a combination of 0x40, 0x20 and 0x10, got {rsv:#x}")
    b0 = opcode | rsv | 0x80 if frame.fin else opcode | rsv

    if not mask:
        if n < 126:
            return _HEADER_7(b0, n) + data
        if n < 0x10000:
            return _HEADER_16(b0, 126, n) + data
        return _HEADER_64(b0, 127, n) + data

    key = _mask_source() if mask_key is None else mask_key
    if len(key) != 4:
        raise ValueError(f"mask_key must be 4 bytes, got {len(key)}")
    if n < 126:
        # The common case, small messages from a client.
        if _MASK_INLINE:
            spread = int.from_bytes(key, "little") * SPREAD[n] & KEEP[n]
            masked = (int.from_bytes(data, "little") ^ spread).to_bytes(n, "little")
            return _HEADER_7_KEY(b0, 0x80 | n, key) + masked
        return _HEADER_7_KEY(b0, 0x80 | n, key) + apply_mask(data, key)
    header = _HEADER_16_KEY(b0, 0xFE, n, key) if n < 0x10000 else _HEADER_64_KEY(b0, 0xFF, n, key)
    if n <= SMALL_MASK_SIZE:
        return header + apply_mask(data, key)
    # Large payloads: header and masked payload in one result, with one pass over the payload.
    return join_masked((data,), key, header)


def masked_frame_into(frame: Frame, spare: bytearray | None) -> bytearray:
    """The masked frame of :func:`serialize_frame` (fresh key), built in ``spare`` when it
    has exactly the frame's size, else in a new bytearray; for large data frames that an I/O
    layer writes and may then hand back for the next one (see ``Protocol.reuse_output``).

    Reusing one buffer spares the allocation of a fresh frame-sized object per message: for
    a 1 MiB frame, glibc serves that with pages the kernel must fault in and zero (about 256
    page faults, more than the masking itself costs). Two passes over warm memory (copy,
    then mask in place) instead of one over fresh memory.
    """
    data = frame.data
    n = len(data)
    if frame.opcode >= 0x8:
        _check_control(frame.fin, n)
    b0 = frame.opcode | (frame.fin << 7) | (frame.rsv1 << 6) | (frame.rsv2 << 5) | (frame.rsv3 << 4)
    key = _mask_source()
    if n < 126:
        header = _HEADER_7_KEY(b0, 0x80 | n, key)
    elif n < 0x10000:
        header = _HEADER_16_KEY(b0, 0xFE, n, key)
    else:
        header = _HEADER_64_KEY(b0, 0xFF, n, key)
    hlen = len(header)
    if spare is not None and len(spare) == hlen + n:
        # Same lengths: written in place, never resized (through a memoryview: a bytearray's
        # own slice assignment first copies anything but a bytearray into a temporary one, a
        # frame-sized allocation, which is what this function is here to avoid). The payload
        # is masked as it is copied (one pass with the C helper).
        with memoryview(spare) as view:
            view[:hlen] = header
        mask_into(spare, hlen, data, key)
        return spare
    buf = bytearray(header)
    buf += data
    mask_in_place(buf, key, hlen)
    return buf


def unmasked_header(frame: Frame) -> bytes:
    """The header that :func:`serialize_frame` puts before ``frame.data`` when not masking,
    for a caller that writes the payload separately (no copy of a large payload).

    It repeats the unmasked branch of :func:`serialize_frame` rather than sharing a helper
    with it, so that serialize_frame (once per message sent) pays no extra call;
    ``tests/sansio/test_frames.py::test_unmasked_header_is_serialize_frame_without_the_data``
    proves the two agree. What it buys (``bench/split_write.py``, 2-core CI machine, CPU time
    per echo through the asyncio server): 64 KiB 13.5 us instead of 14.6 us, 1 MiB 169 us
    instead of 232 us, as the protocol writes the payload of a frame of
    ``SPLIT_WRITE_SIZE`` bytes or more apart from this header instead of copying it.

    Raises:
        ProtocolError: a control frame is longer than 125 bytes or is fragmented (5.5).
    """
    n = len(frame.data)
    if frame.opcode >= 0x8:
        _check_control(frame.fin, n)
    b0 = frame.opcode | (frame.fin << 7) | (frame.rsv1 << 6) | (frame.rsv2 << 5) | (frame.rsv3 << 4)
    if n < 126:
        return _HEADER_7(b0, n)
    if n < 0x10000:
        return _HEADER_16(b0, 126, n)
    return _HEADER_64(b0, 127, n)


class FrameParser:
    """Turns received bytes into frames (5.2), checking the rules a single frame must follow.

    ``mask_expected`` is True on a server, which requires masked frames (5.1: "The server MUST
    close the connection upon receiving a frame that is not masked"), and False on a client,
    which refuses them ("A client MUST close a connection if it detects a masked frame").
    ``allowed_rsv`` is the bit mask of reserved bits that agreed extensions give a meaning to;
    ``max_frame_size`` bounds the payload of one frame. Both may be changed between frames.

    Call :meth:`feed` with bytes as they arrive, then :meth:`next_frame` until it returns
    ``None``. After an exception the parser is in an undefined state: stop using it.

    What is checked here: reserved opcodes, the mask bit, reserved bits nobody agreed to, the
    5.5 rules for control frames (length at most 125, not fragmented), the most significant bit
    of a 64-bit length, and ``max_frame_size``. Opcode, mask bit, reserved bits and
    fragmentation are checked as soon as the first two header bytes are in, the rest as soon as
    the header is complete, before any of the payload is needed. What is left to the
    connection: reserved bits on control frames, fragmentation order, close payloads, UTF-8.
    Lengths encoded with more bytes than needed are accepted, for control frames too (5.2 asks
    the sender for the minimal encoding but does not ask the receiver to reject others).

    Buffering, for speed: received chunks are kept as a list and merged only when a header is
    needed, so ``feed`` is O(1) and never copies a ``bytes`` chunk. Frames are cut out of the
    merged buffer by position (no compaction per frame). When a frame's header is complete but
    its payload is not, the header is kept and later chunks only append to the list; the payload
    is joined once, when its last byte arrives. A 16 MiB frame that arrives in 64 KiB pieces
    therefore costs one join, not a quadratic series of copies.
    """

    __slots__ = (
        "_buf",
        "_have",
        "_into",
        "_into_have",
        "_into_view",
        "_parts",
        "_pending",
        "_pos",
        "allowed_rsv",
        "mask_expected",
        "max_frame_size",
    )

    def __init__(
        self, *, mask_expected: bool, max_frame_size: int | None = None, allowed_rsv: int = 0
    ) -> None:
        #: Whether frames must be masked (server) or must not be (client).
        self.mask_expected = mask_expected
        #: Largest payload accepted, in bytes; ``None`` for no limit.
        self.max_frame_size = max_frame_size
        #: Reserved bits (``0x40`` RSV1, ``0x20`` RSV2, ``0x10`` RSV3) that may be set.
        self.allowed_rsv = allowed_rsv
        # Merged bytes; those before _pos have been consumed.
        self._buf = b""
        self._pos = 0
        # Chunks received after _buf, not merged yet, and their total length.
        self._parts: list[bytes] = []
        self._have = 0
        # For a frame whose header is parsed but whose payload is incomplete: the Frame fields
        # from the first byte, the payload length, the masking key and the header length. Its
        # payload bytes so far are in _parts (and _buf is empty).
        self._pending: tuple[tuple[Opcode, bool, bool, bool, bool], int, bytes | None, int] | None
        self._pending = None
        # A pending payload read in place (see payload_buffer): the object that becomes the
        # payload, a writable view of it, and how many of its bytes have arrived. While it is
        # set, _parts and _have hold only what follows the frame.
        self._into: bytes | bytearray | None = None
        self._into_view: memoryview | None = None
        self._into_have = 0

    def discard(self) -> None:
        """Drop every byte fed and not returned yet (the connection is ending)."""
        self._buf = b""
        self._pos = 0
        self._parts = []
        self._have = 0
        self._pending = None
        self._into = self._into_view = None
        self._into_have = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not returned yet as part of a frame (including a parsed header)."""
        held = len(self._buf) - self._pos + self._have + self._into_have
        if self._pending is not None:
            held += self._pending[3]
        return held

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. They are copied unless ``data`` is a ``bytes`` object."""
        if self._pos == len(self._buf) and not self._parts and self._pending is None:
            # The usual case: everything before was consumed. bytes(x) is x for bytes.
            self._buf = bytes(data)
            self._pos = 0
        elif self._into is not None:
            self._fill(data)
        elif data:
            self._parts.append(bytes(data))
            self._have += len(data)

    def payload_buffer(self, min_size: int) -> memoryview | None:
        """Where to read the rest of the pending frame's payload in place (a writable view of
        exactly the bytes still missing), when at least ``min_size`` of them are; ``None``
        otherwise. After reading ``n`` bytes into it, call :meth:`payload_written`.

        The payload then arrives in the object the frame will carry (with the C helper, the
        ``bytes`` object itself; see ``masking.new_payload``): no copy of each read out of a
        shared buffer and no join at the end. The object is only created once a part of the
        payload has arrived (an eighth with the C helper, whose new object is not written, so
        its untouched pages cost no memory; half in pure Python, whose ``bytearray`` is
        zeroed), so that a peer's header alone never costs a frame-sized allocation.
        :attr:`buffered` counts the bytes received, as before.
        """
        pending = self._pending
        if pending is None:
            return None
        view = self._into_view
        if view is None:
            length = pending[1]
            have = self._have
            if length - have < min_size or have * _IN_PLACE_RATIO < length:
                return None
            into, view = new_payload(length)
            # The payload so far (_parts holds exactly that while the frame is pending).
            pos = 0
            for part in self._parts:
                view[pos : pos + len(part)] = part
                pos += len(part)
            self._parts = []
            self._have = 0
            self._into, self._into_view, self._into_have = into, view, have
        return view[self._into_have :]

    def payload_written(self, size: int) -> None:
        """``size`` bytes were read into the view from :meth:`payload_buffer`."""
        self._into_have += size

    def _fill(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes fed while a payload is read in place: the missing ones go into it, the rest
        (the next frames) to _parts."""
        view = self._into_view
        assert view is not None
        have = self._into_have
        take = min(len(view) - have, len(data))
        if take:
            view[have : have + take] = memoryview(data)[:take]
            self._into_have = have + take
        if take < len(data):
            rest = bytes(data[take:])
            self._parts.append(rest)
            self._have += len(rest)

    def next_frame(self) -> Frame | None:
        """The next complete frame, unmasked; ``None`` if more bytes are needed.

        Raises:
            ProtocolError: a reserved opcode, a mask bit that does not match the role, a
                reserved bit that no extension agreed to, a control frame that is too long or
                fragmented, or a 64-bit length with its most significant bit set.
            PayloadTooBig: the payload length is larger than ``max_frame_size``; raised when the
                header is complete, before the payload arrives.
        """
        if self._pending is not None:
            return self._finish_pending()

        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2 or (avail < 14 and self._parts):
            # Not enough merged bytes for the longest header: merge what has arrived.
            if not self._parts:
                return None
            buf = self._merge()
            pos = 0
            avail = len(buf)
            if avail < 2:
                return None

        b0 = buf[pos]
        b1 = buf[pos + 1]
        fields = _FIRST_BYTE[b0]
        if fields is None:
            raise ProtocolError(f"invalid opcode: {b0 & 0x0F:#x}")
        if b0 & 0x70 and b0 & 0x70 & ~self.allowed_rsv:
            # 5.2: "MUST be 0 unless an extension is negotiated that defines meanings".
            raise ProtocolError(f"reserved bits must be 0: {b0 & 0x70 & ~self.allowed_rsv:#x}")
        # 5.1: a server requires masked frames, a client refuses them.
        if b1 & 0x80:
            if not self.mask_expected:
                raise ProtocolError("masked frame")
            hlen = 6
        elif self.mask_expected:
            raise ProtocolError("unmasked frame")
        else:
            hlen = 2
        length = b1 & 0x7F
        if b0 & 0x08 and not b0 & 0x80:
            raise ProtocolError("fragmented control frame")
        if length >= 126:
            hlen += 2 if length == 126 else 8
            if avail < hlen:
                return None
            if length == 126:
                length = _UNPACK_16(buf, pos + 2)[0]
            else:
                length = _UNPACK_64(buf, pos + 2)[0]
                # 5.2: "the most significant bit MUST be 0".
                if length >> 63:
                    raise ProtocolError("payload length has its most significant bit set")
        elif avail < hlen:
            return None
        if b0 & 0x08 and length > 125:
            # 5.5, checked on the header: a control frame may use a longer length encoding
            # than it needs, but not carry more than 125 bytes.
            _check_control(True, length)
        limit = self.max_frame_size
        if limit is not None and length > limit:
            raise PayloadTooBig(
                f"frame payload of {length} bytes is over the limit of {limit} bytes"
            )

        start = pos + hlen
        end = start + length
        if end > len(buf):
            # Keep the header; from now on chunks only accumulate until the payload is whole.
            key = buf[start - 4 : start] if b1 & 0x80 else None
            self._pending = (fields, length, key, hlen)
            if start < len(buf):
                tail = buf[start:]
                self._parts.insert(0, tail)
                self._have += len(tail)
            self._buf = b""
            self._pos = 0
            return self._finish_pending()

        self._pos = end
        opcode, fin, rsv1, rsv2, rsv3 = fields
        if not b1 & 0x80:
            return Frame(opcode, buf[start:end], fin, rsv1, rsv2, rsv3)
        if length <= TABLE_SIZE and _MASK_INLINE:
            # Small masked frames are the bulk of what a server receives: in pure Python,
            # unmask inline with the integer method of masking.py, reading the key as a
            # little-endian integer.
            spread = _UNPACK_KEY(buf, start - 4)[0] * SPREAD[length] & KEEP[length]
            data = (int.from_bytes(buf[start:end], "little") ^ spread).to_bytes(length, "little")
        elif length <= _SLICE_MASK_SIZE:
            data = apply_mask(buf[start:end], buf[start - 4 : start])
        else:
            data = apply_mask(memoryview(buf)[start:end], buf[start - 4 : start])
        return Frame(opcode, data, fin, rsv1, rsv2, rsv3)

    def pending_frame(self) -> tuple[Opcode, bool, int, int] | None:
        """For a frame whose header is parsed but whose payload is incomplete: its opcode,
        its RSV1 bit, how many payload bytes have arrived and the payload length; ``None``
        otherwise.

        This lets the connection validate the UTF-8 of a text frame while it arrives.
        """
        if self._pending is None:
            return None
        fields, length, _, _ = self._pending
        have = self._have if self._into is None else self._into_have
        return fields[0], fields[2], have, length

    def partial_payload(self, start: int) -> bytes:
        """The unmasked payload bytes of the incomplete frame received so far, from ``start``
        (use :meth:`pending_frame` first). A loop over received chunks, not over bytes."""
        assert self._pending is not None
        _, _, key, _ = self._pending
        if self._into_view is not None:
            data = self._into_view[start : self._into_have].tobytes()
        else:
            pieces = []
            offset = 0
            for part in self._parts:
                end = offset + len(part)
                if end > start:
                    pieces.append(part[max(start - offset, 0) :])
                offset = end
            data = b"".join(pieces)
        if key is None:
            return data
        shift = start % 4
        return apply_mask(data, key[shift:] + key[:shift])

    def _merge(self) -> bytes:
        """Put the unconsumed bytes and every received chunk in one bytes object."""
        parts = self._parts
        if self._pos < len(self._buf):
            parts.insert(0, self._buf[self._pos :])
        # join() of a single bytes object returns that object: no copy.
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buf = buf
        self._pos = 0
        self._parts = []
        self._have = 0
        return buf

    def _finish_pending(self) -> Frame | None:
        """Return the pending frame if all of its payload has arrived."""
        assert self._pending is not None
        fields, length, key, _ = self._pending
        if self._into is not None:
            return self._finish_in_place()
        have = self._have
        if have < length:
            return None
        parts = self._parts
        if have == length:
            pieces = parts
            self._parts = []
            self._have = 0
        else:
            # The last chunk needed holds the start of what follows: split it. A loop per chunk,
            # not per byte; everything after the frame goes back to _parts, unmerged.
            needed = length
            count = 0
            # have > length, so some part always reaches needed: the loop never runs out.
            for part in parts:  # pragma: no branch
                if len(part) >= needed:
                    break
                needed -= len(part)
                count += 1
            last = parts[count]
            pieces = parts[:count]
            pieces.append(last[:needed])
            rest = parts[count + 1 :]
            rest.insert(0, last[needed:])
            self._parts = rest
            self._have = have - length
        self._pending = None
        if key is None:
            # join() of a single bytes object returns that object: no copy.
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        else:
            # Join and unmask in one go (see masking.join_masked).
            data = join_masked(pieces, key)
        opcode, fin, rsv1, rsv2, rsv3 = fields
        return Frame(opcode, data, fin, rsv1, rsv2, rsv3)

    def _finish_in_place(self) -> Frame | None:
        """Return the pending frame read in place if all of its payload has arrived."""
        assert self._pending is not None
        into, view = self._into, self._into_view
        assert into is not None and view is not None
        if self._into_have < len(into):
            return None
        fields, _, key, _ = self._pending
        if key is not None:
            # Unmask where it lies (a bytearray, or the bytes object through its view).
            if type(into) is bytearray:
                mask_in_place(into, key)
            else:
                mask_in_place(view, key)
        view.release()
        data = bytes(into)  # the bytes object itself with the C helper; else one copy
        self._pending = None
        self._into = self._into_view = None
        self._into_have = 0
        opcode, fin, rsv1, rsv2, rsv3 = fields
        return Frame(opcode, data, fin, rsv1, rsv2, rsv3)
