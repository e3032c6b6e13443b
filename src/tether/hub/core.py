"""The hub: channels, publishing, and delivery to WebSocket connections in offset order.

::

    hub = Hub(RedisBackend("redis://127.0.0.1:6379/0"))      # or Hub() for one process

    async def handler(ws):
        await hub.subscribe(ws, "chat")                       # or since=/epoch= to recover
        try:
            async for text in ws:
                await hub.publish("chat", text)
        finally:
            hub.unsubscribe(ws)

    async with hub, serve(handler, "127.0.0.1", 8765):
        ...

Each message is framed once (``codec``) and sent with tether's ``broadcast``, which encodes
(and compresses) it once per group of connections that negotiated the same parameters (for
compressed connections, only when the server keeps no context between messages, e.g.
``serve(..., compression="small")``; with the default preset each connection compresses it
with its own context), and applies the slow-consumer policy: ``"skip"`` leaves a connection
whose write buffer is full out of this message (its client sees the offset jump and can
recover), ``"drop"`` closes it with 1008, ``"wait"`` waits for it (which delays delivery to
everybody, and ``publish()`` with the in-process backend). No policy lets a slow client grow
the server's memory beyond its write buffer's high-water mark plus one run: messages read
together are written to each connection in runs of up to 64 KiB of frames (one write each).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from ..asyncio.connection import Connection
from ..asyncio.fanout import _sendable, broadcast, broadcast_and_wait
from ..exceptions import ConnectionClosed, HubError, MessageTooBig
from ..sansio.codes import CloseCode
from ..sansio.protocol import EncodedMessage, MessageEncoder, State
from .base import Backend, Message, Signal, check_channel
from .memory import MemoryBackend
from .wire import JSON_CODEC, Codec, parse_request

__all__ = ["Hub", "Listener", "Recovery"]

logger = logging.getLogger("tether.hub")

#: A Python subscriber: called with each message (and signal) of its channel, in order.
Listener = Callable[[Message | Signal], None]

POLICIES = ("skip", "drop", "wait")


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Hub.subscribe` did."""

    channel: str
    epoch: str
    #: Offset of the last message sent to the connection during recovery (or the channel's
    #: head when it subscribed), after which live delivery goes on.
    offset: int
    #: Messages replayed.
    replayed: int
    #: False when the connection asked to recover but could not be: it was sent an
    #: ``unrecoverable`` signal, whose reason is here.
    recovered: bool = True
    reason: str | None = None


class _Channel:
    __slots__ = ("delivered", "epoch", "joining", "listeners", "live", "name", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.live: set[Connection] = set()
        #: Connections that recovered up to an offset the listener has not delivered yet.
        self.joining: dict[Connection, int] = {}
        self.listeners: list[Listener] = []
        self.epoch = ""
        self.delivered = 0
        #: Set once the backend watches the channel.
        self.ready: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self.live and not self.joining and not self.listeners


class Hub:
    """Publish/subscribe over a :class:`~tether.hub.base.Backend` (in-process by default).

    Args:
        backend: :class:`~tether.hub.MemoryBackend` (default) or
            :class:`~tether.hub.RedisBackend`.
        slow: slow-consumer policy for live delivery: ``"skip"``, ``"drop"`` or ``"wait"``.
        max_message_size: longest message :meth:`publish` accepts, in bytes (UTF-8 for text).
        recover_limit: most messages replayed to one recovering connection; a client that
            missed more is told ``unrecoverable``.
        codec: frames messages and signals for connections (the JSON wire format of
            :mod:`tether.hub.wire` by default).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        slow: str = "skip",
        max_message_size: int = 2**16,
        recover_limit: int = 1000,
        codec: Codec = JSON_CODEC,
    ) -> None:
        if slow not in POLICIES:
            raise ValueError(f"slow must be one of {', '.join(POLICIES)}, got {slow!r}")
        if max_message_size < 1 or recover_limit < 0:
            raise ValueError("max_message_size must be >= 1 and recover_limit >= 0")
        self.backend = backend if backend is not None else MemoryBackend()
        self.slow = slow
        self.max_message_size = max_message_size
        self.recover_limit = recover_limit
        self.codec = codec
        self._channels: dict[str, _Channel] = {}
        self._subscriptions: dict[Connection, set[str]] = {}
        #: Channels being unwatched: a new watch of the same channel waits for it.
        self._unwatching: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self.up = True
        self.published = 0
        self.delivered = 0
        self.signals = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Hub:
        if not self._started:
            await self.backend.start(self)
            self._started = True
        return self

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.backend.close()

    async def __aenter__(self) -> Hub:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- publishing ---------------------------------------------------------------------------

    async def publish(self, channel: str, data: str | bytes) -> Message:
        """Store ``data`` as ``channel``'s next message and deliver it to every subscriber, in
        every process on the same backend. Returns the message, with its offset.

        Raises:
            InvalidChannel: the channel name is not valid.
            MessageTooBig: ``data`` is longer than ``max_message_size``.
            HubUnavailable: the backend did not confirm it (Redis down): normally nobody will
                receive it (see :class:`~tether.exceptions.HubUnavailable`).
        """
        check_channel(channel)
        if not isinstance(data, (str, bytes)):
            raise TypeError(f"publish str or bytes, not {type(data).__name__}")
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > self.max_message_size:
            raise MessageTooBig(
                f"message of {size} bytes on {channel!r} is over max_message_size "
                f"({self.max_message_size} bytes); send less or raise the limit"
            )
        self._check_started()
        message = await self.backend.publish(channel, data)
        self.published += 1
        return message

    def _check_started(self) -> None:
        if not self._started:
            raise HubError("the hub is not started: use 'async with hub' or 'await hub.start()'")

    # --- subscribing --------------------------------------------------------------------------

    async def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(name)
        if channel.ready is None and name in self._unwatching:
            # The last subscriber just left and the backend is being told: let it finish
            # first, or it would stop reading the channel we are about to watch.
            await asyncio.shield(self._unwatching[name])
        if channel.ready is None:
            channel.ready = asyncio.get_running_loop().create_future()
            try:
                channel.epoch, channel.delivered = await self.backend.watch(name)
            except BaseException as exc:
                channel.ready.set_exception(exc)
                channel.ready.exception()
                channel.ready = None
                if channel.empty():
                    self._channels.pop(name, None)
                raise
            channel.ready.set_result(None)
        else:
            await asyncio.shield(channel.ready)
        return channel

    async def subscribe(
        self,
        connection: Connection,
        channel: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
    ) -> Recovery:
        """Deliver ``channel``'s messages to ``connection`` from now on.

        With ``since`` (the last offset the client saw, of ``epoch``), first send every
        message it missed, in order, then go on live with no gap and no duplicate; if the
        history does not reach back that far (or the epoch is not the channel's any more), the
        connection is sent an ``unrecoverable`` signal and goes on live.

        Raises:
            InvalidChannel: the channel name is not valid.
            HubUnavailable: the backend could not be asked (the connection is not subscribed).
        """
        check_channel(channel)
        self._check_started()
        state = await self._channel(channel)
        if since is None:
            return self._join(connection, state, state.delivered, 0)
        last = since
        replayed = 0
        want_epoch: str | None = epoch
        for _ in range(100):
            budget = self.recover_limit - replayed
            history = await self.backend.history(channel, last, want_epoch, budget)
            if not history.complete:
                reason = history.reason or "history unavailable"
                return await self._refuse(connection, state, replayed, reason)
            for message in history.messages:
                await connection.send(self.codec.message(message))
                last = message.offset
                replayed += 1
            want_epoch = history.epoch
            # Nothing awaited from here to the join: the listener cannot slip in between. (An
            # empty state.epoch: the listener has not seen the channel's first message yet.)
            if last >= state.delivered and (history.epoch == state.epoch or not state.epoch):
                return self._join(connection, state, last, replayed)
        # The history kept changing under us (its epoch did): give up rather than spin.
        return await self._refuse(
            connection, state, replayed, "the channel's history changed during recovery"
        )

    async def _refuse(
        self, connection: Connection, state: _Channel, replayed: int, reason: str
    ) -> Recovery:
        """Tell ``connection`` that it cannot recover, then go on live from the channel's
        latest delivered offset."""
        signal = Signal("unrecoverable", state.name, state.epoch, state.delivered, reason)
        await self._send_to(connection, self.codec.signal(signal))
        self.signals += 1
        joined = self._join(connection, state, state.delivered, replayed)
        return dataclasses.replace(joined, recovered=False, reason=reason)

    def _join(self, connection: Connection, state: _Channel, last: int, replayed: int) -> Recovery:
        if last > state.delivered:
            state.joining[connection] = last
        else:
            state.live.add(connection)
        self._subscriptions.setdefault(connection, set()).add(state.name)
        if not self.up:
            # It joins a channel the hub cannot deliver at the moment: say so.
            frame = self.codec.signal(Signal("down", reason="the hub lost its backend"))
            if frame is not None:
                self._send_nowait(connection, frame)
        return Recovery(state.name, state.epoch, last, replayed)

    def unsubscribe(self, connection: Connection, channel: str | None = None) -> None:
        """Stop delivering ``channel`` (every channel if ``None``) to ``connection``."""
        names = self._subscriptions.get(connection, set())
        for name in [channel] if channel is not None else list(names):
            names.discard(name)
            state = self._channels.get(name)
            if state is not None:
                state.live.discard(connection)
                state.joining.pop(connection, None)
                self._release(state)
        if not names:
            self._subscriptions.pop(connection, None)

    async def listen(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each message and signal of ``channel`` (no WebSocket, no
        wire format). Returns a function that stops it. The listener must not block."""
        check_channel(channel)
        self._check_started()
        state = await self._channel(channel)
        state.listeners.append(listener)

        def stop() -> None:
            if listener in state.listeners:
                state.listeners.remove(listener)
                self._release(state)

        return stop

    def _release(self, state: _Channel) -> None:
        if state.empty() and state.ready is not None and state.ready.done():
            self._channels.pop(state.name, None)
            if self._started:
                task = asyncio.get_running_loop().create_task(self.backend.unwatch(state.name))
                task.add_done_callback(_log_failure)
                self._unwatching[state.name] = task

                def forget(done: asyncio.Task[None], name: str = state.name) -> None:
                    if self._unwatching.get(name) is done:
                        del self._unwatching[name]

                task.add_done_callback(forget)

    def subscribers(self, channel: str) -> int:
        state = self._channels.get(channel)
        return 0 if state is None else len(state.live) + len(state.joining)

    async def serve(
        self,
        connection: Connection,
        *,
        allow_publish: bool = False,
        allow: Callable[[Connection, str, str], bool] | None = None,
    ) -> None:
        """Serve the wire protocol of :mod:`tether.hub.wire` on ``connection`` until it closes:
        ``subscribe``, ``recover``, ``unsubscribe`` and, with ``allow_publish``, ``publish``.
        ``allow(connection, action, channel)`` (action ``"subscribe"`` or ``"publish"``) may
        refuse a request, e.g. after checking ``connection.request``'s credentials. A bad or
        refused request is answered with ``{"type": "error", "reason": ...}`` and ignored."""
        try:
            async for text in connection:
                try:
                    request = parse_request(text)
                    action = "publish" if request.type == "publish" else "subscribe"
                    refused = (
                        request.type != "unsubscribe"
                        and allow is not None
                        and not allow(connection, action, request.channel)
                    )
                    if refused:
                        raise HubError(f"not allowed to {action} on {request.channel!r}")
                    if request.type == "subscribe":
                        await self.subscribe(connection, request.channel)
                    elif request.type == "recover":
                        await self.subscribe(
                            connection, request.channel, since=request.since, epoch=request.epoch
                        )
                    elif request.type == "unsubscribe":
                        self.unsubscribe(connection, request.channel)
                    elif not allow_publish:
                        raise HubError("publishing is not allowed on this connection")
                    else:
                        assert request.data is not None
                        await self.publish(request.channel, request.data)
                except HubError as exc:
                    error = {"type": "error", "reason": str(exc)}
                    await connection.send(json.dumps(error, ensure_ascii=False))
        finally:
            self.unsubscribe(connection)

    # --- from the backend ---------------------------------------------------------------------

    async def deliver(self, message: Message) -> None:
        await self.deliver_many([message])

    async def deliver_many(self, messages: Sequence[Message]) -> None:
        """Messages of one channel, in offset order, read from the backend together: as
        :meth:`deliver` for each, but every connection is written once per run of frames (up
        to ``_RUN_BYTES``) instead of once per message: one system call instead of many when
        a burst arrives. The slow-consumer policy applies per run."""
        if not messages:
            return
        state = self._channels.get(messages[0].channel)
        if state is None:
            return
        frames: list[str | bytes] = []
        for message in messages:
            if state.epoch and message.epoch != state.epoch:
                gap: str | None = "the channel's history was reset"
            elif message.offset <= state.delivered:
                continue  # already delivered (a read repeated after a reconnection)
            elif message.offset != state.delivered + 1:
                gap = (
                    f"offsets {state.delivered + 1} to {message.offset - 1} were trimmed from "
                    "the history before this server could read them"
                )
            else:
                gap = None
            joined = [c for c, last in state.joining.items() if message.offset > last]
            if frames and (gap is not None or joined):
                # The set of recipients changes, or a signal goes between: send what the
                # current subscribers are owed first, in order.
                await self._send_frames(state, frames)
                frames = []
            if gap is not None:
                signal = Signal("unrecoverable", state.name, message.epoch, message.offset - 1, gap)
                self._signal_channel(state, signal)
            state.epoch = message.epoch
            state.delivered = message.offset
            for connection in joined:
                del state.joining[connection]
                state.live.add(connection)
            if state.live:
                try:
                    frames.append(self.codec.message(message))
                except Exception:
                    # One message that cannot be framed must not stop the listener that
                    # delivers every other one.
                    logger.exception(
                        "hub: cannot deliver offset %d of %s", message.offset, message.channel
                    )
            for listener in list(state.listeners):
                _call(listener, message)
        if frames:
            await self._send_frames(state, frames)

    async def _send_frames(self, state: _Channel, frames: list[str | bytes]) -> None:
        """Send ``frames`` (consecutive messages of ``state``) to its live connections."""
        try:
            for run in _runs(frames):
                sent = await _fan_out(state.live, run, self.slow)
                self.delivered += sent * len(run)
                if sent < len(state.live):
                    # Some were left out: forget those that closed without unsubscribing
                    # (a scan of every subscriber only then, not once per message).
                    for connection in [c for c in state.live if c.state is State.CLOSED]:
                        self.unsubscribe(connection)
        except Exception:
            logger.exception("hub: cannot deliver %d messages of %s", len(frames), state.name)

    def backend_state(self, up: bool, reason: str | None) -> None:
        if up == self.up:
            return
        self.up = up
        signal = Signal("up") if up else Signal("down", reason=reason)
        frame = self.codec.signal(signal)
        connections: set[Connection] = set()
        for state in self._channels.values():
            connections |= state.live
            connections |= state.joining.keys()
            for listener in list(state.listeners):
                _call(listener, signal)
        if frame is not None:
            for connection in connections:
                self._send_nowait(connection, frame)
        self.signals += len(connections)

    def reset(self, channel: str, epoch: str, head: int, reason: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.epoch = epoch
        state.delivered = head
        self._signal_channel(state, Signal("unrecoverable", channel, epoch, head, reason))

    def _signal_channel(self, state: _Channel, signal: Signal) -> None:
        logger.warning("hub: channel %s: %s", state.name, signal.reason)
        frame = self.codec.signal(signal)
        if frame is not None:
            for connection in [*state.live, *state.joining]:
                self._send_nowait(connection, frame)
                self.signals += 1
        for listener in list(state.listeners):
            _call(listener, signal)

    def _send_nowait(self, connection: Connection, frame: str | bytes) -> None:
        """Send a signal without waiting: a signal must reach a slow client too, and is small
        and rare (it goes past the write buffer's high-water mark, never without bound).
        Written at once, so that it arrives in its place among the messages; only while the
        connection is in the middle of a fragmented message does it wait for its turn."""
        if _sendable(connection):
            connection.send_encoded(MessageEncoder(frame).encode_for(connection.protocol))
        elif connection.state is State.OPEN:
            task = asyncio.get_running_loop().create_task(self._send_to(connection, frame))
            task.add_done_callback(_log_failure)

    async def _send_to(self, connection: Connection, frame: str | bytes | None) -> None:
        if frame is None:
            return
        try:
            await connection.send(frame)
        except ConnectionClosed:
            pass

    # --- health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """A JSON-able report for ``/healthz``: ``ok`` is false when the backend cannot
        deliver (disconnected, listener dead)."""
        backend = self.backend.health()
        return {
            "ok": bool(backend.get("ok")) and self._started,
            "started": self._started,
            "backend": backend,
            "channels": len(self._channels),
            "subscribers": sum(len(s.live) + len(s.joining) for s in self._channels.values()),
            "published": self.published,
            "delivered": self.delivered,
            "signals": self.signals,
            "slow": self.slow,
        }


#: Most bytes of frames written to a connection at once (at least one message): a connection
#: whose write buffer is above its high-water mark gets no more than this past it.
_RUN_BYTES = 2**16


def _runs(frames: list[str | bytes]) -> Iterator[list[str | bytes]]:
    """Split ``frames`` into consecutive runs of at most ``_RUN_BYTES`` (counting characters
    for text: a bound, not an exact size)."""
    run: list[str | bytes] = []
    size = 0
    for frame in frames:
        if run and size + len(frame) > _RUN_BYTES:
            yield run
            run, size = [], 0
        run.append(frame)
        size += len(frame)
    if run:
        yield run


async def _fan_out(connections: set[Connection], payloads: list[str | bytes], slow: str) -> int:
    """Write consecutive messages to every connection with the slow-consumer policy ``slow``
    (as tether's ``broadcast``; ``"wait"``: as ``broadcast_and_wait``). Each message is
    encoded once per group of connections that frame it alike, and the frames of a run are
    joined once per group, so that each connection takes one write."""
    if len(payloads) == 1:
        if slow == "wait":
            return await broadcast_and_wait(connections, payloads[0])
        return broadcast(connections, payloads[0], slow="drop" if slow == "drop" else "skip")
    encoders = [MessageEncoder(payload) for payload in payloads]
    sizes = {encoder.size for encoder in encoders}
    joined: dict[Hashable, EncodedMessage] = {}
    written: list[Connection] = []
    for connection in connections:
        if not _sendable(connection):
            continue
        if connection.writing_paused and slow != "wait":
            if slow == "drop":
                connection.fail(CloseCode.POLICY_VIOLATION, "too slow to receive broadcasts")
            continue
        protocol = connection.protocol
        keys = {protocol.encoding_key(size) for size in sizes}
        key = keys.pop() if len(keys) == 1 else None
        if key is None:
            # Framed per connection (a compressor with context, a frame size limit...).
            for encoder in encoders:
                connection.send_encoded(encoder.encode_for(protocol))
        else:
            run = joined.get(key)
            if run is None:
                parts = [encoder.encode_for(protocol) for encoder in encoders]
                # Every message of the run shares ``key``: one write carries all their frames.
                run = EncodedMessage(
                    key, parts[0].payload, parts[0].text, b"".join(p.data for p in parts)
                )
                joined[key] = run
            connection.send_encoded(run)
        written.append(connection)
    if slow == "wait":
        waits = [asyncio.ensure_future(c.drain()) for c in written if c.writing_paused]
        if waits:
            await asyncio.wait(waits)
            for task in waits:
                task.exception()  # a connection that closed meanwhile: nothing to report
    return len(written)


def _call(listener: Listener, item: Message | Signal) -> None:
    try:
        listener(item)
    except Exception:
        logger.exception("hub: a listener failed on %r", item)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("hub: background task failed", exc_info=task.exception())
