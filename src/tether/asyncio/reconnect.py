"""``async for ws in connect(uri)``: reconnect with backoff after a connection is lost.

The policy (which failures to retry, how long to wait) is sans-I/O and shared with the other
I/O layers: :mod:`tether.sansio.backoff`. This module only sleeps and logs.

The semantics are those of websockets' ``connect.__aiter__``: each iteration yields an open
connection; when the loop body finishes (normally or with ``continue`` after catching
``ConnectionClosed``), the connection is closed and the next iteration connects again at
once. A failed attempt is retried after the next backoff delay when the policy says so, and
raised otherwise; a success resets the delays.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from ..sansio.backoff import Backoff, should_reconnect
from ..typing import LoggerLike

__all__ = ["ProcessException", "default_process_exception", "reconnect"]

T = TypeVar("T")

#: ``(exception) -> exception | None``: return ``None`` to retry, or the exception to raise.
ProcessException = Callable[[Exception], Exception | None]


def default_process_exception(exc: Exception) -> Exception | None:
    """tether's policy: retry what :func:`~tether.sansio.backoff.should_reconnect` allows."""
    return None if should_reconnect(exc) else exc


async def reconnect(
    attempt: Callable[[], AbstractAsyncContextManager[T]],
    *,
    backoff: Backoff,
    process_exception: ProcessException | None,
    logger: LoggerLike,
    target: str,
    rng: random.Random | None = None,
) -> AsyncIterator[T]:
    """Yield a connection per iteration, reconnecting with ``backoff`` after failures.

    ``attempt()`` returns an async context manager that opens a connection on enter and
    closes it on exit (a ``connect`` object). ``target`` names the peer in log lines.

    Raises:
        Exception: the first failure that ``process_exception`` does not turn into ``None``
            (or the exception it returns instead, chained to the failure).
    """
    policy = process_exception if process_exception is not None else default_process_exception
    delays = None
    while True:
        try:
            async with attempt() as connection:
                delays = None  # connected: the next failure starts a fresh series
                yield connection
        except Exception as exc:
            try:
                replacement = policy(exc)
            except Exception as raised:  # a hook that raises instead of returning
                replacement = raised
            if replacement is exc:
                raise
            if replacement is not None:
                raise replacement from exc
            if delays is None:
                delays = backoff.delays(rng)
            delay = next(delays)
            logger.info(
                "connecting to %s failed; reconnecting in %.2f s: %s",
                target,
                delay,
                traceback.format_exception_only(exc)[-1].strip(),
            )
            await asyncio.sleep(delay)
