"""The bookkeeping of pings waiting for their pong, shared by the I/O layers (no I/O, no clock).

A connection keeps its pings in a dict ``payload -> (waiter, time sent)``; the waiter is the
layer's future (``asyncio.Future`` or ``concurrent.futures.Future``), and the time comes from
the layer's clock. These functions choose a new ping's payload and match a pong to the pings
it answers (RFC 6455 5.5.3: a pong answers the ping with its payload and every ping before it,
which :attr:`tether.sansio.events.Pong.acked` lists).

Layer: the shared options layer, with :mod:`tether.options`, below the I/O layers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from .exceptions import ConcurrencyError

__all__ = ["answered_pings", "ping_payload"]

Waiter = TypeVar("Waiter")


def ping_payload(waiting: dict[bytes, tuple[Waiter, float]], data: str | bytes | None) -> bytes:
    """The payload of a new ping: ``data`` (a ``str`` as UTF-8), or by default 4 random bytes
    that no ping in ``waiting`` has.

    Raises:
        ConcurrencyError: a ping with the same data is waiting for its pong.
    """
    if data is None:
        payload = os.urandom(4)
        while payload in waiting:
            payload = os.urandom(4)
        return payload
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if payload in waiting:
        raise ConcurrencyError("already waiting for a pong with the same data")
    return payload


def answered_pings(
    waiting: dict[bytes, tuple[Waiter, float]], acked: Iterable[bytes], now: float
) -> list[tuple[Waiter, float]]:
    """Take the pings that a pong answered (``acked``, oldest first) out of ``waiting``:
    ``(waiter, round-trip time)`` for each, the latest last (its time is the connection's
    latency). Payloads no longer waiting are skipped."""
    answered = []
    for payload in acked:
        entry = waiting.pop(payload, None)
        if entry is not None:
            waiter, sent = entry
            answered.append((waiter, now - sent))
    return answered
