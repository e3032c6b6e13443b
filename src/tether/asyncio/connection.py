"""The asyncio connection: an ``asyncio.BufferedProtocol`` that drives a sans-I/O protocol.

Everything about WebSocket itself happens in :mod:`tether.sansio`; this module adds what needs
a clock or a socket: waiting for messages, flow control both ways, keepalive pings, close
timeouts.

Flow control:

- reading: received messages queue up for ``recv()``; when more than ``limits.max_queue``
  bytes of complete messages wait, the transport stops reading, and resumes below a quarter
  of it. A message being assembled never blocks reading (it is bounded by
  ``limits.max_message_size`` instead), so a large message cannot deadlock.
- writing: the transport's buffer has the high and low water marks of ``limits``; ``send()``
  waits while the buffer is above the high mark.

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
import collections
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, cast

from ..exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK
from ..sansio.codes import CloseCode
from ..sansio.events import Fragment, Pong
from ..sansio.handshake import Handshake
from ..sansio.http11 import Request, Response
from ..sansio.protocol import EncodedMessage, Protocol, State
from ..typing import Data, LoggerLike

__all__ = ["Connection"]


class _ConnectionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the connection's id and peer, so logs can be scanned."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = cast(dict[str, Any], self.extra)
        return f"[{extra['id']} {extra['peer']}] {msg}", kwargs


#: Size of the read buffer: what the selector transport reads at most per call by default.
READ_BUFFER_SIZE = 256 * 1024

_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer. An event loop runs in one thread and every connection fills
    and empties it within one callback (``get_buffer`` then ``buffer_updated``), so they can
    all share it."""
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_BUFFER_SIZE))
    return view


class Connection(asyncio.BufferedProtocol):
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
        self.id = uuid.uuid4()
        base = logger if logger is not None else logging.getLogger("tether")
        if isinstance(base, logging.LoggerAdapter):
            base = base.logger
        self.logger: LoggerLike = _ConnectionLogger(base, {"id": str(self.id)[:8], "peer": "-"})
        protocol.logger = self.logger
        protocol.debug = self.logger.isEnabledFor(logging.DEBUG)
        # Parse no further ahead than the application reads: a peer error that follows a
        # message is then found after the application has handled (and maybe answered) it.
        protocol.pause_after_message = True

        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._read_view = _read_buffer()

        limits = protocol.limits
        # Incoming: fragments waiting for recv(), and how many bytes of them.
        self._queue: collections.deque[Fragment] = collections.deque()
        self._queued_bytes = 0
        self._complete = 0  # messages in the queue whose last fragment is there
        self._max_queue = limits.max_queue
        self._reading_paused = False
        self._resume_scheduled = False
        self._recv_waiter: asyncio.Future[None] | None = None
        self._recv_busy = False

        # Outgoing.
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._send_lock = asyncio.Lock()

        # Pings sent: payload -> (future resolved with the round trip time, time sent).
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        #: Round-trip time of the latest ping answered, in seconds (0 until one is).
        self.latency: float = 0.0
        self._keepalive_task: asyncio.Task[None] | None = None

        self._close_timer: asyncio.TimerHandle | None = None
        self.connection_lost_waiter: asyncio.Future[None] = self.loop.create_future()

    # --- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent (1006 if none), once the connection is closed."""
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception that ``recv()`` and ``send()`` raise once the connection is closed:
        ``ConnectionClosedOK`` or ``ConnectionClosedError``, with both close frames."""
        return self.protocol.close_exc

    @property
    def remote_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, if any."""
        return self.protocol.subprotocol

    @property
    def request(self) -> Request | None:
        """The opening handshake request (``request.path``, ``request.headers``)."""
        return self.protocol.request

    @property
    def response(self) -> Response | None:
        """The opening handshake response."""
        return self.protocol.response

    @property
    def handshake(self) -> Handshake:
        """What the client offered and what was agreed (and, on a server, declined)."""
        return self.protocol.handshake

    @property
    def extensions(self) -> list[Any]:
        return self.protocol.extensions

    async def __aiter__(self) -> AsyncIterator[Data]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def recv(self) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionClosed: the connection closed and no message is left.
            ConcurrencyError: another coroutine is already waiting in ``recv()``.
        """
        if self._recv_busy:
            raise ConcurrencyError(
                "cannot call recv() while another coroutine is already running recv() "
                "or recv_streaming()"
            )
        self._recv_busy = True
        try:
            while self._complete == 0:
                if self._parse_held_back():
                    continue
                # _wait_for_data() inlined: one coroutine less per message received.
                if self.protocol.state is State.CLOSED or self.connection_lost_waiter.done():
                    raise self.close_exc
                waiter: asyncio.Future[None] = self.loop.create_future()
                self._recv_waiter = waiter
                try:
                    await waiter
                finally:
                    self._recv_waiter = None
            # The common case, a message in one fragment, with _pop() inlined: recv() runs
            # once per message on the hot path.
            fragment = self._queue.popleft()
            data = fragment.data
            self._queued_bytes -= len(data)
            if fragment.last:
                self._complete -= 1
                if self._complete == 0 and self.protocol.parsing_paused:
                    self._resume_parsing_soon()
                if self._reading_paused:
                    self._maybe_resume_reading()
                return data
            if self._reading_paused:
                self._maybe_resume_reading()
            pieces = [data]
            while True:
                fragment = self._pop()
                pieces.append(fragment.data)
                if fragment.last:
                    break
            if isinstance(pieces[0], str):
                return "".join(cast(list[str], pieces))
            return b"".join(cast(list[bytes], pieces))
        finally:
            self._recv_busy = False

    async def recv_streaming(self) -> AsyncIterator[Data]:
        """The fragments of the next message as they arrive (``str`` or ``bytes``)."""
        if self._recv_busy:
            raise ConcurrencyError(
                "cannot call recv_streaming() while another coroutine is already running "
                "recv() or recv_streaming()"
            )
        self._recv_busy = True
        try:
            while True:
                while not self._queue:
                    if self._parse_held_back():
                        continue
                    await self._wait_for_data()
                fragment = self._pop()
                yield fragment.data
                if fragment.last:
                    return
        finally:
            self._recv_busy = False

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary. An iterable or async iterable
        of ``str`` or of bytes-like sends one fragmented message, one frame per item.

        Concurrent calls are serialised; a fragmented message is never interleaved.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: the message is of an unsupported type.
        """
        if isinstance(message, (str, bytes, bytearray, memoryview)):
            if self._send_lock.locked():
                # A fragmented message is being sent: wait for its end. What follows runs
                # without yielding, so no other fragmented message can start in between.
                async with self._send_lock:
                    pass
            protocol = self.protocol
            if protocol.state is not State.OPEN:
                raise self.close_exc
            protocol.send_message(message)
            self._flush()
            if self._writing_paused:
                await self._drain()
            return
        if isinstance(message, dict):
            raise TypeError("cannot send a dict; serialise it first (e.g. json.dumps)")
        if isinstance(message, AsyncIterable):
            async with self._send_lock:
                await self._send_fragments_async(message)
            return
        if isinstance(message, Iterable):
            async with self._send_lock:
                await self._send_fragments_async(_aiter(message))
            return
        raise TypeError(f"cannot send {type(message).__name__}")

    def _check_sendable(self) -> None:
        if self.protocol.state is not State.OPEN:
            raise self.close_exc

    async def _send_fragments_async(self, fragments: AsyncIterable[Data]) -> None:
        iterator = aiter(fragments)
        try:
            current = await anext(iterator)
        except StopAsyncIteration:
            return
        text = isinstance(current, str)
        first = True
        while True:
            try:
                following: Data | None = await anext(iterator)
            except StopAsyncIteration:
                following = None
            self._send_fragment(current, text, first, following is None)
            first = False
            if self._writing_paused:
                await self._drain()
            if following is None:
                return
            current = following

    def _send_fragment(self, data: Data, text: bool, first: bool, last: bool) -> None:
        if isinstance(data, str) != text:
            # Finish the message cleanly before reporting the mistake.
            if not first:
                self._check_sendable()
                self.protocol.send_continuation(b"", fin=True)
                self._flush()
            raise TypeError("all fragments of a message must be str, or all bytes-like")
        self._check_sendable()
        if first:
            if text:
                self.protocol.send_text(cast(str, data), fin=last)
            else:
                self.protocol.send_binary(cast(bytes, data), fin=last)
        else:
            self.protocol.send_continuation(data, fin=last)
        self._flush()

    def ping(self, data: str | bytes | None = None) -> asyncio.Future[float]:
        """Send a ping. The returned future resolves with the round-trip time in seconds
        when the matching pong arrives. ``await connection.ping()`` waits for it."""
        if data is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
            if payload in self._pings:
                raise ConcurrencyError("already waiting for a pong with the same data")
        self._check_sendable()
        self.protocol.send_ping(payload)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, self.loop.time())
        self._flush()
        return waiter

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
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
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self.connection_lost_waiter)

    def start_closing(self, code: int, reason: str) -> None:
        """Send the close frame without waiting for the closing handshake to finish.

        A close frame may interrupt a fragmented message being sent (5.4: control frames may
        be injected); the message then never ends, which is legal.
        """
        self.protocol.send_close(code, reason)
        # send_close() parsed what was held back, the peer's close frame maybe included.
        self._process_events()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (e.g. 1011 on a keepalive timeout)."""
        self.logger.info("! failing connection with code %d: %s", code, reason)
        self.protocol.fail(code, reason)
        self._flush()

    # --- for broadcast (layer-internal: used by tether.asyncio.fanout) ------------------------

    @property
    def writing_paused(self) -> bool:
        """Whether the write buffer is above its high-water mark (``send()`` would wait)."""
        return self._writing_paused

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark."""
        await self._drain()

    def send_encoded(self, encoded: EncodedMessage) -> None:
        """Send a message encoded once for several connections, without waiting."""
        self.protocol.send_encoded(encoded)
        self._flush()

    # --- internals: receiving -------------------------------------------------------------------

    def _pop(self) -> Fragment:
        fragment = self._queue.popleft()
        self._queued_bytes -= len(fragment.data)
        if fragment.last:
            self._complete -= 1
            if self._complete == 0 and self.protocol.parsing_paused:
                self._resume_parsing_soon()
        if self._reading_paused:
            self._maybe_resume_reading()
        return fragment

    def _parse_held_back(self) -> bool:
        """The application wants more: parse what ``pause_after_message`` held back. Returns
        whether there was anything to parse."""
        if not self.protocol.parsing_paused:
            return False
        self.protocol.resume_parsing()
        self._process_events()
        return True

    def _resume_parsing_soon(self) -> None:
        """The application took the last complete message: parse on, but only once it has
        run up to its next pause (typically after answering that message)."""
        protocol = self.protocol
        if protocol.buffered == 0:
            # Nothing was held back (the usual case: the peer waits for the answer). Unpausing
            # now parses nothing; bytes that arrive later are parsed in a later callback, after
            # the application's turn, exactly as if the resume had been scheduled. This saves
            # a callback and an empty parse per message.
            protocol.resume_parsing()
            return
        if not self._resume_scheduled:
            self._resume_scheduled = True
            self.loop.call_soon(self._resume_parsing)

    def _resume_parsing(self) -> None:
        self._resume_scheduled = False
        if self.protocol.parsing_paused and self._complete == 0:
            self.protocol.resume_parsing()
            self._process_events()
            if self._reading_paused:
                self._maybe_resume_reading()

    def _maybe_resume_reading(self) -> None:
        # Resume below a quarter of max_queue, or whenever the application would otherwise
        # wait for data that only reading can bring (nothing complete, nothing held back).
        pending = self._queued_bytes + self.protocol.buffered
        if pending <= self._max_queue // 4 or (
            self._complete == 0 and not self.protocol.parsing_paused
        ):
            self._reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    async def _wait_for_data(self) -> None:
        if self.protocol.state is State.CLOSED or self.connection_lost_waiter.done():
            raise self.close_exc
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._recv_waiter = waiter
        try:
            await waiter
        finally:
            self._recv_waiter = None

    def _wake_receiver(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _process_events(self) -> None:
        """Take the sans-I/O protocol's events and output; called after every input."""
        protocol = self.protocol
        queued = False
        for event in protocol.events_received():
            if type(event) is Fragment:
                self._queue.append(event)
                self._queued_bytes += len(event.data)
                if event.last:
                    self._complete += 1
                queued = True
            elif type(event) is Pong:
                self._pong_received(event)
            else:
                self._handle_event(event)
        if queued:
            self._wake_receiver()
        if (
            not self._reading_paused
            and (self._complete > 0 or protocol.parsing_paused)
            and self._queued_bytes + protocol.buffered > self._max_queue
            and self.transport is not None
        ):
            # A complete message waits for the application: stop reading until it catches
            # up. (Never while a message is incomplete: that would wait forever.)
            self._reading_paused = True
            self.transport.pause_reading()
        self._flush()

    def _handle_event(self, event: object) -> None:
        """Other events (handshake, ping, close): overridden by the roles when needed."""

    def _pong_received(self, event: Pong) -> None:
        now = self.loop.time()
        for payload in event.acked:
            entry = self._pings.pop(payload, None)
            if entry is None:
                continue
            waiter, sent = entry
            self.latency = now - sent
            if not waiter.done():
                waiter.set_result(self.latency)

    # --- internals: sending -------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the protocol produced; arm the close timer when the peer should close."""
        protocol = self.protocol
        transport = self.transport
        writes = protocol.data_to_send()
        if writes and transport is not None:
            for data in writes:
                if data:
                    transport.write(data)
                elif transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
        if self._close_timer is None and protocol.close_expected():
            timeout = self.close_timeout
            if timeout is not None and transport is not None:
                self._close_timer = self.loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if self.transport is not None and not self.connection_lost_waiter.done():
            self.logger.info("! timed out waiting for the peer to close the TCP connection")
            self.transport.abort()

    async def _drain(self) -> None:
        while self._writing_paused:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

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
                waiter = self.ping()
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
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            cast(dict[str, Any], cast(Any, self.logger).extra)["peer"] = f"{peer[0]}:{peer[1]}"

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        # One copy of what was received, into a bytes object the parser can keep.
        self.protocol.receive_data(self._read_view[:nbytes].tobytes())
        self._process_events()

    def data_received(self, data: bytes) -> None:
        """Take bytes from the network (what ``buffer_updated`` does, for callers that have a
        bytes object, such as tests or a plain-protocol wrapper)."""
        self.protocol.receive_data(data)
        self._process_events()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._process_events()
        # Returning None closes the transport once our own writes are flushed.
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.protocol.state is not State.CLOSED:
            self.protocol.receive_eof()
            self.protocol.events_received()
            self.protocol.data_to_send()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        closed = self.close_exc
        for waiter, _ in self._pings.values():
            if not waiter.done():
                waiter.set_exception(closed)
                waiter.exception()  # nobody may be waiting: don't warn about it
        self._pings.clear()
        self._writing_paused = False
        for drain in self._drain_waiters:
            if not drain.done():
                drain.set_result(None)
        self._drain_waiters = []
        self._wake_receiver()
        if not self.connection_lost_waiter.done():
            self.connection_lost_waiter.set_result(None)
        self.logger.debug("= connection closed: code %s", self.close_code)


async def _aiter(items: Iterable[Data]) -> AsyncIterator[Data]:
    """An async view of an iterable, so both kinds of fragment sources share one loop."""
    for item in items:
        yield item
