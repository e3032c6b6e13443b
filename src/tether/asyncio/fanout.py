"""Send one message to many connections: :func:`broadcast` (never waits) and
:func:`broadcast_and_wait` (waits for slow peers).

Both encode the message once per group of connections that frame it alike
(:class:`~tether.sansio.protocol.MessageEncoder`): with permessage-deflate without context
takeover on our side, compression runs once per group of negotiated parameters rather than
once per connection. A connection that cannot share (a client masks every frame; a compressor
with context takeover) encodes the message itself, through its protocol as ``send()`` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Literal

from ..sansio.codes import CloseCode
from ..sansio.protocol import MessageEncoder, State
from ..typing import BytesLike
from .connection import Connection

__all__ = ["broadcast", "broadcast_and_wait"]

#: What :func:`broadcast` does with a connection whose write buffer is above its high-water mark.
SlowPolicy = Literal["skip", "drop"]


def _sendable(connection: Connection) -> bool:
    transport = connection.transport
    return (
        connection.state is State.OPEN
        and transport is not None
        and not transport.is_closing()
        # Frames of two messages must not interleave.
        and not connection.protocol.sending_fragmented
    )


def broadcast(
    connections: Iterable[Connection],
    message: str | BytesLike,
    *,
    slow: SlowPolicy = "skip",
) -> int:
    """Send ``message`` (text for ``str``) to every open connection, without waiting; return
    how many connections it was written to.

    Not a coroutine: call it without ``await``, from the event loop's thread.

    Args:
        connections: the connections, e.g. ``server.connections``.
        message: the message.
        slow: for a connection whose write buffer is above its high-water mark (a slow
            consumer): ``"skip"`` (default) leaves it out of this message and keeps it open;
            ``"drop"`` closes it with 1008 (policy violation). To wait for slow peers
            instead, use :func:`broadcast_and_wait`.

    Connections that are not open, and connections in the middle of sending a fragmented
    message, are left out (not counted).

    Raises:
        ValueError: ``slow`` is not one of the policies.
        TypeError: ``message`` is neither ``str`` nor bytes-like.
    """
    if slow not in ("skip", "drop"):
        raise ValueError(
            f"slow must be 'skip' or 'drop', got {slow!r}; use broadcast_and_wait() to wait "
            "for slow connections"
        )
    encoder = _encoder(message)
    sent = 0
    for connection in connections:
        if not _sendable(connection):
            continue
        if connection.writing_paused:
            if slow == "drop":
                connection.fail(CloseCode.POLICY_VIOLATION, "too slow to receive broadcasts")
            continue
        connection.send_encoded(encoder.encode_for(connection.protocol))
        sent += 1
    return sent


async def broadcast_and_wait(
    connections: Iterable[Connection],
    message: str | BytesLike,
    *,
    timeout: float | None = None,
) -> int:
    """Send ``message`` to every open connection, then wait until every write buffer it went
    to has drained below its low-water mark (a slow peer delays the caller, not the others);
    return how many connections it was written to.

    Args:
        timeout: stop waiting after this many seconds (the message stays queued).
    """
    encoder = _encoder(message)
    written: list[Connection] = []
    for connection in connections:
        if not _sendable(connection):
            continue
        connection.send_encoded(encoder.encode_for(connection.protocol))
        written.append(connection)
    waits = [asyncio.ensure_future(c.drain()) for c in written if c.writing_paused]
    if waits:
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # a connection that closed meanwhile: nothing to report
    return len(written)


def _encoder(message: str | BytesLike) -> MessageEncoder:
    if not isinstance(message, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"cannot broadcast {type(message).__name__}: send str (text) or bytes (binary)"
        )
    return MessageEncoder(message)
