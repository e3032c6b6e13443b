"""What every hub backend shares: messages with offsets, history answers, signals, and the
contract a backend fulfils (:class:`Backend`).

Offsets and epochs (the model Centrifugo uses for recovery):

- each channel numbers its messages 1, 2, 3... in the order the backend stored them; that
  number is the message's **offset**, and every subscriber of the channel receives messages in
  increasing offset order;
- a channel's history has an **epoch**, a random string fixed when the backend created the
  channel's history. If the history is lost (Redis restarted without persistence) the next
  publish starts a new epoch, and offsets start again at 1. An offset means something only
  together with its epoch.

A client that knows ``(epoch, offset)`` of the last message it saw can ask for what it missed:
the backend answers with every later message, or says that it cannot (:class:`History` with
``complete=False`` and a reason). It never answers with part of what was missed.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from ..exceptions import InvalidChannel

__all__ = [
    "CHANNEL_PATTERN",
    "Backend",
    "History",
    "Message",
    "Signal",
    "Sink",
    "check_channel",
]

#: Channel names: 1 to 128 characters among letters, digits and ``_ . : -``.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def check_channel(channel: object) -> str:
    """Return ``channel`` if it is a valid channel name, else raise :class:`InvalidChannel`."""
    if not isinstance(channel, str) or CHANNEL_PATTERN.fullmatch(channel) is None:
        raise InvalidChannel(
            f"invalid channel name {channel!r}: use 1 to 128 characters among letters, "
            "digits, '_', '.', ':' and '-'"
        )
    return channel


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A message published on a channel, as stored by the backend."""

    channel: str
    #: Position in the channel: 1 for its first message, then one more for each.
    offset: int
    #: The epoch of the channel's history that ``offset`` belongs to.
    epoch: str
    #: ``str`` for text, ``bytes`` for binary.
    data: str | bytes


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """A backend's answer to "what came after ``since`` on this channel?".

    ``complete`` is true when ``messages`` are *every* message after ``since`` up to ``head``
    (possibly none). Otherwise ``messages`` is empty and ``reason`` says why the history cannot
    answer: it was trimmed past ``since``, its epoch changed, or too much was missed.
    """

    channel: str
    epoch: str
    #: Offset of the channel's latest message (0: none yet).
    head: int
    messages: list[Message]
    complete: bool
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Signal:
    """Something subscribers must know that is not a message.

    ``kind`` is one of:

    - ``"unrecoverable"``: messages of ``channel`` were missed and cannot be replayed (the
      history was trimmed or reset, see ``reason``); delivery goes on from ``offset`` in
      ``epoch``. A client should reload its state.
    - ``"down"``: the hub lost its backend (``reason`` says why); nothing is delivered and
      publishing fails until ``"up"``.
    - ``"up"``: the backend is back; delivery resumes where it stopped, in order.
    """

    kind: str
    channel: str | None = None
    epoch: str | None = None
    offset: int | None = None
    reason: str | None = None


class Sink(Protocol):
    """What a backend reports to (the :class:`~tether.hub.Hub`)."""

    def deliver(self, message: Message) -> Awaitable[None]:
        """A message of a watched channel, in offset order per channel."""

    def deliver_many(self, messages: Sequence[Message]) -> Awaitable[None]:
        """Consecutive messages of one watched channel, in offset order, read together (as
        :meth:`deliver` for each, in fewer writes)."""

    def backend_state(self, up: bool, reason: str | None) -> None:
        """The backend became unreachable (``up=False``) or reachable again."""

    def reset(self, channel: str, epoch: str, head: int, reason: str) -> None:
        """A watched channel's history was lost; delivery continues in ``epoch`` after
        ``head``."""


class Backend(abc.ABC):
    """Stores messages per channel with bounded history and delivers the channels watched.

    Subclasses: :class:`~tether.hub.MemoryBackend` (one process) and
    :class:`~tether.hub.RedisBackend` (many processes and hosts).

    Both subclasses take these arguments.

    Args:
        history_size: messages kept per channel (older ones are trimmed).
        history_age: seconds after which a message is no longer replayed to a recovering
            client (``None``: no age limit). The message may still take memory until
            ``history_size`` newer ones push it out.
    """

    kind = "abstract"

    def __init__(self, *, history_size: int = 1000, history_age: float | None = None) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size}")
        if history_age is not None and history_age <= 0:
            raise ValueError(f"history_age must be > 0 seconds or None, got {history_age}")
        self.history_size = history_size
        self.history_age = history_age

    @abc.abstractmethod
    async def start(self, sink: Sink) -> None:
        """Start delivering to ``sink``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections."""

    @abc.abstractmethod
    async def publish(self, channel: str, data: str | bytes) -> Message:
        """Store ``data`` as the channel's next message and return it (with its offset).

        Raises:
            HubUnavailable: the message was not stored.
        """

    @abc.abstractmethod
    async def history(self, channel: str, since: int, epoch: str | None, limit: int) -> History:
        """The messages after ``since`` (at most ``limit``, else incomplete).

        Raises:
            HubUnavailable: the backend could not be asked.
        """

    @abc.abstractmethod
    async def watch(self, channel: str) -> tuple[str, int]:
        """Start delivering ``channel`` to the sink from its next message; return the
        channel's ``(epoch, head)`` at that point (``""`` if it has no history yet)."""

    @abc.abstractmethod
    async def unwatch(self, channel: str) -> None:
        """Stop delivering ``channel``."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """A JSON-able report: ``{"backend", "ok", ...}``; ``ok`` is false when it cannot
        deliver (disconnected, or its listener died)."""
