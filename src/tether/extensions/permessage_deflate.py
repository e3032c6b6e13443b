"""permessage-deflate (RFC 7692): negotiation and the compression engine, sans-I/O.

Three parts:

- :class:`DeflateSettings` and :data:`PRESETS` say what an endpoint wants (window sizes, context
  takeover, zlib memory level and compression level, and a size under which messages go out
  uncompressed).
- :class:`ClientPerMessageDeflateFactory` writes the client's offer and checks the server's
  answer; :class:`ServerPerMessageDeflateFactory` answers an offer or declines it. Both build a
  :class:`PerMessageDeflate` holding the agreed values.
- :class:`PerMessageDeflate` compresses outgoing data frames and inflates incoming ones.

Local and remote
================

The RFC names parameters after the *role* (``server_*``, ``client_*``); the engine names them
after the *direction*: ``local_*`` is about what this endpoint compresses, ``remote_*`` about
what the peer compresses and this endpoint inflates. On a server, ``local_max_window_bits`` is
the agreed ``server_max_window_bits``; on a client it is ``client_max_window_bits``.
:class:`DeflateSettings` keeps the RFC names, so one settings object reads the same on either
side, and :data:`PRESETS` are symmetric.

Memory
======

With context takeover in a direction, the peer's inflater may refer back to earlier messages,
as far as the window reaches, so something must survive between messages. By default
(``keep_zlib_objects=False``) that is only the data itself: the last ``2**wbits`` bytes (at
most) sent compressed, and the last ``2**wbits`` received compressed. Each message gets new zlib
objects primed with that window as a preset dictionary (``zdict``: zlib's
``deflateSetDictionary``/``inflateSetDictionary``, which raw DEFLATE streams accept at the
start), and drops them at its end. The stream is what a kept compressor would produce: its
back-references reach into earlier messages as far as the window allows, and a peer cannot tell
the difference. Priming costs a few microseconds per message with a 4 KiB window (zlib hashes
the whole dictionary) and about 30 with a 32 KiB one, which is why ``"max"`` keeps its objects.

Creating and priming zlib objects for every message costs about 10 microseconds per message
(more with zlib-ng, whose objects are larger), so the :data:`HOT_COMPRESSORS` connections
(32) that finished a compressed message most recently keep their compressor anyway; the
least recent one loses it when another joins. An idle connection with the default preset
therefore holds at most 8 KiB of window (plus about 600 bytes of Python objects), where kept
zlib objects cost 50 KiB, and the process holds at most 32 compressors more.

While a message is being compressed or inflated its zlib objects exist (about
``2**(wbits + 2) + 2**(mem_level + 9) + 6 KiB`` to compress, ``2**wbits + 7 KiB`` to inflate;
zlib-ng's hash table is 128 KiB whatever the memLevel); an event loop compresses one message at
a time, so that peak is per thread, not per connection, except for fragmented messages sent in
pieces, whose compressor lives until the last fragment.

With ``keep_zlib_objects=True`` (``"fast"``, ``"max"``) the objects stay. Allocated per
connection, in KiB, after a few messages each way, context takeover and the same window both
ways, zlib 1.2.13 (``bench/deflate_memory.py`` measures it with tracemalloc, which sees zlib's
allocations because CPython routes them through ``PyMem_RawMalloc``):

=====  =====  =====  =====  =====  =====
wbits  m=1    m=3    m=5    m=8    m=9
=====  =====  =====  =====  =====  =====
  9       17     20     32    144    272
 10       20     23     35    147    275
 11       25     28     40    152    280
 12       35     38     50    162    290
 13       55     58     70    182    310
 14       95     98    110    222    350
 15      175    178    190    302    430
=====  =====  =====  =====  =====  =====

Resident memory is lower than allocated while messages are short, because zlib only touches
the part of its window it has used. With no context takeover in a direction, nothing is kept for
it: its zlib object only exists while a message is being compressed or inflated.

Decisions worth knowing
=======================

- **8-bit windows.** zlib cannot compress a raw DEFLATE stream with an 8-bit window (zlib 1.2.9
  and later refuse ``wbits=-8``; older versions quietly used 9 bits). tether therefore never
  asks to compress with 8 bits (the factories refuse settings that would) and, when the peer
  imposes 8 bits on our side, it agrees and simply never compresses in that direction: RSV1
  is per message, so sending every message uncompressed is always allowed (RFC 7692 section
  6). We inflate with at least 9 bits: it costs 256 bytes and tolerates a peer that was
  granted 8 bits but compresses with a 9-bit window.
- **Corrupt compressed data** raises :class:`~tether.exceptions.ProtocolError`, so the
  connection closes with 1002. RFC 7692 only says to fail the connection; it names no code.
  RFC 6455 section 7.4.1 defines 1007 for data "not consistent with the type of the message"
  (its example is invalid UTF-8 in a text message). A DEFLATE stream that does not decode
  breaks the framing this extension defines, not the message type, so we treat it like any
  other framing violation. Practice is split: Node's ``ws`` sends 1007, Python's
  ``websockets`` and Cap'n Proto send 1002.
- **Size limit while inflating.** ``decode`` asks zlib for at most ``max_size + 1`` bytes, so a
  decompression bomb costs at most one limit of memory and work before
  :class:`~tether.exceptions.PayloadTooBig`.
- **A DEFLATE block with BFINAL set** (RFC 7692 section 7.2.3.4) ends the peer's stream: only
  the padding of an empty stored block may follow it in that message, and the next message is
  inflated with an empty window. A sender that ends its stream cannot keep a window without
  priming a new compressor with a dictionary; no implementation we know does that, and one
  that did would be failed with 1002 rather than misread.
- **Small messages** (first frame shorter than ``compress_threshold``, 32 bytes by default) are
  sent uncompressed; see :class:`DeflateSettings`.
- **zlib-ng.** When zlib-ng's bindings are installed (``pip install 'tether[zlib-ng]'``, module
  ``zlib_ng.zlib_ng``) they replace the standard library's zlib, unless the environment
  variable ``TETHER_NO_ZLIB_NG`` is set (to anything but ``0``) before tether is imported;
  :data:`ZLIB_BACKEND` says which is in use. Both write valid DEFLATE streams that the other
  inflates, with different bytes: at the default level 2 zlib-ng compresses 64 KiB of JSON
  about 1.3x faster and inflates it 1.8x faster, at the same ratio; its level 1 is a much
  faster and much weaker strategy than zlib's (ratio about 0.37 against 0.26).

Compress once, send to many
===========================

When the local side resets its context for every message (``local_no_context_takeover``), the
compressed form of a message depends only on its bytes and on the compressor parameters, so a
broadcast can compress it once. :attr:`PerMessageDeflate.can_share_encoding` tells whether a
connection allows that, :meth:`PerMessageDeflate.compress_message` (or the module function
:func:`compress_payload`) produces the payload, and :meth:`PerMessageDeflate.encode` passes a
first frame that already has RSV1 set through untouched, with its continuation frames. A payload
compressed with ``window_bits=W`` is valid on every such connection whose
``local_max_window_bits`` is at least ``W``; connections with equal
:attr:`PerMessageDeflate.shared_encoding_key` produce byte-identical payloads.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from types import ModuleType
from typing import Protocol

from ..exceptions import (
    DuplicateParameter,
    InvalidParameterName,
    InvalidParameterValue,
    InvalidState,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from ..sansio.codes import Opcode
from ..sansio.frames import Frame
from ..typing import ExtensionName, ExtensionParameter
from .base import RSV1, ClientExtensionFactory, Extension, ServerExtensionFactory

__all__ = [
    "DEFAULT_COMPRESS_THRESHOLD",
    "HOT_COMPRESSORS",
    "PRESETS",
    "ZLIB_BACKEND",
    "ClientPerMessageDeflateFactory",
    "DeflateSettings",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "compress_payload",
]

NAME = ExtensionName("permessage-deflate")

#: What Z_SYNC_FLUSH leaves at the end of the data: an empty stored block's LEN and NLEN.
#: 7.2.1: the sender removes it from the end of a message; 7.2.2: the receiver appends it.
_SYNC_MARKER = b"\x00\x00\xff\xff"

#: After a block with BFINAL set, a compliant sender's message ends with the first byte of an
#: empty stored block (7.2.1 step 2 appends that block, step 3 removes its last four bytes).
#: That appended block may itself be the final one (``01 00 00 ff ff``, sent as ``01``): the
#: tail we append then completes it and nothing is left over (``b""``).
_AFTER_FINAL_BLOCK = (b"", b"\x00")
_AFTER_FINAL_BLOCK_FIN = (b"", _SYNC_MARKER, b"\x00" + _SYNC_MARKER)

#: 7.1.2.1 and 7.1.2.2: "a decimal integer value without leading zeroes between 8 to 15,
#: inclusive". Matching the exact strings rejects "08", "+9", " 9" and "9.0" with no parsing.
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}

_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"
_PARAMETER_NAMES = frozenset(
    {
        _SERVER_NO_CONTEXT_TAKEOVER,
        _CLIENT_NO_CONTEXT_TAKEOVER,
        _SERVER_MAX_WINDOW_BITS,
        _CLIENT_MAX_WINDOW_BITS,
    }
)

#: Messages whose first frame is shorter than this are sent uncompressed by default.
#:
#: Measured on short JSON messages (``bench/deflate_memory.py``, last table): without context
#: takeover, messages of 32 bytes or less do not shrink at all, because a fresh DEFLATE block
#: costs about what it saves. With context takeover they shrink, but by 25 bytes at best, less
#: than the TCP/IP headers of the packet that carries them, while compressing and inflating
#: cost the same few microseconds per message as for a 1 KiB one. Node's ``ws`` uses 1024,
#: which gives up the large gains context takeover brings to typical 100-1000 byte messages.
DEFAULT_COMPRESS_THRESHOLD = 32


def _load_zlib() -> ModuleType:
    """zlib-ng's bindings when installed (``pip install tether[zlib-ng]``) and not disabled
    with ``TETHER_NO_ZLIB_NG=1``; the standard library's zlib otherwise."""
    if os.environ.get("TETHER_NO_ZLIB_NG", "") in ("", "0"):
        try:
            from zlib_ng import zlib_ng
        except ImportError:
            pass
        else:
            return zlib_ng
    return zlib


def _describe(module: ModuleType) -> str:
    if module is zlib:
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    return f"zlib-ng {module.ZLIBNG_VERSION}"


#: The zlib implementation every engine created from now on uses. Both produce valid DEFLATE
#: streams that either inflates; their compressed bytes differ.
_zlib: ModuleType = _load_zlib()

#: Which zlib compresses and inflates: ``"zlib-ng 2.3.3"`` or ``"zlib 1.2.13"``, for example.
ZLIB_BACKEND = _describe(_zlib)


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(
        self, data: bytes | bytearray | memoryview, /, max_length: int = ...
    ) -> bytes: ...


def _compressor(
    module: ModuleType, level: int, window_bits: int, mem_level: int, window: bytes
) -> _Compressor:
    """A raw DEFLATE compressor; ``window``, when not empty, is the data sent before (at most
    ``2**window_bits`` bytes), which the peer's inflater still holds."""
    if window:
        encoder: _Compressor = module.compressobj(
            level, module.DEFLATED, -window_bits, mem_level, zdict=window
        )
    else:
        encoder = module.compressobj(level, module.DEFLATED, -window_bits, mem_level)
    return encoder


def _decompressor(module: ModuleType, window_bits: int, window: bytes) -> _Decompressor:
    """A raw DEFLATE inflater primed with ``window``, the data the peer sent before."""
    decoder: _Decompressor
    if window:
        decoder = module.decompressobj(-window_bits, zdict=window)
    else:
        decoder = module.decompressobj(-window_bits)
    return decoder


#: How many connections of the process keep their compressor between messages although their
#: settings say ``keep_zlib_objects=False``: the ones that finished a compressed message most
#: recently. A busy connection then pays neither for a new compressor nor for priming it, and an
#: idle one holds only its window. Set it (to 0 to turn this off) before connections start.
HOT_COMPRESSORS = 32

# The hot connections, least recent first: id(engine) -> weak reference to the engine. Every
# step is one atomic operation on the OrderedDict, so several threads may use it at once; an
# engine that loses its compressor (even between two frames of a message) makes a new one
# primed with its window, which is always correct (see "Memory").
_hot: OrderedDict[int, weakref.ref[PerMessageDeflate]] = OrderedDict()


def _keep_hot(engine: PerMessageDeflate) -> None:
    key = id(engine)
    _hot.pop(key, None)
    _hot[key] = engine._weakref
    while len(_hot) > HOT_COMPRESSORS:
        try:
            _, ref = _hot.popitem(last=False)
        except KeyError:  # pragma: no cover - another thread emptied it meanwhile
            break
        victim = ref()
        if victim is not None:
            victim._encoder = None


def _tail(window: bytes, data: bytes | bytearray | memoryview, size: int) -> bytes:
    """The last ``size`` bytes of ``window`` followed by ``data``, as a new bytes object (a
    slice of a memoryview would keep the whole buffer alive)."""
    if len(data) >= size:
        return bytes(data[-size:])
    return (window + data)[-size:]


def _check_window_bits(name: str, value: int | None) -> None:
    if value is not None and not 8 <= value <= 15:
        raise ValueError(f"{name} must be between 8 and 15, got {value}")


def _check_zlib_options(mem_level: int, compression_level: int) -> None:
    if not 1 <= mem_level <= 9:
        raise ValueError(f"mem_level must be between 1 and 9, got {mem_level}")
    if not 0 <= compression_level <= 9:
        raise ValueError(f"compression_level must be between 0 and 9, got {compression_level}")


@dataclasses.dataclass(frozen=True, slots=True)
class DeflateSettings:
    """What an endpoint wants from permessage-deflate. The same object serves both roles.

    The four negotiated fields keep the RFC's names. On a client they shape the offer; on a
    server they shape the answer (the decision tables in the two factories say exactly how).
    ``None`` for a window means "no limit of our own".
    """

    #: Ask (client) or tell (server) the server to compress each message with an empty window.
    server_no_context_takeover: bool = False
    #: Promise (client) or require (server) that the client compresses each message with an
    #: empty window.
    client_no_context_takeover: bool = False
    #: The largest window the server compresses with: requested by a client, imposed by a server.
    server_max_window_bits: int | None = 12
    #: The largest window the client compresses with: used by a client, requested by a server.
    client_max_window_bits: int | None = 12
    #: Messages whose first frame is shorter than this many bytes are sent uncompressed.
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
    #: zlib ``memLevel`` of the compressor, 1-9: memory of the match finder (``2**(m + 9)``
    #: bytes). On short JSON messages every level from 3 to 9 gave the same ratio; 5 (16 KiB
    #: where zlib's default 8 takes 128 KiB) is the common choice among peers, and smaller
    #: hash tables may slow down large messages.
    mem_level: int = 5
    #: zlib compression level, 0-9 (1 is fastest, 9 smallest; zlib's own default is 6). 2 by
    #: default: as fast as 1 with these windows, and smaller output (see :data:`PRESETS`).
    compression_level: int = 2
    #: Between messages, keep zlib's compressor and decompressor in every connection instead
    #: of only the last window of data of each direction with context takeover (and the
    #: compressor of the :data:`HOT_COMPRESSORS` most recent connections; see "Memory" in the
    #: module docstring): about four times the memory of an idle connection, for a few
    #: microseconds per message on connections that are not among the most recent.
    keep_zlib_objects: bool = False

    def __post_init__(self) -> None:
        _check_window_bits("server_max_window_bits", self.server_max_window_bits)
        _check_window_bits("client_max_window_bits", self.client_max_window_bits)
        if self.compress_threshold < 0:
            raise ValueError(f"compress_threshold must be >= 0, got {self.compress_threshold}")
        _check_zlib_options(self.mem_level, self.compression_level)


#: Named settings. Memory is per idle connection, both directions (see "Memory" in the module
#: docstring); speed and ratio are measured on JSON-like text (bench/README.md,
#: "permessage-deflate: the default preset").
PRESETS: dict[str, DeflateSettings] = {
    # The default: 4 KiB windows, memLevel 5, level 2, and between messages only the last
    # window of data each way (at most 8 KiB). Level 2 is what makes it as fast as aiohttp's
    # level 1: zlib's levels 1-3 share one fast match finder, and with 4 KiB windows level 2
    # costs what level 1 does and compresses better (1 KiB / 64 KiB messages: ratio 0.263 /
    # 0.242 against 0.285 / 0.261). Level 6 compresses 12-16% smaller (0.232 / 0.204) for
    # 1.2-1.4x the CPU at 1 KiB and 1.8x at 64 KiB.
    "balanced": DeflateSettings(),
    # Nothing held between messages: zlib objects exist only while a message is being
    # compressed or inflated. Costs compression ratio on streams of similar small messages
    # (0.354 instead of 0.232 at level 6 on 1 KiB JSON).
    "small": DeflateSettings(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=10,
        mem_level=4,
        compression_level=6,
    ),
    # Trades memory and ratio for speed: level 1, and zlib's objects kept in every connection
    # (about 50 KiB per connection with zlib, 200 KiB with zlib-ng, whose hash table has a
    # fixed size). With the standard zlib it is barely faster than "balanced" (levels 1 and 2
    # cost the same with 4 KiB windows); with zlib-ng, level 1 is its quick strategy, about
    # 1.6x faster than its level 2 on 64 KiB messages, with a ratio about 0.37.
    "fast": DeflateSettings(compression_level=1, keep_zlib_objects=True),
    # zlib's largest window, memLevel 8, level 9, every message, zlib objects kept: best
    # ratio, about 300 KiB per connection.
    "max": DeflateSettings(
        server_max_window_bits=None,
        client_max_window_bits=None,
        mem_level=8,
        compression_level=9,
        compress_threshold=0,
        keep_zlib_objects=True,
    ),
}


def _resolve(settings: DeflateSettings | str) -> DeflateSettings:
    if isinstance(settings, DeflateSettings):
        return settings
    try:
        return PRESETS[settings]
    except KeyError:
        raise ValueError(
            f"unknown permessage-deflate preset {settings!r}; known: {', '.join(PRESETS)}"
        ) from None


def compress_payload(
    data: bytes | bytearray | memoryview,
    *,
    window_bits: int = 15,
    mem_level: int = 5,
    compression_level: int = 2,
) -> bytes:
    """Compress one whole message with an empty window, as a frame payload with RSV1 set.

    This is what a connection without local context takeover sends for that message, so the
    result can be sent on any such connection whose ``local_max_window_bits`` is at least
    ``window_bits`` (window_bits must be 9-15).
    """
    encoder = _compressor(_zlib, compression_level, window_bits, mem_level, b"")
    # 7.2.1: compress, flush to a byte boundary, remove the trailing 00 00 ff ff.
    return (encoder.compress(data) + encoder.flush(_zlib.Z_SYNC_FLUSH))[:-4]


class PerMessageDeflate(Extension):
    """permessage-deflate agreed for one connection: compresses and inflates data frames.

    Build it through a factory; the constructor takes the agreed values. The connection passes
    every outgoing data frame to :meth:`encode` and every incoming one to :meth:`decode`, in
    order. After ``decode`` raises, the connection is failed and this object is not used again.
    """

    name = NAME
    rsv_mask = RSV1

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        *,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        mem_level: int = 5,
        compression_level: int = 2,
        keep_zlib_objects: bool = False,
        params: Sequence[ExtensionParameter] = (),
    ) -> None:
        _check_window_bits("remote_max_window_bits", remote_max_window_bits)
        _check_window_bits("local_max_window_bits", local_max_window_bits)
        _check_zlib_options(mem_level, compression_level)
        #: The peer compresses each message with an empty window; we drop our inflater
        #: between messages.
        self.remote_no_context_takeover = remote_no_context_takeover
        #: We compress each message with an empty window.
        self.local_no_context_takeover = local_no_context_takeover
        #: The largest window the peer compresses with.
        self.remote_max_window_bits = remote_max_window_bits
        #: The largest window we may compress with (8 means we never compress).
        self.local_max_window_bits = local_max_window_bits
        #: Messages whose first frame is shorter than this are sent uncompressed.
        self.compress_threshold = compress_threshold
        #: zlib ``memLevel`` and level of our compressor.
        self.mem_level = mem_level
        self.compression_level = compression_level
        #: Keep zlib's compressor and decompressor between messages (see "Memory").
        self.keep_zlib_objects = keep_zlib_objects
        self._params = list(params)
        self._zlib = _zlib

        # zlib refuses a raw 8-bit window for compressing (see "8-bit windows" above).
        self._can_compress = local_max_window_bits >= 9
        # Inflating with a window at least as large as the peer's is always correct; 9 rather
        # than 8 also accepts a peer that was granted 8 bits but compresses with 9.
        self._inflate_bits = max(remote_max_window_bits, 9)

        self._encoder: _Compressor | None = None
        self._decoder: _Decompressor | None = None
        # Without keep_zlib_objects, what takes their place between messages: the last bytes
        # sent compressed and received compressed, up to one window each. They are only kept
        # in a direction with context takeover (None otherwise).
        self._window_size = 2**local_max_window_bits
        self._sent: bytes | None = None if keep_zlib_objects or local_no_context_takeover else b""
        self._received: bytes | None = (
            None if keep_zlib_objects or remote_no_context_takeover else b""
        )
        self._weakref = weakref.ref(self)
        # Whether the message being sent / received is compressed (RSV1 on its first frame).
        self._encoding = False
        self._decoding = False

    @property
    def params(self) -> list[ExtensionParameter]:
        return list(self._params)

    # --- receiving ----------------------------------------------------------------------------

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Inflate a received data frame if its message is compressed.

        ``max_size`` is what remains of the message size limit for this message; the inflated
        payload of this frame may not exceed it (``None``: no limit).

        Raises:
            PayloadTooBig: the inflated data would be larger than ``max_size``.
            ProtocolError: RSV1 is set on a continuation frame, or the compressed data is
                not valid DEFLATE data (close code 1002, see the module docstring).
        """
        if frame.opcode is Opcode.CONT:
            # 6: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control frames
            # and non-first fragments of a data message. An endpoint receiving such a frame
            # MUST _Fail the WebSocket Connection_." (The connection checks control frames.)
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
            if not self._decoding:
                return frame
        elif frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            # RSV1 on the first frame marks the whole message as compressed (6).
            self._decoding = frame.rsv1
            if not frame.rsv1:
                return frame
        else:
            return frame

        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _decompressor(
                self._zlib, self._inflate_bits, self._received or b""
            )

        # 7.2.2: append 00 00 ff ff to the end of the message before inflating it.
        data = frame.data + _SYNC_MARKER if frame.fin else frame.data
        # Ask zlib for one byte more than allowed: getting it proves the limit is exceeded,
        # and zlib stops there, so a bomb costs at most one limit of memory and work. Output
        # within the limit means zlib consumed all the input, or reached the end of a final
        # block and kept the rest in unused_data: nothing is left half done.
        max_length = 0 if max_size is None else max_size + 1
        try:
            data = decoder.decompress(data, max_length)
        except self._zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}") from exc
        if max_size is not None and len(data) > max_size:
            raise PayloadTooBig(
                f"message is larger than the size limit after decompression "
                f"(more than {max_size} bytes in this frame)"
            )
        if decoder.eof:
            allowed = _AFTER_FINAL_BLOCK_FIN if frame.fin else _AFTER_FINAL_BLOCK
            if decoder.unused_data not in allowed:
                raise ProtocolError("data after the final DEFLATE block of a message")

        received = self._received
        if received is not None:
            received = self._received = _tail(received, data, 2**self._inflate_bits)
        if frame.fin:
            self._decoding = False
            # 7.1.1.1 / 7.1.1.2: with no context takeover the peer starts every message with
            # an empty window, so the inflater need not outlive the message. Without
            # keep_zlib_objects, the next message gets a new one primed with the window. A
            # stream ended by a final block cannot be continued by zlib at all, and the next
            # message starts with an empty window.
            if decoder.eof:
                self._decoder = None
                if received is not None:
                    self._received = b""
            elif not self.keep_zlib_objects or self.remote_no_context_takeover:
                self._decoder = None
        return Frame(frame.opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    # --- sending ------------------------------------------------------------------------------

    def encode(self, frame: Frame) -> Frame:
        """Compress a data frame about to be sent, if its message is to be compressed.

        A message is compressed when its first frame is at least ``compress_threshold`` bytes
        long and the agreed window allows compressing. A first frame that already has RSV1
        set carries a payload from :meth:`compress_message`; it passes through untouched, with
        its continuation frames.

        Raises:
            InvalidState: a pre-compressed frame on a connection whose compressor keeps its
                context between messages (see :attr:`can_share_encoding`).
        """
        if frame.opcode is Opcode.CONT:
            if not self._encoding:
                return frame
        elif frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            if frame.rsv1:
                if not self.can_share_encoding:
                    raise InvalidState(
                        "cannot send a pre-compressed message: this connection "
                        "compresses with context takeover or cannot compress"
                    )
                self._encoding = False
                return frame
            self._encoding = self._can_compress and len(frame.data) >= self.compress_threshold
            if not self._encoding:
                return frame
        else:
            return frame

        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = _compressor(
                self._zlib,
                self.compression_level,
                self.local_max_window_bits,
                self.mem_level,
                self._sent or b"",
            )
        # Every frame is flushed to a byte boundary so that the peer can inflate it on arrival.
        # compress() then flush(Z_SYNC_FLUSH) always ends with an empty stored block, even
        # for empty data.
        data = encoder.compress(frame.data) + encoder.flush(self._zlib.Z_SYNC_FLUSH)
        if self._sent is not None:
            self._sent = _tail(self._sent, frame.data, self._window_size)
        if frame.fin:
            # 7.2.1: remove the 00 00 ff ff at the end of the message.
            data = data[:-4]
            self._encoding = False
            if self._sent is not None:
                _keep_hot(self)
            elif self.local_no_context_takeover:
                self._encoder = None
        # 6: RSV1 goes on the first frame of a compressed message only.
        return Frame(
            frame.opcode, data, frame.fin, frame.opcode is not Opcode.CONT, frame.rsv2, frame.rsv3
        )

    # --- compress once, send to many ----------------------------------------------------------

    @property
    def can_compress(self) -> bool:
        """Whether we can compress at all (not if the peer limited our window to 8 bits)."""
        return self._can_compress

    @property
    def can_share_encoding(self) -> bool:
        """Whether a payload from :meth:`compress_message` may be sent on this connection.

        True when we reset our context for every message: then a message's compressed form
        does not depend on the messages before it.
        """
        return self.local_no_context_takeover and self._can_compress

    @property
    def shared_encoding_key(self) -> tuple[int, int, int]:
        """Connections with equal keys produce identical payloads in :meth:`compress_message`."""
        return (self.local_max_window_bits, self.mem_level, self.compression_level)

    def broadcast_key(self, size: int) -> tuple[object, ...] | None:
        """Equal for connections that frame a message of ``size`` bytes identically: below
        ``compress_threshold`` it is sent uncompressed, above it is compressed with the same
        window, memory level and compression level. ``None`` with context takeover."""
        if not self.can_share_encoding:
            return None
        if size < self.compress_threshold:
            return (NAME, "uncompressed")
        return (NAME, *self.shared_encoding_key)

    def encode_for_broadcast(self, frame: Frame) -> Frame:
        """The frame of a whole message, compressed apart from this connection's state."""
        if len(frame.data) < self.compress_threshold:
            return frame
        return Frame(frame.opcode, self.compress_message(frame.data), frame.fin, True)

    def compress_message(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress a whole message for this connection without touching its state.

        Send the result as the payload of a TEXT or BINARY frame with RSV1 set (it may be
        split into continuation frames without RSV1). Only meaningful when
        :attr:`can_share_encoding` is true; the size threshold does not apply.

        Raises:
            InvalidState: :attr:`can_share_encoding` is false.
        """
        if not self.can_share_encoding:
            raise InvalidState(
                "cannot compress a message apart from the connection: "
                "it compresses with context takeover or cannot compress"
            )
        return compress_payload(
            data,
            window_bits=self.local_max_window_bits,
            mem_level=self.mem_level,
            compression_level=self.compression_level,
        )


# --- negotiation ------------------------------------------------------------------------------


def _parse_params(params: Sequence[ExtensionParameter]) -> dict[str, str | None]:
    """Check names, duplicates and value syntax of offer or answer parameters.

    Parameter names are matched case-insensitively, as HTTP does for parameters (RFC 9110
    section 5.6.6); values arrive unquoted from the header parser, so ``"10"`` reads as 10
    (RFC 7692 section 7: a quoted value must satisfy the same grammar after unquoting).

    Raises:
        InvalidParameterName, DuplicateParameter, InvalidParameterValue.
    """
    seen: dict[str, str | None] = {}
    for raw_name, value in params:
        name = raw_name.lower()
        if name not in _PARAMETER_NAMES:
            raise InvalidParameterName(raw_name)
        if name in seen:
            raise DuplicateParameter(raw_name)
        if name.endswith("_no_context_takeover"):
            # 7.1.1.1, 7.1.1.2: these parameters have no value.
            if value is not None:
                raise InvalidParameterValue(raw_name, value)
        elif value is not None and value not in _WINDOW_BITS:
            raise InvalidParameterValue(raw_name, value)
        seen[name] = value
    return seen


def _check_accepted(accepted: Sequence[Extension]) -> None:
    for extension in accepted:
        if extension.name == NAME:
            raise NegotiationError("permessage-deflate is already agreed")
        if extension.rsv_mask & RSV1:
            raise NegotiationError(f"RSV1 is already used by {extension.name}")


class ClientPerMessageDeflateFactory(ClientExtensionFactory):
    """Offers permessage-deflate and checks the server's answer.

    The offer always carries ``client_max_window_bits`` (with our limit as its value, or
    without a value): we can honour any limit the server sets, so we let it set one.

    Raises:
        ValueError: ``settings`` asks to compress with an 8-bit window, or names no preset.
    """

    name = NAME

    def __init__(self, settings: DeflateSettings | str = "balanced") -> None:
        self.settings = _resolve(settings)
        if self.settings.client_max_window_bits == 8:
            raise ValueError("client_max_window_bits=8: zlib cannot compress with an 8-bit window")

    def get_request_params(self) -> list[ExtensionParameter]:
        settings = self.settings
        params: list[ExtensionParameter] = []
        if settings.server_no_context_takeover:
            params.append((_SERVER_NO_CONTEXT_TAKEOVER, None))
        if settings.client_no_context_takeover:
            params.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))
        if settings.server_max_window_bits is not None:
            params.append((_SERVER_MAX_WINDOW_BITS, str(settings.server_max_window_bits)))
        bits = settings.client_max_window_bits
        params.append((_CLIENT_MAX_WINDOW_BITS, None if bits is None else str(bits)))
        return params

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> PerMessageDeflate:
        """Check the answer against our offer (RFC 7692 section 7.1) and build the extension.

        Raises:
            NegotiationError: the answer has unknown, duplicated or invalid parameters, or
                does not honour the offer.
        """
        _check_accepted(accepted)
        answer = _parse_params(params)
        settings = self.settings

        # server_no_context_takeover
        #
        # Config   Answer   Result
        # False    no       the server keeps its context
        # False    yes      it resets: a server may add this (7.1.1.1)
        # True     no       fail: 7.1.1.1, a server that accepts the request includes it
        # True     yes      it resets
        remote_no_context_takeover = _SERVER_NO_CONTEXT_TAKEOVER in answer
        if settings.server_no_context_takeover and not remote_no_context_takeover:
            raise NegotiationError("server ignored server_no_context_takeover")

        # client_no_context_takeover
        #
        # Config   Answer   Result
        # False    no       we keep our context
        # any      yes      we reset: a server may add this (7.1.1.2)
        # True     no       we reset anyway, as our offer said we might
        local_no_context_takeover = (
            settings.client_no_context_takeover or _CLIENT_NO_CONTEXT_TAKEOVER in answer
        )

        # server_max_window_bits
        #
        # Config   Answer   Result
        # None     none     the server uses up to 15 bits
        # None     M        M: a server may add this (7.1.2.1)
        # N        none     fail: 7.1.2.1, a server that accepts the request includes it
        # N        M <= N   M
        # N        M > N    fail: the answer may only lower the requested value
        # any      no value fail: the parameter needs a value in an answer
        requested = settings.server_max_window_bits
        if _SERVER_MAX_WINDOW_BITS in answer:
            value = answer[_SERVER_MAX_WINDOW_BITS]
            if value is None:
                raise InvalidParameterValue(_SERVER_MAX_WINDOW_BITS, value)
            remote_max_window_bits = _WINDOW_BITS[value]
            if requested is not None and remote_max_window_bits > requested:
                raise NegotiationError(
                    f"server_max_window_bits={value} is above the {requested} requested"
                )
        elif requested is not None:
            raise NegotiationError("server ignored server_max_window_bits")
        else:
            remote_max_window_bits = 15

        # client_max_window_bits (always in our offer, see the class docstring)
        #
        # Config   Answer   Result
        # None     none     we compress with up to 15 bits
        # N        none     N, the limit we announced
        # None     M        M
        # N        M        min(N, M): a larger M ignores our hint, which 7.1.2.2 allows
        # any      8        agreed, but we never compress (see "8-bit windows")
        # any      no value fail: the parameter needs a value in an answer (7.1.2.2)
        limit = settings.client_max_window_bits or 15
        if _CLIENT_MAX_WINDOW_BITS in answer:
            value = answer[_CLIENT_MAX_WINDOW_BITS]
            if value is None:
                raise InvalidParameterValue(_CLIENT_MAX_WINDOW_BITS, value)
            local_max_window_bits = min(limit, _WINDOW_BITS[value])
        else:
            local_max_window_bits = limit

        return PerMessageDeflate(
            remote_no_context_takeover,
            local_no_context_takeover,
            remote_max_window_bits,
            local_max_window_bits,
            compress_threshold=settings.compress_threshold,
            mem_level=settings.mem_level,
            compression_level=settings.compression_level,
            keep_zlib_objects=settings.keep_zlib_objects,
            params=params,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


class ServerPerMessageDeflateFactory(ServerExtensionFactory):
    """Answers the client's permessage-deflate offers, or declines them.

    Raises:
        ValueError: ``settings`` asks to compress with an 8-bit window, or names no preset.
    """

    name = NAME

    def __init__(self, settings: DeflateSettings | str = "balanced") -> None:
        self.settings = _resolve(settings)
        if self.settings.server_max_window_bits == 8:
            raise ValueError("server_max_window_bits=8: zlib cannot compress with an 8-bit window")

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        """Answer one offer (RFC 7692 section 7.1).

        Raises:
            NegotiationError: to decline the offer: unknown, duplicated or invalid
                parameters, or permessage-deflate (or another user of RSV1) already agreed.
        """
        _check_accepted(accepted)
        offer = _parse_params(params)
        settings = self.settings
        answer: list[ExtensionParameter] = []

        # server_no_context_takeover
        #
        # Config   Offer    Answer   Result
        # False    no       -        we keep our context
        # False    yes      sNCT     we reset: 7.1.1.1, accepting the request means saying so
        # True     any      sNCT     we reset: a server may add it (7.1.1.1)
        local_no_context_takeover = (
            settings.server_no_context_takeover or _SERVER_NO_CONTEXT_TAKEOVER in offer
        )
        if local_no_context_takeover:
            answer.append((_SERVER_NO_CONTEXT_TAKEOVER, None))

        # client_no_context_takeover
        #
        # Config   Offer    Answer   Result
        # False    no       -        the client keeps its context
        # False    yes      cNCT     echo the hint (7.1.1.2): it binds the client to what it
        #                            said, and we can drop our inflater between messages
        # True     any      cNCT     the client resets: a server may add it (7.1.1.2)
        remote_no_context_takeover = (
            settings.client_no_context_takeover or _CLIENT_NO_CONTEXT_TAKEOVER in offer
        )
        if remote_no_context_takeover:
            answer.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))

        # server_max_window_bits
        #
        # Config   Offer      Answer      Result
        # None     none       -           we compress with up to 15 bits
        # None     M          M           M (M = 8: agreed, we never compress)
        # N        none       N           N: a server may add it (7.1.2.1); omitted if 15
        # N        M          min(N, M)   min(N, M): 7.1.2.1, the same or a smaller value
        # any      no value   decline     the parameter needs a value in an offer
        if _SERVER_MAX_WINDOW_BITS in offer:
            value = offer[_SERVER_MAX_WINDOW_BITS]
            if value is None:
                raise InvalidParameterValue(_SERVER_MAX_WINDOW_BITS, value)
            local_max_window_bits = min(settings.server_max_window_bits or 15, _WINDOW_BITS[value])
            answer.append((_SERVER_MAX_WINDOW_BITS, str(local_max_window_bits)))
        else:
            local_max_window_bits = settings.server_max_window_bits or 15
            if local_max_window_bits < 15:
                answer.append((_SERVER_MAX_WINDOW_BITS, str(local_max_window_bits)))

        # client_max_window_bits
        #
        # Config   Offer      Answer      Result
        # any      none       -           the client uses up to 15 bits; 7.1.2.2 forbids
        #                                 answering with this parameter if not offered
        # None     no value   -           15
        # N        no value   N           N
        # None     M          M           M: binds the client to its own hint
        # N        M          min(N, M)   min(N, M): 7.1.2.2, equal to or smaller than M
        if _CLIENT_MAX_WINDOW_BITS in offer:
            value = offer[_CLIENT_MAX_WINDOW_BITS]
            limits = [settings.client_max_window_bits or 15]
            if value is not None:
                limits.append(_WINDOW_BITS[value])
            remote_max_window_bits = min(limits)
            if settings.client_max_window_bits is not None or value is not None:
                answer.append((_CLIENT_MAX_WINDOW_BITS, str(remote_max_window_bits)))
        else:
            remote_max_window_bits = 15

        extension = PerMessageDeflate(
            remote_no_context_takeover,
            local_no_context_takeover,
            remote_max_window_bits,
            local_max_window_bits,
            compress_threshold=settings.compress_threshold,
            mem_level=settings.mem_level,
            compression_level=settings.compression_level,
            keep_zlib_objects=settings.keep_zlib_objects,
            params=answer,
        )
        return answer, extension

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
