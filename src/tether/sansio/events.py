"""Events a sans-I/O protocol hands to its owner (``Protocol.events_received()``).

Besides these, the opening handshake produces the HTTP objects themselves: a server receives a
:class:`~tether.sansio.http11.Request`, a client a :class:`~tether.sansio.http11.Response`.
"""

from __future__ import annotations

import dataclasses

from .frames import Close

__all__ = [
    "BinaryMessage",
    "CloseReceived",
    "Fragment",
    "Ping",
    "Pong",
    "TextMessage",
]


@dataclasses.dataclass(frozen=True, slots=True)
class TextMessage:
    """A whole text message, decoded and validated."""

    data: str


@dataclasses.dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A whole binary message."""

    data: bytes


@dataclasses.dataclass(slots=True)
class Fragment:
    """A piece of a message, when the protocol streams fragments instead of whole messages.

    ``data`` is ``str`` for text (already validated: a piece may be empty when a character is
    split across frames) and ``bytes`` for binary. ``first`` and ``last`` bound the message.
    """

    data: str | bytes
    first: bool
    last: bool

    @property
    def text(self) -> bool:
        return isinstance(self.data, str)


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a ping; the protocol has already queued the pong."""

    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong. ``acked`` are the payloads of our pings it answers, oldest first:
    a pong answers the ping with the same payload and every ping sent before it (5.5.3 allows a
    peer to answer only the latest ping). ``acked`` is empty for an unsolicited pong."""

    data: bytes
    acked: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a close frame. The protocol has already answered it when that was due."""

    close: Close
