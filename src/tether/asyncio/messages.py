"""The receive side of a connection: fragments waiting for the application, and read pausing.

:class:`Assembler` is the shared :class:`~tether.fragment_queue.FragmentQueue` (what a
:class:`~tether.asyncio.connection.Connection` holds of received messages that the application
has not taken: fragments, how many bytes they weigh, how many complete messages are among them)
plus the waiter of the one coroutine receiving, and when to stop and resume reading from the
socket. The connection feeds it the protocol's :class:`~tether.sansio.events.Fragment` events
and asks it for messages; the assembler knows nothing of frames or of the socket: it says when
to pause or resume reading, and the connection does it (no callback to the connection, so no
reference cycle).

Bounds: reading pauses when the bytes queued plus ``extra`` (what the protocol holds unparsed)
exceed ``max_queue`` while at least one complete message waits, and resumes below a quarter of
it, or as soon as the application would otherwise wait for data that only reading can bring. A
message still arriving never pauses reading (``max_message_size`` bounds it instead), so a
large message cannot deadlock.
"""

from __future__ import annotations

import asyncio

from ..fragment_queue import FragmentQueue

__all__ = ["Assembler"]


class Assembler(FragmentQueue):
    """Received fragments waiting for the application (:meth:`put`, :meth:`pop_message`...
    are :class:`~tether.fragment_queue.FragmentQueue`'s), with the receiver's waiter and
    read pausing.

    Args:
        max_queue: bytes of queued messages above which reading pauses.
    """

    __slots__ = ("_waiter", "paused")

    def __init__(self, max_queue: int) -> None:
        super().__init__(max_queue)
        #: Whether reading is paused because of the queue.
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Resolve the future of the coroutine waiting for data, if any (call it after a
        batch of :meth:`put`)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def should_pause(self, extra: int) -> bool:
        """Whether reading must pause now: :meth:`over_limit` (a complete message waits and
        the queue, plus ``extra`` bytes held elsewhere, is over ``max_queue``) and not paused
        yet. Never while only an incomplete message is queued: reading is the only way it can
        complete."""
        # over_limit() inlined: this runs after every input.
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

    def waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of ``loop`` that :meth:`wake` resolves, for the one coroutine receiving to
        await (a future rather than a coroutine: one frame less per message received).
        Cancelling the wait takes nothing from the queue."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        return waiter
