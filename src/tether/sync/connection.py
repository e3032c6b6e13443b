"""The threading connection: a blocking socket driven by a sans-I/O protocol.

Everything about WebSocket itself happens in :mod:`tether.sansio`; this module adds threads, a
clock and a socket.

Who reads the socket. One thread at a time holds the *read role* (``_reading``): it blocks in
``recv`` on the socket, then feeds what came to the protocol under the connection's mutex.

- A thread in :meth:`Connection.recv` that finds no whole message waiting reads the socket
  itself. A closed loop of ``send()`` and ``recv()`` therefore costs no thread switch: the
  data goes from the kernel to the thread that wants it (this is what a thread handing over
  messages costs ``websockets.sync``: about 30 us per message, see bench/README.md).
- Each connection has one background thread. It sends keepalive pings, enforces the close
  timeout, and reads when the application does not: after the application has stayed out of
  ``recv()`` for :data:`IDLE_READ_DELAY`, or at once during the closing handshake. So pings
  are answered, pongs and close frames are seen, and a peer's close is answered while the
  application is busy elsewhere or only sends. It stops reading while more than
  ``limits.max_queue`` bytes of whole messages wait for the application (the asyncio rule).
  When the application comes back to ``recv()`` while the background thread blocks in the
  socket, ``recv()`` waits for that read; the application reads again itself after it.

Who writes. Sending never waits for a read. The protocol's output is queued (``_out``) under the
mutex, in the order the protocol made it, and written by whoever holds ``_write_lock``: a
``send()`` takes it and blocks in ``sendall`` while the peer does not read (the kernel's socket
buffer is the write buffer, so a slow peer blocks ``send()`` instead of growing memory); a
reader that produced a pong or a close frame only writes when nobody else is writing, else it
leaves the bytes to the writer, which takes everything queued before letting go.

Closing. The socket is shut down (which wakes any thread blocked on it) when the close timeout
expires or a write fails, and closed by the background thread once nobody uses it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import select
import socket
import ssl as ssl_module
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from ..connection_info import ConnectionInfo
from ..exceptions import ConcurrencyError, ConnectionClosedOK
from ..fragment_queue import FragmentQueue, StreamDecoder, convert
from ..pings import answered_pings, ping_payload
from ..sansio.codes import CloseCode
from ..sansio.events import Fragment, Pong
from ..sansio.protocol import Protocol, State
from ..typing import Data, LoggerLike

__all__ = ["Connection"]

#: Bytes asked for per ``recv`` call. ``sock.recv(n)`` allocates ``n`` bytes first; above
#: glibc's mmap threshold (128 KiB) every call would map and unmap fresh pages.
READ_SIZE = 65536

#: Seconds the application may stay out of ``recv()`` before the background thread reads for
#: it. Short enough that pings, pongs and close frames are seen promptly; long enough that an
#: application answering each message reads its next one itself.
IDLE_READ_DELAY = 0.05

_monotonic = time.monotonic

# Enum members as module constants: on Python 3.11, ``_OPEN`` goes through the enum
# metaclass's ``__getattr__`` (about 900 instructions, several times per message).
_OPEN = State.OPEN
_CLOSED = State.CLOSED


# --- sockets --------------------------------------------------------------------------------------


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    if timeout <= 0:
        timeout = 0
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    readable, _, _ = select.select([sock], [], [], timeout)
    return bool(readable)


def _wait_writable(sock: socket.socket, timeout: float | None) -> bool:
    if timeout is not None and timeout <= 0:
        timeout = 0
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        return bool(poller.poll(None if timeout is None else timeout * 1000))
    _, writable, _ = select.select([], [sock], [], timeout)
    return bool(writable)


#: ``send`` flags for a write that must not block (Linux, the BSDs, macOS).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class Transport:
    """A connected TCP socket in blocking mode: reads with an optional timeout, whole writes.

    ``recv`` and ``sendall`` may run at the same time in two threads; ``abort`` may run in a
    third and wakes them both.

    Writes that must not block (a reader's pongs and close frames: a reader blocked on a peer
    that does not read would stop reading) go through :meth:`write_nowait`, which keeps what
    the socket does not take at once in ``pending``; the next :meth:`sendall` or
    :meth:`flush` writes it first. The caller serialises every write (one writer at a time).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Bytes taken by :meth:`write_nowait` and not written yet (ready for the wire).
        self.pending = b""
        sock.settimeout(None)

    def recv(self, size: int, timeout: float | None = None) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the stream or when the connection broke.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        try:
            if timeout is not None and not _wait_readable(self.sock, timeout):
                raise TimeoutError("timed out waiting for data")
            return self.sock.recv(size)
        except TimeoutError:
            raise
        except (OSError, ValueError):  # reset, shut down, closed: the connection is lost
            return b""

    def sendall(self, data: bytes | bytearray) -> None:
        if self.pending:
            self._flush(None)
        self.sock.sendall(data)

    def write_nowait(self, data: bytes | bytearray) -> bool:
        """Take ``data`` and write what the socket takes without blocking. Returns whether
        nothing is left in ``pending``.

        Raises:
            OSError: the connection broke.
        """
        return self._send_pending(self.pending + data if self.pending else data)

    def _send_pending(self, data: bytes | bytearray) -> bool:
        if _DONTWAIT:
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
        else:  # no non-blocking flag: leave it all to flush()
            sent = 0
        self.pending = bytes(data[sent:]) if sent < len(data) else b""
        return not self.pending

    def flush(self, timeout: float | None) -> bool:
        """Write ``pending``, waiting at most ``timeout`` seconds for the peer to read.
        Returns whether it is all written.

        Raises:
            OSError: the connection broke.
        """
        return self._flush(timeout)

    def _flush(self, timeout: float | None) -> bool:
        if not self.pending:
            return True
        if timeout is None:
            data, self.pending = self.pending, b""
            self.sock.sendall(data)
            return True
        deadline = _monotonic() + timeout
        while self.pending:
            if not _wait_writable(self.sock, deadline - _monotonic()):
                return False
            if not _DONTWAIT:  # select() said writable: a blocking send writes some
                data, self.pending = self.pending, b""
                self.sock.sendall(data)
                return True
            self._send_pending(self.pending)
        return True

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            if self.pending:
                self._flush(None)
            self.sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        """Wake every thread blocked on the socket; what follows reads EOF or fails to write."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


class TLSTransport(Transport):
    """TLS over a blocking socket with memory BIOs, so that a thread reading and one writing
    never use the TLS state at the same time (``_tls_lock`` guards it; nobody blocks on the
    socket while holding it)."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl_module.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(sock)
        self._incoming = ssl_module.MemoryBIO()
        self._outgoing = ssl_module.MemoryBIO()
        self.ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._tls_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._shut = False
        self._handshake(deadline)

    def _handshake(self, deadline: float | None) -> None:
        while True:
            try:
                self.ssl.do_handshake()
            except ssl_module.SSLWantReadError:
                self._flush_tls()
                timeout = None if deadline is None else deadline - _monotonic()
                if timeout is not None and timeout <= 0:
                    raise TimeoutError("TLS handshake timed out") from None
                data = super().recv(READ_SIZE, timeout)
                if not data:
                    raise ConnectionError("connection closed during the TLS handshake") from None
                self._incoming.write(data)
            else:
                self._flush_tls()
                return

    def _flush_tls(self) -> None:
        with self._write_lock:
            with self._tls_lock:
                data = self._outgoing.read()
            if data:
                super().sendall(data)

    def recv(self, size: int, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            with self._tls_lock:
                if self._shut:
                    data = None
                else:
                    try:
                        return self.ssl.read(size)
                    except ssl_module.SSLWantReadError:
                        data = b""
                    except (ssl_module.SSLZeroReturnError, ssl_module.SSLError):
                        return b""
                    pending = self._outgoing.pending
            if data is None:
                # After our close_notify: drain the socket until the peer closes it.
                raw = super().recv(size, timeout)
                if not raw:
                    return b""
                continue
            if pending:
                self._flush_tls()
            remaining = None if deadline is None else deadline - _monotonic()
            raw = super().recv(READ_SIZE, remaining)
            with self._tls_lock:
                if raw:
                    self._incoming.write(raw)
                else:
                    self._incoming.write_eof()

    def sendall(self, data: bytes | bytearray) -> None:
        with self._write_lock:
            with self._tls_lock:
                self.ssl.write(data)
                out = self._outgoing.read()
            super().sendall(out)

    def write_nowait(self, data: bytes | bytearray) -> bool:
        with self._write_lock:
            with self._tls_lock:
                self.ssl.write(data)
                out = self._outgoing.read()
            return super().write_nowait(out)

    def flush(self, timeout: float | None) -> bool:
        with self._write_lock:
            return self._flush(timeout)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError, ssl_module.SSLError):
            with self._write_lock:
                with self._tls_lock:
                    self._shut = True
                    with contextlib.suppress(ssl_module.SSLError):
                        self.ssl.unwrap()
                    out = self._outgoing.read()
                if out:
                    super().sendall(out)
        super().shutdown_write()


# --- the connection -------------------------------------------------------------------------------


class Connection(ConnectionInfo):
    """A WebSocket connection on a socket, usable from several threads. Subclassed by the server
    and client connections.

    ``for message in connection`` yields messages until the peer closes normally, and raises
    :class:`~tether.exceptions.ConnectionClosedError` if the connection fails.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        logger: LoggerLike | None = None,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        # A plain socket's methods, called directly on the per-message path (TLS: None).
        plain = type(transport) is Transport
        self._sock_recv = transport.sock.recv if plain else None
        self._sock_sendall = transport.sock.sendall if plain else None
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.id = uuid.uuid4()
        peer = "-"
        with contextlib.suppress(OSError):
            address = transport.sock.getpeername()
            if isinstance(address, tuple) and len(address) >= 2:
                peer = f"{address[0]}:{address[1]}"
        self._set_logger(logger, peer)
        # Parse everything as it arrives, but hold a close frame or a peer error found behind a
        # message the application has not taken yet (as the asyncio layer does), so that its
        # answers to that message go first. The next recv() acts on it, or the background
        # thread once the application stays away.
        protocol.hold_end_after_message = True

        # One mutex for the protocol, the queue and the bookkeeping below.
        self._mutex = threading.Lock()
        self._data_cond = threading.Condition(self._mutex)  # recv(), close(): something changed
        self._bg_cond = threading.Condition(self._mutex)  # the background thread's sleep
        self._assembler = FragmentQueue(protocol.limits.max_queue)
        self._reading = False  # a thread holds the read role
        self._recv_busy = False  # the application is in recv() or recv_streaming()
        self._recv_left = 0.0  # when the application last left recv()
        # The background thread sleeps until one of these happens (so that a closed loop of
        # send() and recv() does not wake it for every message).
        self._bg_wake_on_recv_exit = False
        self._bg_wake_on_read_done = False
        self._data_waiters = 0  # threads in _data_cond.wait()

        # Output, in the protocol's order; item i is written once _written > i.
        self._out: collections.deque[bytes | bytearray] = collections.deque()
        self._queued = 0  # items ever appended to _out
        self._written = 0  # items ever written (or dropped, once lost)
        # Items written when the socket failed or was shut down; once set, nothing more is
        # written (``None``: the socket is usable).
        self._lost_at: int | None = None
        self._write_lock = threading.Lock()
        # A reader or the background thread left bytes in transport.pending (the socket did
        # not take them at once): pongs are deferred until they are out.
        self._write_stalled = False
        self._send_lock = threading.Lock()  # one message (maybe fragmented) at a time

        # Pings sent: payload -> (future resolved with the round-trip time, time sent).
        self._pings: dict[bytes, tuple[concurrent.futures.Future[float], float]] = {}
        #: Round-trip time of the latest ping answered, in seconds (0 until one is).
        self.latency: float = 0.0
        self._next_ping: float | None = None
        self._pong_deadline: float | None = None
        self._keepalive_payload: bytes | None = None
        # Ping futures answered, resolved once the mutex is released: a future's callbacks
        # run where it is resolved, and they may well call send().
        self._settled: list[tuple[concurrent.futures.Future[float], float]] = []
        self._close_deadline: float | None = None

        self._thread: threading.Thread | None = None
        self._socket_closed = False

    # --- public API ---------------------------------------------------------------------------

    @property
    def bytes_held(self) -> int:
        """Bytes this connection holds of received messages: unread ones (text counted in
        characters), the one still arriving, and input not parsed yet (as in asyncio)."""
        with self._mutex:
            return self._assembler.size + self.protocol.buffered

    @property
    def remote_address(self) -> Any:
        try:
            return self.transport.sock.getpeername()
        except OSError:
            return None

    @property
    def local_address(self) -> Any:
        try:
            return self.transport.sock.getsockname()
        except OSError:
            return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Data]:
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as the connection is open.
            decode: ``False`` returns a text message as UTF-8 ``bytes``, ``True`` returns a
                binary message decoded from UTF-8 as ``str``; ``None`` (default) neither.

        Raises:
            TimeoutError: no whole message arrived within ``timeout``. The connection stays
                usable: a message in progress goes on arriving for the next call.
            ConnectionClosed: the connection is closed and no message is left.
            ConcurrencyError: another thread is already in ``recv()`` or ``recv_streaming()``.
            UnicodeDecodeError: ``decode=True`` and a binary message is not UTF-8 (the message
                is consumed; the connection stays usable).
        """
        # The mutex is held throughout, except while blocking (_read_or_wait releases it).
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._recv_busy:
                raise ConcurrencyError(
                    "cannot call recv() while another thread is already running recv() or "
                    "recv_streaming()"
                )
            assembler = self._assembler
            protocol = self.protocol
            if not assembler.complete:
                self._recv_busy = True
                try:
                    deadline = None if timeout is None else _monotonic() + timeout
                    while not assembler.complete:
                        if (
                            deadline is None
                            and not self._reading
                            and not protocol.holding
                            and not self._socket_closed
                            and protocol.state is not _CLOSED
                        ):
                            # _read_or_wait()'s usual case, inlined: read the socket.
                            self._reading = True
                            self._read(None)
                        else:
                            self._read_or_wait(deadline)
                finally:
                    self._recv_busy = False
                    if self._bg_wake_on_recv_exit:
                        self._bg_wake_on_recv_exit = False
                        self._bg_cond.notify()
            message = assembler.pop_message()
            self._recv_left = _monotonic()
            # _after_pop(), inlined.
            if assembler.complete == 0 and not protocol.holding:
                protocol.caught_up()
        finally:
            mutex.release()
            if self._settled:
                self._settle()
        if decode is not None:
            return convert(message, decode)
        return message

    def recv_streaming(
        self, timeout: float | None = None, decode: bool | None = None
    ) -> Iterator[Data]:
        """The fragments of the next message as they arrive (``str`` or ``bytes``).

        ``timeout`` bounds the wait for each fragment (``TimeoutError``); an abandoned
        iteration leaves the rest of the message to the next ``recv_streaming()`` call.
        ``decode`` is as for :meth:`recv`, fragment by fragment (a character split across
        fragments is decoded whole).
        """
        with self._mutex:
            if self._recv_busy:
                raise ConcurrencyError(
                    "cannot call recv_streaming() while another thread is already running "
                    "recv() or recv_streaming()"
                )
            self._recv_busy = True
        decoder = None if decode is None else StreamDecoder(decode)
        try:
            while True:
                fragment = self._wait_fragment(timeout)
                if decoder is None:
                    yield fragment.data
                else:
                    yield decoder.convert(fragment.data, fragment.last)
                if fragment.last:
                    return
        finally:
            with self._mutex:
                self._recv_busy = False
                self._recv_left = _monotonic()
                if self._bg_wake_on_recv_exit:
                    self._bg_wake_on_recv_exit = False
                    self._bg_cond.notify()

    def send(
        self, message: Data | bytearray | memoryview | Iterable[Data], text: bool | None = None
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary. An iterable of ``str`` or of
        bytes-like sends one fragmented message, one frame per item.

        ``text=True`` sends bytes-like data (which must be UTF-8; it is not checked) as text,
        ``text=False`` sends a ``str`` as binary (its UTF-8).

        Blocks while the peer does not read (at the kernel's socket buffer). Safe to call from
        any thread, also while another thread is in ``recv()``; concurrent calls are
        serialised, and a fragmented message is never interleaved with another message.

        Raises:
            ConnectionClosed: the connection is closing or closed, or broke while sending.
            TypeError: the message is of an unsupported type.
        """
        if isinstance(message, (str, bytes, bytearray, memoryview)):
            # A whole message needs no send lock: it goes to the protocol in one step under
            # the mutex, unless a fragmented message is in progress (its sender holds the
            # send lock from its first fragment to its last): then wait for its end.
            mutex = self._mutex
            mutex.acquire()
            try:
                protocol = self.protocol
                if self._send_lock.locked():
                    mutex.release()
                    with self._send_lock:
                        mutex.acquire()
                        direct, writes, mine = self._queue_message(message, text)
                elif protocol.state is _OPEN:
                    # _queue_message(), inlined for the usual case.
                    protocol.send_message(message, text)
                    writes = protocol.data_to_send()
                    direct = not self._out and self._write_lock.acquire(False)
                    if not direct:
                        self._out.extend(writes)
                        self._queued += len(writes)
                        mine = self._queued
                else:
                    raise protocol.close_exc
            finally:
                mutex.release()
            if not direct:
                self._write_until(mine)
                return
            transport = self.transport
            sock_sendall = self._sock_sendall
            try:
                for data in writes:
                    if sock_sendall is not None and not transport.pending:
                        sock_sendall(data)
                    else:
                        transport.sendall(data)
            except OSError as exc:
                self._write_failed(exc)
                raise self.protocol.close_exc from None
            # What others queued meanwhile, a deferred pong: _write_out writes it and releases
            # the write lock. Usually there is nothing: release it here.
            mutex.acquire()
            if self._out or self._write_stalled or self.protocol.defer_pongs:
                mutex.release()
                self._write_out()
            else:
                self._write_lock.release()
                mutex.release()
            return
        if isinstance(message, dict):
            raise TypeError("cannot send a dict; serialise it first (e.g. json.dumps)")
        if isinstance(message, Iterable):
            with self._send_lock:
                self._send_fragments(message, text)
            return
        raise TypeError(f"cannot send {type(message).__name__}")

    def ping(self, data: str | bytes | None = None) -> concurrent.futures.Future[float]:
        """Send a ping. The returned future resolves with the round-trip time in seconds when
        the matching pong arrives: ``latency = connection.ping().result(timeout=10)``. It fails
        with ``ConnectionClosed`` if the connection closes first.

        Raises:
            ConnectionClosed: the connection is not open.
            ConcurrencyError: a ping with the same data is waiting for its pong.
        """
        with self._mutex:
            waiter = self._send_ping(ping_payload(self._pings, data))
            self._bg_cond.notify()
        self._flush()
        return waiter

    def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        with self._mutex:
            if self.protocol.state is not _OPEN:
                raise self.protocol.close_exc
            self.protocol.send_pong(data.encode() if isinstance(data, str) else bytes(data))
            mine = self._take_output()
        self._write_until(mine)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait until the connection is closed: at most
        ``close_timeout`` seconds, after which the TCP connection is dropped. Returns at once
        when it is already closed; safe to call from any thread and more than once."""
        self.start_closing(code, reason)
        timeout = self.close_timeout
        if not self.wait_closed(None if timeout is None else timeout + 0.1):
            # The background thread may be blocked in the socket with a longer timeout: the
            # one who waits enforces the close timeout.
            self.logger.info("! timed out waiting for the peer to close the connection")
            with self._mutex:
                self._connection_lost()
            self.wait_closed()

    def start_closing(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send the close frame without waiting for the closing handshake to finish."""
        with self._mutex:
            if self.protocol.state is _OPEN:
                self.protocol.send_close(code, reason)
                # send_close() parsed what was held back, maybe the peer's close frame.
                self._process_events()
                self._bg_cond.notify()
        self._flush()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed and its socket released. Returns whether it is.

        Without ``timeout``, waits for the closing handshake and the close timeout."""
        thread = self._thread
        if thread is None:
            # Never started (the opening handshake did not succeed): nothing else uses it.
            if not self._socket_closed:
                self._release_socket()
            return True
        if thread is threading.current_thread():
            # From a ping future's callback, in the background thread: it releases the socket
            # once this returns.
            return self._socket_closed
        thread.join(timeout)
        return not thread.is_alive()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (e.g. 1011 on a keepalive timeout)."""
        self.logger.info("! failing connection with code %d: %s", code, reason)
        with self._mutex:
            self.protocol.fail(code, reason)
            self._process_events()
            self._bg_cond.notify()
        self._flush()

    # --- internals: receiving -------------------------------------------------------------------

    def _after_pop(self) -> None:
        """The application took a message (mutex held): caught up at once if nothing was held
        (else its next call to ``recv()`` acts on the held end, after it had its turn)."""
        protocol = self.protocol
        if self._assembler.complete == 0 and not protocol.holding:
            protocol.caught_up()

    def _wait_fragment(self, timeout: float | None) -> Fragment:
        deadline = None if timeout is None else _monotonic() + timeout
        try:
            with self._mutex:
                assembler = self._assembler
                while not assembler.fragments:
                    self._read_or_wait(deadline)
                fragment = assembler.pop()
                if fragment.last:
                    self._after_pop()
                return fragment
        finally:
            if self._settled:
                self._settle()

    def _settle(self) -> None:
        """Resolve the ping futures answered meanwhile (mutex not held)."""
        with self._mutex:
            settled, self._settled = self._settled, []
        for waiter, latency in settled:
            if not waiter.done():
                waiter.set_result(latency)

    def _read_or_wait(self, deadline: float | None) -> None:
        """Nothing to return yet (mutex held; released while blocking): parse what was held
        back, or read the socket, or wait for the thread reading it."""
        protocol = self.protocol
        if protocol.holding:
            # The application is back for more: act on the close or error held behind what
            # it read.
            protocol.caught_up()
            if self._process_events():
                self._flush_unlocked()
            return
        if self._socket_closed or protocol.state is _CLOSED:
            raise protocol.close_exc
        remaining = None
        if deadline is not None:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise TimeoutError("no message within the timeout")
        if self._reading:
            self._data_waiters += 1
            try:
                self._data_cond.wait(remaining)
            finally:
                self._data_waiters -= 1
            return
        self._reading = True
        try:
            self._read(remaining)
        except TimeoutError:
            raise TimeoutError("no message within the timeout") from None

    def _read(self, timeout: float | None) -> None:
        """Read once and feed the protocol. Called with the mutex held and the read role taken;
        releases the mutex while blocking on the socket and while writing what the protocol
        answered, gives up the role, and returns with the mutex held."""
        mutex = self._mutex
        mutex.release()
        try:
            sock_recv = self._sock_recv
            if timeout is None and sock_recv is not None:
                # Transport.recv() inlined, for a plain socket and no timeout.
                try:
                    data = sock_recv(READ_SIZE)
                except (OSError, ValueError):  # reset, shut down, closed: the connection is lost
                    data = b""
            else:
                data = self.transport.recv(READ_SIZE, timeout)
        finally:
            mutex.acquire()
            self._reading = False
            if self._write_lock.locked():
                # A thread is writing, maybe blocked on a peer that does not read: pongs
                # wait until it is done, and only the latest ping is answered then (what
                # asyncio does above the write buffer's high-water mark). _write_out resumes.
                self.protocol.pause_output()
            if self._bg_wake_on_read_done:
                self._bg_wake_on_read_done = False
                self._bg_cond.notify()
            # Whoever waits for this read wakes up however it ends: with data (parsed below,
            # before the mutex is let go), or with a timeout, after which a recv() waiting for
            # the background thread's read must take the read role itself, or nobody reads.
            if self._data_waiters:
                self._data_cond.notify_all()
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        output = self._process_events()
        if output:
            self._flush_unlocked()

    def _flush_unlocked(self) -> None:
        """Write queued output without blocking, unless another thread is writing (that thread
        writes it), from a reader or the background thread holding the mutex. What the socket
        does not take at once is left to the background thread (see :meth:`_write_nowait`)."""
        if not self._write_stalled and self._write_lock.acquire(False):
            self._mutex.release()
            try:
                self._write_nowait()
            finally:
                self._mutex.acquire()

    def _process_events(self) -> bool:
        """Take the protocol's events and output (mutex held). Returns whether there is output
        to write."""
        protocol = self.protocol
        for event in protocol.events_received():
            if type(event) is Fragment:
                self._assembler.put(event)
            elif type(event) is Pong:
                self._pong_received(event)
        writes = protocol.data_to_send()
        if writes and self._lost_at is None:
            self._out.extend(writes)
            self._queued += len(writes)
        if protocol.state is not _OPEN:
            if (
                self._close_deadline is None
                and self.close_timeout is not None
                and protocol.close_expected()
            ):
                self._close_deadline = _monotonic() + self.close_timeout
                self._bg_cond.notify()
            if protocol.state is _CLOSED:
                self._data_cond.notify_all()
                self._bg_cond.notify()
        return bool(self._out)

    def _pong_received(self, event: Pong) -> None:
        now = _monotonic()
        answered = answered_pings(self._pings, event.acked, now)
        if answered:
            self.latency = answered[-1][1]
            self._settled.extend(answered)
        if self._keepalive_payload is not None and self._keepalive_payload in event.acked:
            # As the asyncio layer does: the next keepalive ping one interval after the pong.
            self._keepalive_payload = None
            self._pong_deadline = None
            if self.ping_interval is not None:
                self._next_ping = now + self.ping_interval

    # --- internals: sending -------------------------------------------------------------------

    def _take_output(self) -> int:
        """Queue the protocol's output (mutex held); return the count to write up to."""
        writes = self.protocol.data_to_send()
        if writes and self._lost_at is None:
            self._out.extend(writes)
            self._queued += len(writes)
        return self._queued

    def _queue_message(
        self, message: str | bytes | bytearray | memoryview, text: bool | None
    ) -> tuple[bool, list[bytes | bytearray], int]:
        """A whole message to the protocol (mutex held). Returns whether the caller writes it
        directly (it took the write lock: nobody is writing, nothing is queued), the bytes to
        write then, else the output count to write up to."""
        protocol = self.protocol
        if protocol.state is not _OPEN:
            raise protocol.close_exc
        protocol.send_message(message, text)
        writes = protocol.data_to_send()
        if not self._out and self._write_lock.acquire(False):
            return True, writes, 0
        self._out.extend(writes)
        self._queued += len(writes)
        return False, writes, self._queued

    def _send_ping(self, payload: bytes) -> concurrent.futures.Future[float]:
        if self.protocol.state is not _OPEN:
            raise self.protocol.close_exc
        self.protocol.send_ping(payload)
        waiter: concurrent.futures.Future[float] = concurrent.futures.Future()
        self._pings[payload] = (waiter, _monotonic())
        self._take_output()
        return waiter

    def _send_fragments(self, fragments: Iterable[Data], text: bool | None) -> None:
        iterator = iter(fragments)
        try:
            current = next(iterator)
        except StopIteration:
            return
        is_str = isinstance(current, str)
        as_text = is_str if text is None else text
        first = True
        while True:
            try:
                following: Data | None = next(iterator)
            except StopIteration:
                following = None
            self._send_fragment(current, is_str, as_text, first, following is None)
            first = False
            if following is None:
                return
            current = following

    def _send_fragment(self, data: Data, is_str: bool, text: bool, first: bool, last: bool) -> None:
        with self._mutex:
            protocol = self.protocol
            if protocol.state is not _OPEN:
                raise protocol.close_exc
            if isinstance(data, str) != is_str:
                # Finish the message cleanly before reporting the mistake.
                if not first:
                    protocol.send_continuation(b"", fin=True)
                    mine = self._take_output()
                    self._mutex.release()
                    try:
                        self._write_until(mine)
                    finally:
                        self._mutex.acquire()
                raise TypeError("all fragments of a message must be str, or all bytes-like")
            if not isinstance(data, (str, bytes, bytearray, memoryview)):
                raise TypeError(f"cannot send a fragment of type {type(data).__name__}")
            if first:
                if text:
                    protocol.send_text(data, fin=last)
                else:
                    payload = data.encode() if isinstance(data, str) else data
                    protocol.send_binary(payload, fin=last)
            else:
                protocol.send_continuation(data, fin=last)
            mine = self._take_output()
        self._write_until(mine)

    def _write_until(self, mine: int) -> None:
        """Write until output item ``mine`` is out, blocking on the write lock and the socket.

        Raises:
            ConnectionClosed: the connection broke before that item was written.
        """
        self._write_lock.acquire()
        self._write_out()
        lost_at = self._lost_at
        if lost_at is not None and lost_at < mine:
            with self._mutex:
                raise self.protocol.close_exc

    def _flush(self) -> None:
        """Write queued output unless another thread is writing (that thread writes it).
        Called without the mutex, so it also resolves the ping futures answered meanwhile."""
        if self._settled:
            self._settle()
        with self._mutex:
            if not self._out or not self._write_lock.acquire(False):
                return
        self._write_out()

    def _write_out(self) -> None:
        """Write everything queued; called holding the write lock, which it releases. The
        release happens under the mutex, so bytes queued meanwhile are never left behind."""
        mutex = self._mutex
        out = self._out
        while True:
            mutex.acquire()
            if not out:
                if self.transport.pending:
                    data = None  # what a non-blocking writer left: write it out first
                elif self.protocol.defer_pongs and self._resume_output():
                    mutex.release()
                    continue
                else:
                    self._write_stalled = False
                    self._write_lock.release()
                    mutex.release()
                    return
            else:
                data = out.popleft()
            mutex.release()
            try:
                if data is None:
                    self.transport.flush(None)
                    continue
                if data:
                    self.transport.sendall(data)
                else:
                    self.transport.shutdown_write()
            except OSError as exc:
                self._write_failed(exc)
                return
            with mutex:
                self._written += 1

    def _write_nowait(self) -> None:
        """:meth:`_write_out` for a thread that must not block (it reads, or keeps the
        timers): what the socket does not take at once waits in ``transport.pending``, pongs
        are deferred meanwhile (only the latest ping is answered), and the background thread
        writes it when the socket becomes writable, or a sender before its own message."""
        mutex = self._mutex
        out = self._out
        transport = self.transport
        while True:
            mutex.acquire()
            if not out or transport.pending:
                if transport.pending:
                    self._write_stalled = True
                    self.protocol.pause_output()
                    self._bg_cond.notify()
                elif self.protocol.defer_pongs and self._resume_output():
                    mutex.release()
                    continue
                self._write_lock.release()
                mutex.release()
                return
            # Everything queued up to the end of the stream, in one write: a read full of
            # pings makes thousands of pongs, which then cost one system call and, when the
            # peer does not read, one bytes object in transport.pending.
            pieces = []
            while out and out[0]:
                pieces.append(out.popleft())
            data = b"".join(pieces) if len(pieces) != 1 else pieces[0]
            if not data:
                out.popleft()
            mutex.release()
            try:
                if data:
                    transport.write_nowait(data)
                else:
                    transport.shutdown_write()
            except OSError as exc:
                self._write_failed(exc)
                return
            with mutex:
                self._written += len(pieces) if pieces else 1

    def _write_failed(self, exc: OSError) -> None:
        """A write of ours broke the connection (write lock held, mutex not): the connection
        is lost and the write lock given back."""
        self.logger.debug("! write failed: %s", exc)
        with self._mutex:
            self._connection_lost()
            self._write_lock.release()

    def _resume_output(self) -> bool:
        """The writer is done (mutex held): answer the latest ping deferred meanwhile.
        Returns whether there is output to write."""
        protocol = self.protocol
        if not protocol.resume_output():
            return False
        writes = protocol.data_to_send()
        if self._lost_at is not None:
            return False
        self._out.extend(writes)
        self._queued += len(writes)
        return True

    def _connection_lost(self) -> None:
        """The socket broke (mutex held): nothing more is written; readers see EOF."""
        if self._lost_at is None:
            self._lost_at = self._written
            self._written += len(self._out)
            self._out.clear()
            self.transport.abort()
            if self.protocol.state is not _CLOSED:
                self.protocol.receive_eof()
                self.protocol.events_received()
                self.protocol.data_to_send()
            self._data_cond.notify_all()
            self._bg_cond.notify()

    # --- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (after the opening handshake)."""
        if self.ping_interval is not None:
            self._next_ping = _monotonic() + self.ping_interval
        with self._mutex:
            self._recv_left = _monotonic()
            output = self._process_events()  # frames that came with the handshake response
        if output:
            self._flush()
        self._thread = threading.Thread(
            target=self._background, name=f"tether-{str(self.id)[:8]}", daemon=True
        )
        self._thread.start()

    def _background(self) -> None:
        try:
            self._background_loop()
        except Exception:  # a bug of ours: log it, and drop the connection
            self.logger.error("! background thread failed", exc_info=True)
            with self._mutex:
                self._connection_lost()
        finally:
            self._release_socket()

    def _background_loop(self) -> None:
        mutex = self._mutex
        protocol = self.protocol
        while True:
            mutex.acquire()
            try:
                if protocol.state is _CLOSED:
                    return
                now = _monotonic()
                if self._close_deadline is not None and now >= self._close_deadline:
                    self.logger.info("! timed out waiting for the peer to close the connection")
                    self._close_deadline = None
                    self._connection_lost()
                    continue
                if self._pong_deadline is not None and now >= self._pong_deadline:
                    self._pong_deadline = None
                    if protocol.state is _OPEN:
                        self.logger.info(
                            "! failing connection with code 1011: keepalive ping timeout"
                        )
                        protocol.fail(
                            CloseCode.INTERNAL_ERROR,
                            f"keepalive ping timeout: no pong within {self.ping_timeout:g} s",
                        )
                        if self._process_events():
                            self._flush_unlocked()
                    continue
                if self._next_ping is not None and now >= self._next_ping:
                    self._keepalive_ping(now)
                    self._flush_unlocked()
                    continue
                if self._write_stalled and self._write_lock.acquire(False):
                    # What a reader could not write without blocking: write it as the peer
                    # reads, and go back to the timers at their next deadline.
                    self._finish_stalled_write(self._next_deadline(now))
                    continue
                read_now = False
                wait: float | None = None
                if protocol.holding:
                    # A close or an error held behind a message the application has not
                    # read: its next recv() acts on it, or this thread once it stays away
                    # (also when the queue is over max_queue: asyncio's hold timer).
                    if self._recv_busy:
                        self._bg_wake_on_recv_exit = True
                    else:
                        idle_until = self._recv_left + IDLE_READ_DELAY
                        if now >= idle_until:
                            protocol.caught_up()
                            if self._process_events():
                                self._flush_unlocked()
                            continue
                        wait = idle_until - now
                elif protocol.close_rcvd is not None or not self._assembler.over_limit(
                    protocol.buffered
                ):
                    if protocol.state is not _OPEN:
                        # The closing handshake goes on without the application (after the
                        # peer's close frame, what comes is not parsed: read it whatever the
                        # queue holds, until the end of the stream).
                        read_now = True
                    elif self._recv_busy:
                        self._bg_wake_on_recv_exit = True
                    elif self._pings:
                        read_now = True  # for the pong, and an exact round-trip time
                    else:
                        idle_until = self._recv_left + IDLE_READ_DELAY
                        if now >= idle_until:
                            read_now = True
                        else:
                            wait = idle_until - now
                    if read_now and self._reading:
                        read_now = False
                        self._bg_wake_on_read_done = True
                if read_now:
                    self._reading = True
                    with contextlib.suppress(TimeoutError):
                        self._read(self._next_deadline(now))
                    continue
                deadline = self._next_deadline(now)
                if deadline is not None and (wait is None or deadline < wait):
                    wait = deadline
                self._bg_cond.wait(wait)
            finally:
                mutex.release()
                if self._settled:
                    self._settle()

    def _finish_stalled_write(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for the socket to take ``transport.pending``, then write the
        rest of the queue as :meth:`_write_nowait` does. Called holding the mutex and the
        write lock; releases the write lock, and returns holding the mutex."""
        mutex = self._mutex
        mutex.release()
        try:
            try:
                flushed = self.transport.flush(timeout)
            except OSError as exc:
                self._write_failed(exc)
                return
            if flushed:
                with mutex:
                    self._write_stalled = False
                self._write_nowait()  # releases the write lock
            else:
                self._write_lock.release()
        finally:
            mutex.acquire()

    def _next_deadline(self, now: float) -> float | None:
        """Seconds until the background thread has something to do on a timer (mutex held)."""
        deadlines = [
            d for d in (self._close_deadline, self._pong_deadline, self._next_ping) if d is not None
        ]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _keepalive_ping(self, now: float) -> None:
        assert self.ping_interval is not None
        self._next_ping = now + self.ping_interval
        if self.protocol.state is not _OPEN:
            self._next_ping = None
            return
        payload = ping_payload(self._pings, None)
        self._send_ping(payload)
        if self.ping_timeout is not None:
            self._keepalive_payload = payload
            self._pong_deadline = now + self.ping_timeout
            self._next_ping = None  # until the pong

    def _release_socket(self) -> None:
        """Close the socket once nobody reads or writes it, and settle what waits."""
        with self._mutex:
            if self.protocol.state is not _CLOSED:
                self._connection_lost()
            while self._reading:
                self.transport.abort()
                self._data_waiters += 1
                try:
                    self._data_cond.wait(0.1)
                finally:
                    self._data_waiters -= 1
            # A message still arriving will never end: free it now (as asyncio does).
            self._assembler.drop_incomplete()
            closed = self.protocol.close_exc
            unanswered = [waiter for waiter, _ in self._pings.values()]
            self._pings.clear()
        self._settle()
        for waiter in unanswered:
            if not waiter.done():
                waiter.set_exception(closed)
        with self._write_lock:
            with self._mutex:
                self._socket_closed = True
                self._connection_lost()  # after a clean close: nothing more is written
                self.transport.close()
                self._data_cond.notify_all()
        self.logger.debug("= connection closed: code %s", self.close_code)
