"""The receive side of a connection: fragments waiting for the application, and read pausing.

:class:`Assembler` owns what a :class:`~tether.asyncio.connection.Connection` holds of received
messages that the application has not taken: a queue of fragments (whole messages are one
fragment), how many bytes they weigh, how many complete messages are in it, the waiter of the
one coroutine receiving, and when to stop and resume reading from the socket. The connection
feeds it the protocol's :class:`~tether.sansio.events.Fragment` events and asks it for messages;
the assembler knows nothing of frames or of the socket: it says when to pause or resume reading,
and the connection does it (no callback to the connection, so no reference cycle).

Bounds: reading pauses when the bytes queued plus ``extra`` (what the protocol holds unparsed)
exceed ``max_queue`` while at least one complete message waits, and resumes below a quarter of
it, or as soon as the application would otherwise wait for data that only reading can bring. A
message still arriving never pauses reading (``max_message_size`` bounds it instead), so a
large message cannot deadlock.
"""

from __future__ import annotations

import asyncio
import collections
from typing import cast

from ..sansio.events import Fragment
from ..typing import Data

__all__ = ["Assembler"]


class Assembler:
    """Received fragments waiting for the application.

    Args:
        max_queue: bytes of queued messages above which reading pauses.
    """

    def __init__(self, max_queue: int) -> None:
        self.fragments: collections.deque[Fragment] = collections.deque()
        #: Bytes (or characters, for text) of the queued fragments.
        self.size = 0
        #: Messages in the queue whose last fragment is there.
        self.complete = 0
        self.max_queue = max_queue
        #: Whether reading is paused because of the queue.
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, fragment: Fragment) -> None:
        """Queue one fragment (call :meth:`wake` after a batch)."""
        self.fragments.append(fragment)
        self.size += len(fragment.data)
        if fragment.last:
            self.complete += 1

    def wake(self) -> None:
        """Resolve the future of the coroutine waiting for data, if any."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def should_pause(self, extra: int) -> bool:
        """Whether reading must pause now: a complete message waits and the queue (plus
        ``extra`` bytes held elsewhere) is over ``max_queue``. Never while only an incomplete
        message is queued: reading is the only way it can complete."""
        if not self.paused and self.complete > 0 and self.size + extra > self.max_queue:
            self.paused = True
            return True
        return False

    def should_resume(self, extra: int) -> bool:
        """Whether reading paused by :meth:`should_pause` must resume now: below a quarter of
        ``max_queue``, or when no complete message is left (the application would otherwise
        wait for data that only reading brings)."""
        if self.paused and (self.size + extra <= self.max_queue // 4 or self.complete == 0):
            self.paused = False
            return True
        return False

    def pop(self) -> Fragment:
        """The oldest fragment (there must be one)."""
        fragment = self.fragments.popleft()
        self.size -= len(fragment.data)
        if fragment.last:
            self.complete -= 1
        return fragment

    def pop_message(self) -> Data:
        """The oldest complete message, its fragments joined (``complete`` must be > 0)."""
        # The common case, a message in one fragment, with pop() inlined: this runs once per
        # message received.
        fragment = self.fragments.popleft()
        data = fragment.data
        self.size -= len(data)
        if fragment.last:
            self.complete -= 1
            return data
        pieces = [data]
        while True:
            fragment = self.pop()
            pieces.append(fragment.data)
            if fragment.last:
                break
        if isinstance(pieces[0], str):
            return "".join(cast(list[str], pieces))
        return b"".join(cast(list[bytes], pieces))

    def waiter(self) -> asyncio.Future[None]:
        """A future that :meth:`wake` resolves, for the one coroutine receiving to await
        (a future rather than a coroutine: one frame less per message received). Cancelling
        the wait takes nothing from the queue."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        return waiter

    def drop_incomplete(self) -> None:
        """Drop the fragments of a message that can no longer complete (the connection is
        ending): complete messages stay for the application."""
        fragments = self.fragments
        while fragments and not fragments[-1].last:
            self.size -= len(fragments.pop().data)
