"""Send one message to many connections: :func:`broadcast` (never waits) and
:func:`broadcast_and_wait` (waits for slow peers).

Both encode the message once per group of connections that frame it alike
(:class:`~tether.sansio.protocol.MessageEncoder`): with permessage-deflate without context
takeover on our side, compression runs once per group of negotiated parameters rather than
once per connection. A connection that cannot share (a client masks every frame; a compressor
with context takeover) encodes the message itself, through its protocol as ``send()`` would.

The loop runs once per connection per message (10,000 connections: 10,000 times), so it does
per connection only what must be: the checks of ``_sendable()`` and of
``Protocol.send_encoded()`` read straight from the fields (no property or method call, in
this module and in ``sansio``), one ``encoding_key()`` call, one dictionary look-up of the
frame of its group, and one ``transport.write()`` of that frame (the bytes the protocol would
have queued and ``Connection._flush()`` written). A connection leaves this fast path for the
general one (``Connection.send_encoded()``) when its protocol must frame the message itself
(key ``None``), logs at debug level (the protocol's ``"> pre-encoded message"`` line), or has
output queued that must go first (the asyncio connection writes whatever its protocol produces
before returning to the event loop, so this is not expected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Literal

from ..sansio.codes import CloseCode
from ..sansio.protocol import MessageEncoder, State
from ..typing import BytesLike
from .connection import Connection

__all__ = ["broadcast", "broadcast_and_wait"]

#: What :func:`broadcast` does with a connection whose write buffer is above its high-water mark.
SlowPolicy = Literal["skip", "drop"]

_OPEN = State.OPEN


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
    return _send_all(connections, _encoder(message), slow, None)


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
    paused: list[Connection] = []
    sent = _send_all(connections, _encoder(message), "wait", paused)
    waits = [asyncio.ensure_future(c.drain()) for c in paused]
    if waits:
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in done:
            task.exception()  # a connection that closed meanwhile: nothing to report
    return sent


def _send_all(
    connections: Iterable[Connection],
    encoder: MessageEncoder,
    slow: Literal["skip", "drop", "wait"],
    paused: list[Connection] | None,
) -> int:
    """Write the message of ``encoder`` to every sendable connection; return how many.
    A connection above its high-water mark is skipped, failed (``"drop"``) or written to
    anyway (``"wait"``: then it goes to ``paused`` if it is above the mark after the write)."""
    size = encoder.size
    wait = slow == "wait"
    drop = slow == "drop"
    # The frame to write for each encoding key met so far (None: each connection of that key
    # frames the message itself).
    frames: dict[Hashable, bytes | None] = {}
    sent = 0
    for connection in connections:
        protocol = connection.protocol
        transport = connection.transport
        if (
            protocol._state is not _OPEN
            or protocol._out_opcode is not None  # frames of two messages must not interleave
            or transport is None
            or transport.is_closing()
        ):
            continue
        if connection._writing_paused and not wait:
            if drop:
                connection.fail(CloseCode.POLICY_VIOLATION, "too slow to receive broadcasts")
            continue
        key = protocol.encoding_key(size)
        try:
            data = frames[key]
        except KeyError:
            data = frames[key] = None if key is None else encoder.encode_for(protocol).data
        if data is None or protocol.debug or protocol._writes:
            connection.send_encoded(encoder.encode_for(protocol))
        else:
            transport.write(data)
        sent += 1
        if wait and connection._writing_paused:
            assert paused is not None
            paused.append(connection)
    return sent


def _encoder(message: str | BytesLike) -> MessageEncoder:
    if not isinstance(message, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"cannot broadcast {type(message).__name__}: send str (text) or bytes (binary)"
        )
    return MessageEncoder(message)
