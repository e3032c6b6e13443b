"""The receive side of a threading connection: fragments waiting for ``recv()``.

The sans-I/O protocol hands over each frame's data as a :class:`~tether.sansio.events.Fragment`
(``assemble=False``); the :class:`Assembler` queues them, counts the bytes, and joins the
fragments of a message when the application asks for the whole message.

It has no lock of its own: the connection calls it with its mutex held, so that the queue, the
protocol and the decision to read the socket or not change together.

Memory: the queue holds what was received and not read yet. The connection stops reading the
socket while :meth:`Assembler.over_limit` says so, which is the rule of the asyncio layer: more
than ``limits.max_queue`` bytes wait, and at least one whole message is among them (a message
still being received is bounded by ``limits.max_message_size`` instead, and waiting for its end
with reading stopped would wait forever).
"""

from __future__ import annotations

import collections
from typing import cast

from ..sansio.events import Fragment
from ..typing import Data

__all__ = ["Assembler"]


class Assembler:
    """Fragments received and not read yet, oldest first."""

    __slots__ = ("complete", "max_queue", "queue", "queued_bytes")

    def __init__(self, max_queue: int) -> None:
        self.queue: collections.deque[Fragment] = collections.deque()
        #: Bytes (for text: characters) of the fragments in the queue.
        self.queued_bytes = 0
        #: Messages in the queue whose last fragment is there.
        self.complete = 0
        self.max_queue = max_queue

    def put(self, fragment: Fragment) -> None:
        self.queue.append(fragment)
        self.queued_bytes += len(fragment.data)
        if fragment.last:
            self.complete += 1

    def pop_message(self) -> Data | None:
        """The oldest whole message, or ``None`` when no message is complete yet."""
        if not self.complete:
            return None
        queue = self.queue
        fragment = queue.popleft()
        data = fragment.data
        if fragment.last:
            # The common case: a message in one frame.
            self.queued_bytes -= len(data)
            self.complete -= 1
            return data
        pieces = [data]
        size = len(data)
        while True:
            fragment = queue.popleft()
            pieces.append(fragment.data)
            size += len(fragment.data)
            if fragment.last:
                break
        self.queued_bytes -= size
        self.complete -= 1
        if isinstance(data, str):
            return "".join(cast(list[str], pieces))
        return b"".join(cast(list[bytes], pieces))

    def pop_fragment(self) -> Fragment | None:
        """The oldest fragment, whole message or not (for ``recv_streaming()``)."""
        if not self.queue:
            return None
        fragment = self.queue.popleft()
        self.queued_bytes -= len(fragment.data)
        if fragment.last:
            self.complete -= 1
        return fragment

    def over_limit(self, unparsed: int, parsing_paused: bool) -> bool:
        """Whether to stop reading the socket: more than ``max_queue`` bytes wait (``unparsed``
        received bytes included), and a whole message is among them or parsing is held back
        behind one."""
        return (self.complete > 0 or parsing_paused) and (
            self.queued_bytes + unparsed > self.max_queue
        )

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self.complete = 0
