"""A server-wide memory budget for what connections hold of received messages.

Per-connection limits (``Limits.max_message_size``, ``max_queue``) bound one connection; a
crowd of connections, each within its limits, can still exhaust a server (300 clients each
sending 900 KiB of a 1 MiB frame hold 270 MB). The budget bounds their sum.

Nothing is measured per message: on a timer tick (every :data:`INTERVAL` seconds) the
budget sums :attr:`Connection.bytes_held` over the open connections (a few microseconds for
each connection). Past the budget:

* new opening handshakes are refused with ``503 Service Unavailable``, ``Retry-After`` and a
  reason in the body, until a tick finds the total back within the budget and
  :data:`RETRY_AFTER` seconds have passed since the last tick over it;
* the connections holding the most are failed, biggest first, until the rest fit, with close
  code **1013 (Try Again Later)** rather than 1009 (Message Too Big). 1009 says that *this*
  message is over a limit the peer could learn and respect; here the message may be well
  within ``max_message_size`` and is refused only because of the server's load, a
  temporary condition that 1013 names, so that a client retries later (as the 503 tells
  newcomers) instead of giving up on a message size it has no reason to change. Failing
  (not a closing handshake) drops the held bytes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from ..sansio.codes import CloseCode
from ..sansio.protocol import State
from ..typing import LoggerLike

__all__ = ["INTERVAL", "RETRY_AFTER", "MemoryBudget"]

#: Seconds between two sums of what the connections hold.
INTERVAL = 0.1
#: Seconds a refused client is told to wait (``Retry-After``), and how long after the last
#: tick over the budget handshakes are still refused.
RETRY_AFTER = 1

REASON = "server memory budget exceeded"


class MemoryBudget:
    """Sums what ``connections()`` hold on each tick and sheds the biggest past ``limit``."""

    def __init__(
        self,
        limit: int,
        connections: Callable[[], Collection[Any]],
        logger: LoggerLike,
    ) -> None:
        self.limit = limit
        self._connections = connections
        self._logger = logger
        #: The total held at the last tick (after shedding), in bytes.
        self.held = 0
        #: Connections failed with 1013 since the start.
        self.shed = 0
        self._refuse_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = loop.call_later(INTERVAL, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def retry_after(self) -> int:
        """The ``Retry-After`` value of a refusal, in seconds."""
        return RETRY_AFTER

    def refusing(self) -> bool:
        """Whether a new handshake must be refused (503)."""
        if self.held > self.limit:
            return True
        return self._loop is not None and self._loop.time() < self._refuse_until

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(INTERVAL, self._tick)
        self.check()

    def check(self) -> None:
        """Sum what the connections hold; past the limit, fail the biggest with 1013."""
        held = [(c.bytes_held, c) for c in self._connections()]
        total = sum(size for size, _ in held)
        if total > self.limit:
            assert self._loop is not None
            self._refuse_until = self._loop.time() + RETRY_AFTER
            self._logger.warning(
                "! memory budget exceeded: %d bytes held, budget %d; shedding the biggest",
                total,
                self.limit,
            )
            held.sort(key=lambda item: item[0], reverse=True)
            for size, connection in held:
                if total <= self.limit or size == 0:
                    break
                if connection.protocol.state is State.CLOSED:
                    continue
                connection.fail(CloseCode.TRY_AGAIN_LATER, REASON)
                self.shed += 1
                total -= size
        self.held = total
