"""A server-wide memory budget for what connections hold of received messages.

Per-connection limits (``Limits.max_message_size``, ``max_queue``) bound one connection; a
crowd of connections, each within its limits, can still exhaust a server (300 clients each
sending 900 KiB of a 1 MiB frame hold 270 MB). The budget bounds their sum.

The budget keeps a running total of what the connections hold. A connection charges the
change in its :attr:`~tether.asyncio.connection.Connection.bytes_held` to the total where that
changes: after each read from the socket is parsed (bytes accepted into its buffers), when
the application takes a message, and when the connection is lost. So the total is checked
the moment a read takes it past the budget (it can exceed it by at most one read, 256 KiB),
not on a timer. Past the budget, :meth:`MemoryBudget.check` sums the connections exactly
(a charge made before a close can leave the running total a little high) and:

* the connections holding the most are failed, biggest first, until the rest fit, with close
  code **1013 (Try Again Later)** rather than 1009 (Message Too Big). 1009 says that *this*
  message is over a limit the peer could learn and respect; here the message may be well
  within ``max_message_size`` and is refused only because of the server's load, a
  temporary condition that 1013 names, so that a client retries later (as the 503 tells
  newcomers) instead of giving up on a message size it has no reason to change. Failing
  (not a closing handshake) drops the held bytes at once;
* new opening handshakes are refused with ``503 Service Unavailable``, ``Retry-After`` and a
  reason in the body, while the total is over the budget and for :data:`RETRY_AFTER` seconds
  after the last time it went over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from ..sansio.codes import CloseCode
from ..sansio.protocol import State
from ..typing import LoggerLike

__all__ = ["RETRY_AFTER", "MemoryBudget"]

#: Seconds a refused client is told to wait (``Retry-After``), and how long after the last
#: time the total went over the budget handshakes are still refused.
RETRY_AFTER = 1

REASON = "server memory budget exceeded"


class MemoryBudget:
    """The running total of what ``connections()`` hold; past ``limit``, the biggest holders
    are shed. A connection calls :meth:`charge` when what it holds may have changed and
    :meth:`release` when it is lost; it keeps what it last charged in ``budget_charged``."""

    def __init__(
        self,
        limit: int,
        connections: Callable[[], Collection[Any]],
        logger: LoggerLike,
    ) -> None:
        self.limit = limit
        self._connections = connections
        self._logger = logger
        #: What the connections hold, in bytes: the sum of what they last charged (exact
        #: after each :meth:`check`).
        self.held = 0
        #: Connections failed with 1013 since the start.
        self.shed = 0
        self._refuse_until = 0.0
        self._checking = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        """The server is closing (nothing to stop: kept for the server's lifecycle)."""

    @property
    def retry_after(self) -> int:
        """The ``Retry-After`` value of a refusal, in seconds."""
        return RETRY_AFTER

    def refusing(self) -> bool:
        """Whether a new handshake must be refused (503)."""
        if self.held > self.limit:
            return True
        return self._loop is not None and self._loop.time() < self._refuse_until

    def charge(self, connection: Any) -> None:
        """Add the change in what ``connection`` holds since its last charge to the total;
        past the limit, :meth:`check` at once."""
        held = connection.bytes_held
        delta = held - connection.budget_charged
        if delta:
            connection.budget_charged = held
            self.held += delta
            if delta > 0 and self.held > self.limit and not self._checking:
                self.check()

    def release(self, connection: Any) -> None:
        """``connection`` is lost: take what it charged off the total, and stop its charges
        (the application may still take messages left in its queue)."""
        self.held -= connection.budget_charged
        connection.budget_charged = 0
        connection.budget = None

    def check(self) -> None:
        """Sum what the connections hold; past the limit, fail the biggest with 1013."""
        held = []
        total = 0
        for connection in self._connections():
            size = connection.bytes_held
            connection.budget_charged = size
            total += size
            held.append((size, connection))
        self.held = total
        if total <= self.limit:
            return
        now = 0.0 if self._loop is None else self._loop.time()
        # A warning when the total goes over after a calm second, not at every read of a flood.
        log = self._logger.warning if now >= self._refuse_until else self._logger.debug
        self._refuse_until = now + RETRY_AFTER
        log(
            "! memory budget exceeded: %d bytes held, budget %d; shedding the biggest",
            total,
            self.limit,
        )
        held.sort(key=lambda item: item[0], reverse=True)
        self._checking = True
        try:
            for size, connection in held:
                if total <= self.limit or size == 0:
                    break
                if connection.protocol.state is State.CLOSED:
                    continue
                # Failing frees what the connection holds: charge the change.
                connection.fail(CloseCode.TRY_AGAIN_LATER, REASON)
                self.charge(connection)
                self.shed += 1
                total -= size
        finally:
            self._checking = False
