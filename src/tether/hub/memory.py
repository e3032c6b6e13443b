"""An in-process backend: the hub's semantics (offsets, epochs, bounded history, recovery)
within one process, with nothing to run beside it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

from .base import Backend, History, Message, Sink

__all__ = ["MemoryBackend"]


@dataclasses.dataclass
class _Stream:
    epoch: str
    head: int = 0
    #: (message, monotonic time it was stored); at most history_size of them.
    entries: collections.deque[tuple[Message, float]] = dataclasses.field(
        default_factory=collections.deque
    )
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class MemoryBackend(Backend):
    """Channels that live in this process (see :class:`~tether.hub.base.Backend` for the
    arguments). Publishing delivers at once, in offset order per channel; with the hub's
    ``slow="wait"`` policy, ``publish()`` waits for slow subscribers."""

    kind = "memory"

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(history_size=history_size, history_age=history_age)
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._watched: set[str] = set()
        self._sink: Sink | None = None
        self.published = 0

    async def start(self, sink: Sink) -> None:
        self._sink = sink

    async def close(self) -> None:
        self._sink = None
        self._watched.clear()

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(secrets.token_urlsafe(6))
        return stream

    async def publish(self, channel: str, data: str | bytes) -> Message:
        stream = self._stream(channel)
        # One message at a time per channel, stored and delivered, so that offsets are
        # delivered in order even when the hub's policy makes delivery wait.
        async with stream.lock:
            stream.head += 1
            message = Message(channel, stream.head, stream.epoch, data)
            stream.entries.append((message, self._clock()))
            if len(stream.entries) > self.history_size:
                stream.entries.popleft()
            self.published += 1
            if self._sink is not None and channel in self._watched:
                await self._sink.deliver(message)
        return message

    async def history(self, channel: str, since: int, epoch: str | None, limit: int) -> History:
        stream = self._stream(channel)
        return answer(
            channel,
            stream.epoch,
            stream.head,
            [entry for entry in stream.entries if entry[0].offset > since],
            since=since,
            epoch=epoch,
            limit=limit,
            oldest=stream.entries[0][0].offset if stream.entries else stream.head + 1,
            max_age=self.history_age,
            now=self._clock(),
        )

    async def watch(self, channel: str) -> tuple[str, int]:
        self._watched.add(channel)
        stream = self._stream(channel)
        return stream.epoch, stream.head

    async def unwatch(self, channel: str) -> None:
        self._watched.discard(channel)

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "ok": True,
            "channels": len(self._streams),
            "watched": len(self._watched),
            "published": self.published,
        }


def answer(
    channel: str,
    current_epoch: str,
    head: int,
    entries: list[tuple[Message, float]],
    *,
    since: int,
    epoch: str | None,
    limit: int,
    oldest: int,
    max_age: float | None,
    now: float,
) -> History:
    """Decide whether ``entries`` (the stored messages after ``since``, oldest first, with the
    time each was stored) answer a recovery from ``(epoch, since)``; shared by the backends.

    ``oldest`` is the offset of the oldest message still stored (``head + 1`` when none is).
    """

    def refuse(reason: str) -> History:
        return History(channel, current_epoch, head, [], False, reason)

    if epoch is not None and epoch != current_epoch:
        return refuse(
            f"the channel's history was reset (epoch {epoch!r} is gone, now {current_epoch!r})"
        )
    if since > head:
        return refuse(f"offset {since} is ahead of the channel's latest message ({head})")
    if since + 1 < oldest:
        return refuse(
            f"history no longer reaches back to offset {since + 1} (oldest kept: {oldest})"
        )
    if head - since > limit:
        return refuse(f"{head - since} messages were missed, more than the limit of {limit}")
    if max_age is not None and entries and now - entries[0][1] > max_age:
        return refuse(f"the missed messages are older than history_age ({max_age:g} s)")
    return History(channel, current_epoch, head, [entry[0] for entry in entries], True)
