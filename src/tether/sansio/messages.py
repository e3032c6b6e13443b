"""The message being received: its fragments, its size, and its UTF-8 checked as it arrives.

:class:`~tether.sansio.protocol.Protocol` owns one :class:`IncomingMessage` and hands it the
data frames of a *fragmented* message (RFC 6455 5.4), after checking their order and size; a
message in one frame, the common case, never comes here. Text is validated fragment by
fragment, and even inside a frame whose payload is still arriving (:meth:`check_partial`), so
that invalid UTF-8 fails the connection on the bytes that break it (8.1: "as soon as").

It raises what the protocol turns into close codes: ``UnicodeDecodeError`` (1007) and
``PayloadTooBig`` (1009).
"""

from __future__ import annotations

import codecs

from ..exceptions import PayloadTooBig
from .codes import Opcode
from .events import BinaryMessage, Fragment, TextMessage
from .frames import FrameParser

__all__ = ["IncomingMessage", "decode_fragment"]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def decode_fragment(decoder: codecs.IncrementalDecoder, data: bytes, final: bool) -> str:
    """Decode one fragment of a text message, failing on the fragment that breaks the text.

    CPython's incremental UTF-8 decoder refuses every impossible prefix at once except one: it
    keeps a trailing ED A0..ED BF (the start of a UTF-16 surrogate, which UTF-8 forbids) pending
    until the next bytes arrive. No continuation can make it valid, so refuse it now (8.1).
    """
    text = decoder.decode(data, final)
    if not final:
        pending = decoder.getstate()[0]
        if len(pending) == 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise UnicodeDecodeError("utf-8", pending, 0, 2, "invalid continuation byte")
    return text


class IncomingMessage:
    """A fragmented message in progress, and the UTF-8 probe of a text frame still arriving.

    ``opcode`` is ``TEXT`` or ``BINARY`` while a message is in progress, ``None`` between
    messages; ``size`` counts its payload bytes so far (after decompression).
    """

    __slots__ = (
        "_chunks",
        "_text",
        "compressed",
        "decoder",
        "opcode",
        "probe",
        "probe_pos",
        "size",
    )

    def __init__(self) -> None:
        self.opcode: Opcode | None = None
        self.compressed = False
        self.size = 0
        #: The decoder of a text message in progress (``None`` for binary or between messages).
        self.decoder: codecs.IncrementalDecoder | None = None
        #: Validation of a text frame still arriving: a decoder, and how far it got. The
        #: protocol drops it (sets ``None``) when the frame is complete.
        self.probe: codecs.IncrementalDecoder | None = None
        self.probe_pos = 0
        self._chunks: list[bytes] = []
        self._text: list[str] = []

    def receive(
        self, opcode: Opcode, compressed: bool, data: bytes, size: int, fin: bool, assemble: bool
    ) -> TextMessage | BinaryMessage | Fragment | None:
        """Take the next fragment (the protocol checked that ``opcode`` may come now and that
        ``size``, the message's size with this fragment, is within the limit).

        Returns the event to deliver: with ``assemble``, the whole message (``TextMessage`` or
        ``BinaryMessage``) on the last fragment and ``None`` before it; without, a ``Fragment``
        for each fragment.

        Raises:
            UnicodeDecodeError: the text so far is not UTF-8.
        """
        first = opcode is not Opcode.CONT
        if first:
            self.opcode = opcode
            self.compressed = compressed
            if opcode is Opcode.TEXT:
                self.decoder = _utf8_decoder()
        self.size = size
        decoder = self.decoder
        event: TextMessage | BinaryMessage | Fragment | None = None
        if assemble:
            if decoder is not None:
                # Validate as the fragments arrive: fail on the fragment that breaks the
                # text, not at the end of the message.
                self._text.append(decode_fragment(decoder, data, fin))
                if fin:
                    event = TextMessage("".join(self._text))
            else:
                self._chunks.append(data)
                if fin:
                    event = BinaryMessage(b"".join(self._chunks))
        else:
            piece: str | bytes = (
                decode_fragment(decoder, data, fin) if decoder is not None else data
            )
            event = Fragment(piece, first, fin)
        if fin:
            self.reset()
        return event

    def reset(self) -> None:
        """Forget the message in progress (it ended, or it never will)."""
        self.opcode = None
        self.size = 0
        self._chunks = []
        self._text = []
        self.decoder = None

    def check_partial(self, parser: FrameParser, max_size: int | None) -> None:
        """Check the part of a data frame that has arrived, before the frame is complete.

        A frame that will not fit the message limit is refused now, as the whole frame would
        be; the UTF-8 of a text payload is validated so far, so that the connection fails on
        the bytes that break the text, not when the frame is complete (RFC 6455 8.1 asks to
        fail "as soon as" invalid UTF-8 is seen; Autobahn 6.4.3-6.4.4).

        Raises:
            PayloadTooBig: the frame makes the message larger than ``max_size``.
            UnicodeDecodeError: the text so far is not UTF-8.
        """
        pending = parser.pending_frame()
        if pending is None:
            return
        opcode, rsv1, have, length = pending
        if rsv1 or (have <= self.probe_pos and self.probe is not None):
            return  # compressed (validated once inflated), or nothing new
        if (
            opcode <= 2
            and (opcode is Opcode.CONT) == (self.opcode is not None)  # else 1002 comes first
            and max_size is not None
            and self.size + length > max_size
        ):
            raise PayloadTooBig(f"message over {max_size} bytes")
        if self.probe is None:
            if opcode is Opcode.TEXT and self.opcode is None:
                probe = _utf8_decoder()
            elif opcode is Opcode.CONT and self.decoder is not None and not self.compressed:
                probe = _utf8_decoder()
                probe.setstate(self.decoder.getstate())
            else:
                return
            self.probe = probe
            self.probe_pos = 0
        data = parser.partial_payload(self.probe_pos)
        self.probe_pos = have
        decode_fragment(self.probe, data, False)
