"""The fragments a connection received and the application has not taken yet, shared by the
I/O layers (no I/O, no lock: each layer calls it from its one reader or under its mutex).

The sans-I/O protocol hands over each frame's data as a :class:`~tether.sansio.events.Fragment`
(``assemble=False``). The queue counts their bytes and whole messages, joins the fragments of a
message for ``recv()``, and says when it holds too much to go on reading the socket: more than
``limits.max_queue`` bytes wait and at least one whole message is among them (a message still
arriving is bounded by ``limits.max_message_size`` instead, and only reading can complete it).

Layer: the shared options layer, with :mod:`tether.options`, below the I/O layers.
"""

from __future__ import annotations

import codecs
import collections
from typing import cast

from .sansio.events import Fragment
from .typing import Data

__all__ = ["FragmentQueue", "StreamDecoder", "convert"]

#: The queue of a connection that has received nothing yet: empty and never appended to (a
#: deque costs ~760 bytes even when empty, and idle connections are many).
_NOTHING_YET: collections.deque[Fragment] = collections.deque(maxlen=0)


class FragmentQueue:
    """Fragments received and not taken yet, oldest first."""

    __slots__ = ("complete", "fragments", "max_queue", "size")

    def __init__(self, max_queue: int) -> None:
        self.fragments: collections.deque[Fragment] = _NOTHING_YET  # made by the first put()
        #: Bytes (for text: characters) of the queued fragments.
        self.size = 0
        #: Messages in the queue whose last fragment is there.
        self.complete = 0
        self.max_queue = max_queue

    def put(self, fragment: Fragment) -> None:
        fragments = self.fragments
        if fragments is _NOTHING_YET:
            fragments = self.fragments = collections.deque()
        fragments.append(fragment)
        self.size += len(fragment.data)
        if fragment.last:
            self.complete += 1

    def pop(self) -> Fragment:
        """The oldest fragment, whole message or not (there must be one)."""
        fragment = self.fragments.popleft()
        self.size -= len(fragment.data)
        if fragment.last:
            self.complete -= 1
        return fragment

    def pop_message(self) -> Data:
        """The oldest whole message, its fragments joined (``complete`` must be > 0)."""
        fragments = self.fragments
        fragment = fragments.popleft()
        data = fragment.data
        if fragment.last:  # the common case: a message in one frame
            self.size -= len(data)
            self.complete -= 1
            return data
        pieces = [data]
        size = len(data)
        while True:
            fragment = fragments.popleft()
            pieces.append(fragment.data)
            size += len(fragment.data)
            if fragment.last:
                break
        self.size -= size
        self.complete -= 1
        if isinstance(data, str):
            return "".join(cast(list[str], pieces))
        return b"".join(cast(list[bytes], pieces))

    def over_limit(self, extra: int) -> bool:
        """Whether to stop reading: more than ``max_queue`` bytes wait (with ``extra`` bytes
        held elsewhere, such as input not parsed yet), and a whole message is among them."""
        return self.complete > 0 and self.size + extra > self.max_queue

    def drop_incomplete(self) -> None:
        """Drop the fragments of a message that can no longer complete (the connection is
        ending): complete messages stay for the application."""
        fragments = self.fragments
        while fragments and not fragments[-1].last:
            self.size -= len(fragments.pop().data)


def convert(data: Data, decode: bool) -> Data:
    """What ``recv(decode=...)`` returns for a whole message: ``decode=True`` gives ``str``
    (a binary message decoded from UTF-8, which raises ``UnicodeDecodeError`` if it is not),
    ``decode=False`` gives ``bytes`` (a text message as UTF-8). The caller skips this call for
    ``decode=None`` (the message as it came)."""
    if decode is isinstance(data, str):
        return data
    return data.decode() if isinstance(data, bytes) else data.encode()


class StreamDecoder:
    """``recv_streaming(decode=...)``: :func:`convert` fragment by fragment. A binary message
    is decoded incrementally, so that a character split across fragments is decoded whole."""

    __slots__ = ("_decoder", "decode")

    def __init__(self, decode: bool) -> None:
        self.decode = decode
        self._decoder: codecs.IncrementalDecoder | None = None

    def convert(self, data: Data, last: bool) -> Data:
        if self.decode is isinstance(data, str):
            return data
        if isinstance(data, str):
            return data.encode()
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        return self._decoder.decode(data, last)
