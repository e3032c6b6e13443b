"""The asyncio connection: an ``asyncio.BufferedProtocol`` that drives a sans-I/O protocol.

Everything about WebSocket itself happens in :mod:`tether.sansio`; this module adds what needs
a clock or a socket: waiting for messages, flow control both ways, keepalive pings, close
timeouts.

Reading ahead of the application, and the end held behind unread messages:

- Every byte received is parsed at once, whatever the application does: data goes to the
  receive queue (:class:`~tether.asyncio.messages.Assembler`), pings are answered and pongs
  are matched as they arrive. So a handler that only sends never gets a healthy peer closed
  by keepalive: its pongs are seen even if the application never reads.
- What must wait is the *end*: a close frame, or a peer error (a bad frame, invalid UTF-8, a
  message too big), found behind a message the application has not taken yet. Acting on it at
  once would close the connection before the application answered that message (Autobahn
  3.x, 4.x and 5.15 send a valid message and a bad frame together and expect the answer
  first). So the protocol holds it (``Protocol.hold_end_after_message``) until the queue is
  empty and the application had its turn to answer (the next ``recv()``, or a callback
  scheduled when it took the last message), and at most :data:`HELD_END_TIMEOUT` seconds: a
  peer's close is answered within that time whatever the application does, and at once while
  a coroutine waits in ``wait_closed()`` (it is not going to read).
- Reading pauses only when more than ``limits.max_queue`` bytes of complete messages wait
  (and resumes below a quarter of it, see :mod:`tether.asyncio.messages`). Past that bound,
  control frames are not seen until the application reads: the bound wins.

Writing: the transport's buffer has the high and low water marks of ``limits``; ``send()``
waits while the buffer is above the high mark, and raises ``ConnectionClosed`` if the
connection is lost meanwhile (the message was not delivered). While the buffer is above the
high mark, pings are not answered one by one: only the latest is, once the buffer drains (RFC
6455 5.5.3), so a ping flood whose pongs are never read costs no memory. A coroutine that
sends (or receives) without ever waiting yields to the event loop every
:data:`YIELD_EVERY` messages, so that a tight ``while True: await ws.send(...)`` cannot starve
other connections.

A closed connection is freed by reference counting alone: timers, tasks and stored exceptions
that would point back at it are dropped when the connection is lost.

Reading into a buffer: with a plain ``asyncio.Protocol`` the selector transport calls
``sock.recv(262144)`` for every read. CPython allocates those 256 KiB with ``malloc``, which
glibc serves with ``mmap`` above its threshold, then shrinks the bytes object (``mremap``), and
frees it after use (``munmap``): three system calls and fresh zeroed pages for every message
(``strace -c`` on an echo server shows one mmap, mremap and munmap per recvfrom). As a
``BufferedProtocol``, the connection lends the transport one preallocated buffer per thread
instead; ``recv_into`` fills it and :meth:`Connection.buffer_updated` copies out the bytes
received before it returns, so the buffer can be shared by every connection of the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, cast

from ..connection_info import ConnectionInfo
from ..exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK
from ..fragment_queue import StreamDecoder, convert
from ..pings import answered_pings, ping_payload
from ..reads import read_buffer, take_read
from ..sansio.codes import CloseCode
from ..sansio.events import Fragment, Pong
from ..sansio.protocol import EncodedMessage, Protocol, State
from ..typing import Data, LoggerLike
from .budget import MemoryBudget
from .messages import Assembler

__all__ = ["Connection"]


#: At most this many seconds between finding a peer's close frame (or error) behind unread
#: messages and acting on it, when the application does not take those messages.
HELD_END_TIMEOUT = 1.0

#: A coroutine that sends or receives this many messages in a row without waiting yields to
#: the event loop once (``asyncio.sleep(0)``), so that other tasks and connections get a turn.
YIELD_EVERY = 32

_OPEN = State.OPEN

#: The selector event loop's TCP/Unix transport: write() sends at once or keeps (3.12+: a view
#: of) what is left; an empty write buffer after write() means it holds nothing of ours.
_SOCKET_TRANSPORT: type | None = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)


class Connection(ConnectionInfo, asyncio.BufferedProtocol):
    """A WebSocket connection on asyncio. Subclassed by the server and client connections.

    ``async for message in connection`` yields messages until the peer closes normally, and
    raises :class:`~tether.exceptions.ConnectionClosedError` if the connection fails.
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        logger: LoggerLike | None = None,
    ) -> None:
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._set_logger(logger, "-")  # the id is made on first use (ConnectionInfo.id)
        # Parse everything at once, but hold a close or a peer error behind unread messages
        # (see the module docstring).
        protocol.hold_end_after_message = True

        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._read_view = read_buffer()
        # Where the next read goes instead, while a large frame arrives (see buffer_updated).
        self._payload_view: memoryview | None = None

        # Incoming: messages waiting for recv(), or handed to a callback.
        self._messages = Assembler(protocol.limits.max_queue)
        self._callback: Callable[[Data], object] | None = None
        self._recv_busy = False
        self._release_scheduled = False
        self._hold_timer: asyncio.TimerHandle | None = None
        self._closed_waiters = 0  # coroutines in wait_closed()

        # Outgoing.
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._send_lock = asyncio.Lock()
        self._fragmenting = False  # the lock is held by a fragmented message (cheap to test)
        # Messages sent or received in a row without waiting (see YIELD_EVERY).
        self._unyielded = 0

        # Pings sent: payload -> (future resolved with the round trip time, time sent).
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        #: Round-trip time of the latest ping answered, in seconds (0 until one is).
        self.latency: float = 0.0
        self._keepalive_task: asyncio.Task[None] | None = None

        self._close_timer: asyncio.TimerHandle | None = None
        # The server-wide memory budget this connection charges what it holds to, if any
        # (set by the server; see tether.asyncio.budget), and what it last charged, in bytes.
        self.budget: MemoryBudget | None = None
        self.budget_charged = 0
        self.connection_lost_waiter: asyncio.Future[None] = self.loop.create_future()

    # --- public API ---------------------------------------------------------------------------

    @property
    def bytes_held(self) -> int:
        """Bytes this connection holds of received messages: unread ones (text counted in
        characters), the one still arriving, and input not parsed yet. What a server-wide
        memory budget sums over its connections."""
        return self._messages.size + self.protocol.buffered

    @property
    def remote_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    async def __aiter__(self) -> AsyncIterator[Data]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def recv(self, decode: bool | None = None, timeout: float | None = None) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Args:
            decode: ``False`` returns a text message as UTF-8 ``bytes``, ``True`` returns a
                binary message decoded from UTF-8 as ``str``; ``None`` (default) neither.
            timeout: seconds to wait for a message; then ``TimeoutError`` is raised and the
                connection is left as it was (no message is lost; call ``recv()`` again).

        Raises:
            ConnectionClosed: the connection closed and no message is left.
            ConcurrencyError: another coroutine is already waiting in ``recv()``.
            TimeoutError: no message came within ``timeout``.
            UnicodeDecodeError: ``decode=True`` and a binary message is not UTF-8.
        """
        if self._recv_busy or self._callback is not None:  # _check_receivable() inlined
            self._check_receivable("recv")
        self._recv_busy = True
        try:
            messages = self._messages
            if messages.complete == 0:
                if timeout is None:
                    while messages.complete == 0:
                        await self._data_waiter()
                else:
                    async with asyncio.timeout(timeout):
                        while messages.complete == 0:
                            await self._data_waiter()
            elif self._unyielded >= YIELD_EVERY:
                await self._yield()
            else:
                self._unyielded += 1
            data = messages.pop_message()
            self._taken()
            if decode is not None:
                return convert(data, decode)
            return data
        finally:
            self._recv_busy = False

    def set_message_callback(self, callback: Callable[[Data], object] | None) -> None:
        """Hand every message to ``callback(message)`` (``str`` or ``bytes``) as soon as it
        is complete, instead of queueing it for :meth:`recv`; ``None`` goes back to the queue.

        The callback runs in the event loop's read callback: no task, no future and no
        wake-up per message, which is what ``await recv()`` costs (picows' style, for those
        who want it). It must not block; it answers with :meth:`send_nowait`. Messages
        already queued are handed to it before this returns. If it raises, the error is
        logged and the connection fails with 1011. While it is set, :meth:`recv` and ``async
        for`` raise ``ConcurrencyError``; wait for the end with :meth:`wait_closed`. A close
        or an error of the peer is acted on once the messages before it were handed over.

        Raises:
            ConcurrencyError: a coroutine is waiting in :meth:`recv`.
        """
        if self._recv_busy and callback is not None:
            self._check_receivable("set_message_callback")
        self._callback = callback
        if callback is not None and self._messages.complete:
            self._deliver(callback)
            self._process_events()

    def send_nowait(self, message: Data | bytearray | memoryview, text: bool | None = None) -> None:
        """Send a message at once, without waiting: for a message callback, which cannot
        await. It goes to the transport's buffer even when that is above the high-water mark
        (``send()`` would wait): look at :attr:`writing_paused`, or ``await drain()``, to
        bound what you queue. ``text`` as for :meth:`send`.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ConcurrencyError: a fragmented message is being sent.
            TypeError: the message is of an unsupported type.
        """
        protocol = self.protocol
        if protocol._state is not _OPEN:
            raise self.close_exc
        if self._fragmenting:
            raise ConcurrencyError("cannot send_nowait() while a fragmented message is sent")
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"cannot send {type(message).__name__}")
        protocol.send_message(message, text)
        self._flush()

    async def recv_streaming(self, decode: bool | None = None) -> AsyncIterator[Data]:
        """The fragments of the next message as they arrive (``str`` or ``bytes``; ``decode``
        as for :meth:`recv`, fragment by fragment)."""
        self._check_receivable("recv_streaming")
        self._recv_busy = True
        try:
            messages = self._messages
            decoder = None if decode is None else StreamDecoder(decode)
            while True:
                while not messages.fragments:
                    await self._data_waiter()
                fragment = messages.pop()
                self._taken()
                data = fragment.data
                if decoder is not None:
                    data = decoder.convert(data, fragment.last)
                yield data
                if fragment.last:
                    return
        finally:
            self._recv_busy = False

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
        text: bool | None = None,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary. An iterable or async iterable
        of ``str`` or of bytes-like sends one fragmented message, one frame per item.

        ``text=True`` sends bytes-like data (which must be UTF-8; it is not checked) as text,
        ``text=False`` sends a ``str`` as binary (its UTF-8). Concurrent calls are serialised;
        a fragmented message is never interleaved.

        Raises:
            ConnectionClosed: the connection is closing or closed, or it was lost while the
                message waited for the write buffer to drain (the message may not have
                reached the peer).
            TypeError: the message is of an unsupported type.
        """
        if isinstance(message, (str, bytes, bytearray, memoryview)):
            if self._fragmenting:
                # A fragmented message is being sent: wait for its end. What follows runs
                # without yielding, so no other fragmented message can start in between.
                async with self._send_lock:
                    pass
            protocol = self.protocol
            if protocol._state is not _OPEN:  # _check_sendable() inlined: once per message
                raise self.close_exc
            protocol.send_message(message, text)
            self._flush()
            if self._writing_paused:
                await self.drain()
            elif self._unyielded >= YIELD_EVERY:
                await self._yield()
            else:
                self._unyielded += 1
            return
        if isinstance(message, dict):
            raise TypeError("cannot send a dict; serialise it first (e.g. json.dumps)")
        if isinstance(message, AsyncIterable):
            fragments = message
        elif isinstance(message, Iterable):
            fragments = _aiter(message)
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        async with self._send_lock:
            self._fragmenting = True
            try:
                await self._send_fragments_async(fragments, text)
            finally:
                self._fragmenting = False
        if self._unyielded >= YIELD_EVERY:
            await self._yield()
        else:
            self._unyielded += 1

    async def ping(self, data: str | bytes | None = None) -> asyncio.Future[float]:
        """Send a ping; return a future that resolves with the round-trip time in seconds when
        the matching pong arrives (as in websockets)::

            pong_waiter = await connection.ping()
            latency = await pong_waiter

        ``data`` (at most 125 bytes; ``str`` is sent as UTF-8) defaults to 4 random bytes.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ConcurrencyError: a ping with the same data is already waiting for its pong.
        """
        return self._send_ping(data)

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat). A coroutine, like :meth:`ping`.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        self._check_sendable()
        self.protocol.send_pong(data.encode() if isinstance(data, str) else bytes(data))
        self._flush()

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is closed (at most
        ``close_timeout``, after which the TCP connection is dropped)."""
        if self.protocol.state is State.OPEN:
            self.start_closing(code, reason)
        elif self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed.

        A coroutine waiting here is not reading: while one does, a peer's close frame (or
        error) found behind unread messages is acted on at once rather than after
        :data:`HELD_END_TIMEOUT`.
        """
        self._closed_waiters += 1
        try:
            if self.protocol.holding:
                self._release_held()
            await asyncio.shield(self.connection_lost_waiter)
        finally:
            self._closed_waiters -= 1

    def start_closing(self, code: int, reason: str) -> None:
        """Send the close frame without waiting for the closing handshake to finish.

        A close frame may interrupt a fragmented message being sent (5.4: control frames may
        be injected); the message then never ends, which is legal.
        """
        self.protocol.send_close(code, reason)
        # send_close() acted on a held close frame of the peer, if any.
        self._process_events()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (e.g. 1011 on a keepalive timeout)."""
        self.logger.info("! failing connection with code %d: %s", code, reason)
        self.protocol.fail(code, reason)
        self._process_events()

    # --- internals: guards ----------------------------------------------------------------------

    def _check_sendable(self) -> None:
        """The one guard of every send: raise ``close_exc`` unless the connection is open."""
        if self.protocol.state is not State.OPEN:
            raise self.close_exc

    def _check_receivable(self, name: str) -> None:
        if self._callback is not None:
            raise ConcurrencyError(
                f"cannot call {name}(): messages go to the callback of set_message_callback()"
            )
        if self._recv_busy:
            raise ConcurrencyError(
                f"cannot call {name}() while another coroutine is already running recv() "
                "or recv_streaming()"
            )

    # --- for broadcast (layer-internal: used by tether.asyncio.fanout) ------------------------

    @property
    def writing_paused(self) -> bool:
        """Whether the write buffer is above its high-water mark (``send()`` would wait)."""
        return self._writing_paused

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark (what ``send()`` does after
        writing while ``writing_paused``).

        Raises:
            ConnectionClosed: the connection was lost first.
        """
        self._unyielded = 0
        while self._writing_paused:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter  # connection_lost() sets close_exc on it

    def send_encoded(self, encoded: EncodedMessage) -> None:
        """Send a message encoded once for several connections, without waiting."""
        self.protocol.send_encoded(encoded)
        self._flush()

    # --- internals: receiving -------------------------------------------------------------------

    def _data_waiter(self) -> asyncio.Future[None]:
        """The future to await for more received data; raise ``close_exc`` if none can come.
        Before waiting, act on a close or error held behind messages the application has now
        all taken (the future is then already done: look at the queue again). A plain method
        returning a future, not a coroutine: one coroutine frame less per message received."""
        protocol = self.protocol
        if protocol._held is not None and not self._messages.fragments:
            self._release_held()
            done = self.loop.create_future()
            done.set_result(None)
            return done
        if protocol._state is State.CLOSED or self.connection_lost_waiter.done():
            raise self.close_exc
        self._unyielded = 0
        return self._messages.waiter(self.loop)

    def _taken(self) -> None:
        """The application took a fragment: resume reading if the queue shrank enough; once no
        complete message is left, the protocol is caught up (a held end is acted on after
        the application's turn, so that its answer goes first)."""
        if self.budget is not None:
            self.budget.charge(self)
        messages = self._messages
        if messages.complete == 0:
            protocol = self.protocol
            if protocol.holding:
                if not self._release_scheduled:
                    self._release_scheduled = True
                    self.loop.call_soon(self._release_held_soon)
            else:
                protocol.caught_up()
        if messages.paused and messages.should_resume(self.protocol.buffered):
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def _release_held_soon(self) -> None:
        self._release_scheduled = False
        if self._messages.complete == 0 and self.protocol.holding:
            self._release_held()

    def _release_held(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self.protocol.caught_up()
        self._process_events()

    def _held_end_timed_out(self) -> None:
        self._hold_timer = None
        if self.protocol.holding:
            self.logger.debug("= acting on the peer's close or error behind unread messages")
            self._release_held()

    def _process_events(self) -> None:
        """Take the sans-I/O protocol's events and output; called after every input."""
        protocol = self.protocol
        messages = self._messages
        queued = False
        for event in protocol.events_received():
            if type(event) is Fragment:
                messages.put(event)
                queued = True
            elif type(event) is Pong:
                self._pong_received(event)
            else:
                self._handle_event(event)
        if queued:
            callback = self._callback
            if callback is not None:
                if messages.complete:
                    self._deliver(callback)
            else:
                messages.wake()
                if messages.should_pause(protocol.buffered) and self.transport is not None:
                    self.transport.pause_reading()
        # The protocol's private state is read directly below and in _flush: this runs after
        # every read, and in the usual case (open, nothing held, nothing to write: an echo
        # is written by send()) it makes no call at all.
        if protocol._state is not _OPEN or protocol._held is not None:
            if protocol._state is not _OPEN:
                # A message still arriving will never end: free it now.
                messages.drop_incomplete()
                messages.wake()  # a receiver may wait for data that will not come
            if protocol._held is not None:
                if self._closed_waiters:
                    self._release_held()  # nobody is going to read what is queued first
                    return
                if self._hold_timer is None:
                    self._arm_hold_timer()
            self._flush()
        elif protocol._writes:  # pongs; close_expected() is False while OPEN
            self._flush()

    def _deliver(self, callback: Callable[[Data], object]) -> None:
        """Hand the complete messages to the message callback. It had its turn to answer
        them: the protocol is caught up then (a close held behind them is acted on)."""
        messages = self._messages
        while messages.complete and self._callback is callback:
            data = messages.pop_message()
            try:
                callback(data)
            except Exception as exc:
                self.logger.error("! message callback failed", exc_info=exc)
                if self.protocol.state is State.OPEN:
                    self.fail(CloseCode.INTERNAL_ERROR, "")
                return
        if messages.complete:  # the callback was changed or removed: the rest waits
            messages.wake()
            return
        if self.protocol._held is not None:
            self._release_held()
        else:
            self.protocol.caught_up()

    def _arm_hold_timer(self) -> None:
        timeout = HELD_END_TIMEOUT
        if self.close_timeout is not None:
            timeout = min(timeout, self.close_timeout)
        self._hold_timer = self.loop.call_later(timeout, self._held_end_timed_out)

    def _handle_event(self, event: object) -> None:
        """Other events (handshake, ping, close): overridden by the roles when needed."""

    def _pong_received(self, event: Pong) -> None:
        for waiter, round_trip in answered_pings(self._pings, event.acked, self.loop.time()):
            self.latency = round_trip
            if not waiter.done():
                waiter.set_result(round_trip)

    # --- internals: sending -------------------------------------------------------------------

    async def _yield(self) -> None:
        self._unyielded = 0
        await asyncio.sleep(0)

    async def _send_fragments_async(
        self, fragments: AsyncIterable[Data], text: bool | None
    ) -> None:
        iterator = aiter(fragments)
        try:
            current = await anext(iterator)
        except StopAsyncIteration:
            return
        is_str = isinstance(current, str)
        as_text = is_str if text is None else text
        first = True
        while True:
            try:
                following: Data | None = await anext(iterator)
            except StopAsyncIteration:
                following = None
            self._send_fragment(current, is_str, as_text, first, following is None)
            first = False
            if self._writing_paused:
                await self.drain()
            if following is None:
                return
            current = following

    def _send_fragment(self, data: Data, is_str: bool, text: bool, first: bool, last: bool) -> None:
        if isinstance(data, str) != is_str:
            # Finish the message cleanly before reporting the mistake.
            if not first:
                self._check_sendable()
                self.protocol.send_continuation(b"", fin=True)
                self._flush()
            raise TypeError("all fragments of a message must be str, or all bytes-like")
        self._check_sendable()
        if first:
            if text:
                self.protocol.send_text(data, fin=last)
            else:
                payload = data.encode() if isinstance(data, str) else data
                self.protocol.send_binary(payload, fin=last)
        else:
            self.protocol.send_continuation(data, fin=last)
        self._flush()

    def _send_ping(self, data: str | bytes | None) -> asyncio.Future[float]:
        payload = ping_payload(self._pings, data)
        self._check_sendable()
        self.protocol.send_ping(payload)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, self.loop.time())
        self._flush()
        return waiter

    def _flush(self) -> None:
        """Write what the protocol produced; arm the close timer when the peer should close."""
        protocol = self.protocol
        transport = self.transport
        writes = protocol.data_to_send()
        if writes and transport is not None:
            for data in writes:
                if data:
                    transport.write(data)
                    if type(data) is bytearray and not transport.get_write_buffer_size():
                        # Sent in full, and the transport kept no reference: reusable.
                        protocol.recycle_output(data)
                elif transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
        if self._close_timer is None and protocol._state is not _OPEN and protocol.close_expected():
            timeout = self.close_timeout
            if timeout is not None and transport is not None:
                self._close_timer = self.loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.transport is not None and not self.connection_lost_waiter.done():
            self.logger.info("! timed out waiting for the peer to close the TCP connection")
            self.transport.abort()

    # --- keepalive ----------------------------------------------------------------------------

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self._keepalive_task is None:
            self._keepalive_task = self.loop.create_task(self._keepalive())

    async def _keepalive(self) -> None:
        assert self.ping_interval is not None
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                if self.protocol.state is not State.OPEN:
                    return
                waiter = self._send_ping(None)
                if self.ping_timeout is None:
                    continue
                try:
                    async with asyncio.timeout(self.ping_timeout):
                        await waiter
                except TimeoutError:
                    if self.protocol.state is State.OPEN:
                        self.fail(
                            CloseCode.INTERNAL_ERROR,
                            f"keepalive ping timeout: no pong within {self.ping_timeout:g} s",
                        )
                    return
        except ConnectionClosed:
            return

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        limits = self.protocol.limits
        self.transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)
        # Only asyncio's own socket transport is known to keep no reference to what it sent
        # in full (so that a large masked frame's buffer can be built again in place).
        self.protocol.reuse_output = type(transport) is _SOCKET_TRANSPORT
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            # Formatted by the logger if it ever logs (ConnectionLogger.process).
            cast(dict[str, Any], cast(Any, self.logger).extra)["peer"] = peer

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._payload_view
        return self._read_view if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        self._payload_view = take_read(self.protocol, self._read_view, self._payload_view, nbytes)
        self._process_events()
        if self.budget is not None:
            self.budget.charge(self)

    def data_received(self, data: bytes) -> None:
        """Take bytes from the network (what ``buffer_updated`` does, for callers that have a
        bytes object, such as tests or a plain-protocol wrapper)."""
        self.protocol.receive_data(data)
        self._process_events()
        if self.budget is not None:
            self.budget.charge(self)

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._process_events()
        # Returning None closes the transport once our own writes are flushed.
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.protocol.pause_output()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.protocol.resume_output():
            self._flush()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        protocol = self.protocol
        if protocol.state is not State.CLOSED:
            protocol.receive_eof()
        # What the EOF produced can no longer be written or delivered.
        protocol.events_received()
        protocol.data_to_send()
        self._messages.drop_incomplete()
        if self.budget is not None:
            self.budget.release(self)
        # Drop every reference that would tie this connection into a cycle (timer callbacks,
        # the keepalive task, whose frames and CancelledError point back at it), so that
        # reference counting frees it without the cyclic collector.
        for timer in (self._close_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._hold_timer = None
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        for waiter, _ in self._pings.values():
            if not waiter.done():
                waiter.set_exception(self.close_exc)
                waiter.exception()  # nobody may be waiting: don't warn about it
        self._pings.clear()
        self._writing_paused = False
        for drain in self._drain_waiters:
            if not drain.done():
                # The message waiting for this drain may not have been delivered: say so.
                drain.set_exception(self.close_exc)
                drain.exception()
        self._drain_waiters = []
        self._messages.wake()
        if not self.connection_lost_waiter.done():
            self.connection_lost_waiter.set_result(None)
        self.logger.debug("= connection closed: code %s", self.close_code)


async def _aiter(items: Iterable[Data]) -> AsyncIterator[Data]:
    """An async view of an iterable, so both kinds of fragment sources share one loop."""
    for item in items:
        yield item
