"""The WebSocket connection as a state machine: bytes in, events and bytes out (RFC 6455 5-7).

Drive it with five calls::

    protocol.receive_data(chunk)        # bytes from the network (or receive_eof() at its end)
    for event in protocol.events_received(): ...
    for data in protocol.data_to_send(): transport.write(data)   # b"" means: half-close
    protocol.close_expected()           # arm a timer: the peer should close the TCP connection

and send with ``send_text``, ``send_binary``, ``send_message``, ``send_continuation``,
``send_ping``, ``send_pong`` and ``send_close``.

States and who moves them. They change only in this module, through :meth:`Protocol._set_state`
(which logs each transition); the two roles call :meth:`Protocol._open` and
:meth:`Protocol._end_failed_handshake`, and ``state`` is read-only (a test checks both)::

    CONNECTING --handshake succeeds--> OPEN --close sent or received--> CLOSING --EOF--> CLOSED
    CONNECTING --handshake fails-----> CLOSED (after the rejection is written)
    OPEN / CLOSING --EOF received----> CLOSED (abnormal closure 1006 if no close frame came)

The close direction stays visible: ``close_sent``, ``close_rcvd`` and ``close_rcvd_then_sent``
(``True``: the peer closed first; ``False``: we did).

Peer errors become close codes at one choke point, :meth:`Protocol.receive_data`:
``ProtocolError`` -> 1002, ``UnicodeDecodeError`` -> 1007, ``PayloadTooBig`` -> 1009, anything
else -> 1011 (details are logged, never sent). The exception is kept in ``parser_exc`` so the
I/O layer can chain it. API misuse raises :class:`~tether.exceptions.InvalidState` and leaves the
connection alone.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Hashable
from typing import TypeAlias

from ..exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionLostDuringHandshake,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from ..extensions.base import Extension
from ..limits import Limits
from ..typing import LoggerLike
from .codes import OK_CLOSE_CODES, CloseCode, Opcode, is_valid_close_code
from .events import BinaryMessage, CloseReceived, Fragment, Ping, Pong, TextMessage
from .frames import Close, Frame, FrameParser, masked_frame_into, serialize_frame, unmasked_header
from .handshake import Handshake
from .http11 import Request, Response
from .messages import IncomingMessage
from .streams import StreamReader

__all__ = ["EncodedMessage", "Event", "MessageEncoder", "Protocol", "Side", "State"]

Event: TypeAlias = (
    TextMessage | BinaryMessage | Fragment | Ping | Pong | CloseReceived | Request | Response
)

#: Unmasked payloads of at least this many bytes are written apart from their header.
SPLIT_WRITE_SIZE = 65536

#: Close reasons we write ourselves are cut to fit a control frame (125 - 2 bytes of code).
_MAX_REASON = 123


class Side(enum.Enum):
    """Which end of the connection this protocol plays."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """Connection states (RFC 6455 section 4 and 7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# The members the per-message path compares with, as module constants: on Python 3.11 an
# attribute of an enum class (``State.OPEN``) goes through ``EnumType.__getattr__``, about 900
# instructions each, seven times per message received and sent.
_CONNECTING = State.CONNECTING
_OPEN = State.OPEN
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT

#: Shared by every protocol built without ``limits`` (frozen; validating a new one costs more
#: than the rest of the constructor), and the default logger.
_DEFAULT_LIMITS = Limits()
_DEFAULT_LOGGER = logging.getLogger("tether.protocol")


def _truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= _MAX_REASON:
        return reason
    return data[: _MAX_REASON - 3].decode(errors="ignore") + "..."


class Protocol:
    """Common base of :class:`~tether.sansio.server.ServerProtocol` and
    :class:`~tether.sansio.client.ClientProtocol`.

    Args:
        side: which end this is; a client masks what it sends, a server requires masking.
        state: start in ``OPEN`` to skip the opening handshake (tests, or after a handshake
            done elsewhere).
        limits: sizes enforced on input (see :class:`~tether.limits.Limits`).
        assemble: ``True`` (default) to receive whole messages (``TextMessage``,
            ``BinaryMessage``), ``False`` to receive each frame's data as a ``Fragment``.
        logger: where to log; ``logging.getLogger("tether.protocol")`` by default.
    """

    # No per-instance __dict__: a server keeps one of these per idle connection (issue 13),
    # and ~40 attributes overflow CPython's shared-key dicts (1.6 KB each). mypyc's native
    # classes have no __dict__ either, so this changes nothing for the compiled build.
    __slots__ = (
        "_behind",
        "_budget",
        "_discard",
        "_events",
        "_held",
        "_mask",
        "_message",
        "_message_done",
        "_out_opcode",
        "_parser",
        "_pings",
        "_spare",
        "_state",
        "_writes",
        "assemble",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "debug",
        "defer_pongs",
        "eof_rcvd",
        "eof_sent",
        "extensions",
        "handshake",
        "handshake_exc",
        "hold_end_after_message",
        "limits",
        "logger",
        "parser_exc",
        "parsing_stopped",
        "pong_due",
        "reader",
        "request",
        "response",
        "reuse_output",
        "side",
    )

    def __init__(
        self,
        side: Side,
        *,
        state: State = State.OPEN,
        limits: Limits | None = None,
        assemble: bool = True,
        logger: LoggerLike | None = None,
    ) -> None:
        self.side = side
        self.limits = limits if limits is not None else _DEFAULT_LIMITS
        self.assemble = assemble
        self.logger: LoggerLike = logger if logger is not None else _DEFAULT_LOGGER
        #: Cheap guard for debug logs on the hot path.
        self.debug = self.logger.isEnabledFor(logging.DEBUG)

        self._state = state
        self.extensions: list[Extension] = []
        #: The opening handshake: the request and response, and what was offered and agreed.
        self.request: Request | None = None
        self.response: Response | None = None
        self.handshake = Handshake()

        # Handshake input; once the handshake succeeds, what remains goes to the frame parser.
        self.reader = StreamReader()
        self._parser: FrameParser | None = None
        self._discard = False  # after a close frame or a failure, input is dropped
        #: Hold the end of the connection behind unread messages (the I/O layer sets this).
        #: After each complete message the protocol is *behind* until :meth:`caught_up`:
        #: meanwhile it parses on (data, pings and pongs are handled as they come), but a
        #: close frame or a peer error found then is held, unacted on, until the application
        #: has taken the messages before it, so that answers to a message precede the close
        #: (strict Autobahn 3.x, 4.x, 5.15). See :mod:`tether.asyncio.connection`.
        self.hold_end_after_message = False
        self._behind = False
        self._held: Frame | Exception | None = None
        self._message_done = False
        # The message budget (see set_message_budget): None, or whole messages the parser may
        # still produce.
        self._budget: int | None = None
        #: Whether parsing waits for :meth:`set_message_budget` (the budget is spent). Read
        #: it; only :meth:`set_message_budget` and the parser change it.
        self.parsing_stopped = False

        self._events: list[Event] = []
        self._writes: list[bytes | bytearray] = []
        #: Set by an I/O layer that writes what :meth:`data_to_send` returns at once and can
        #: tell when the transport kept no reference to it: masked frames of at least
        #: ``SPLIT_WRITE_SIZE`` bytes are then built in a ``bytearray``, which the layer may
        #: hand back with :meth:`recycle_output` to build the next one of the same size in
        #: (no fresh frame-sized allocation, and no page faults, per large message sent).
        self.reuse_output = False
        self._spare: bytearray | None = None

        # Close handshake bookkeeping.
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.eof_sent = False
        self.eof_rcvd = False
        #: The peer's error that made us fail the connection, or the handshake's failure.
        self.parser_exc: Exception | None = None
        self.handshake_exc: Exception | None = None

        # The fragmented message being received, and the UTF-8 probe of a text frame still
        # arriving (one object for the connection's lifetime: loops may hold it in a local).
        self._message = IncomingMessage()

        # Outgoing fragmented message in progress (send_text(fin=False) ... send_continuation).
        self._out_opcode: Opcode | None = None

        # Payloads of pings sent and not answered yet, oldest first.
        self._pings: list[bytes] = []
        #: True between :meth:`pause_output` and :meth:`resume_output` (the I/O layer's write
        #: buffer is full): a ping is then not answered at once; only the latest one's payload
        #: is kept in ``pong_due`` and answered on resume (5.5.3 allows answering only the most
        #: recent ping), so that a flood of pings whose pongs the peer does not read cannot grow
        #: what we write.
        self.defer_pongs = False
        self.pong_due: bytes | None = None

        self._mask = side is Side.CLIENT

        if state is State.OPEN:
            self._start_frames()

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, state: State) -> None:
        """The one place where the state changes after ``__init__``."""
        if self.debug:
            self.logger.debug("= connection is %s", state.name)
        self._state = state

    def _open(self) -> None:
        """The opening handshake succeeded: OPEN, and what followed the head is frames."""
        self._set_state(State.OPEN)
        self._start_frames()
        self._receive_frames()

    def _end_failed_handshake(self) -> None:
        """The opening handshake failed (and any answer is written): drop input, close."""
        self._discard = True
        if not self.eof_sent:
            self.send_eof()
        self._set_state(State.CLOSED)

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, if any."""
        return self.handshake.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received (1005 when the frame had none, 1006 with no frame), once
        the connection is CLOSED; ``None`` before."""
        if self._state is not State.CLOSED:
            return None
        if self.close_rcvd is None:
            return CloseCode.ABNORMAL_CLOSURE
        return self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        if self._state is not State.CLOSED:
            return None
        return "" if self.close_rcvd is None else self.close_rcvd.reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception to raise when the application uses a closed connection."""
        exc: ConnectionClosed
        if (
            self.close_rcvd is not None
            and self.close_sent is not None
            and self.close_rcvd.code in OK_CLOSE_CODES
            and self.close_sent.code in OK_CLOSE_CODES
        ):
            exc = ConnectionClosedOK(self.close_rcvd, self.close_sent, self.close_rcvd_then_sent)
        else:
            exc = ConnectionClosedError(self.close_rcvd, self.close_sent, self.close_rcvd_then_sent)
        exc.__cause__ = self.parser_exc
        return exc

    def _start_frames(self) -> None:
        """Switch from the HTTP head to frames; bytes already received are frames."""
        rsv = 0
        for extension in self.extensions:
            rsv |= extension.rsv_mask
        self._parser = FrameParser(
            mask_expected=self.side is Side.SERVER,
            max_frame_size=self.limits.max_frame_size,
            allowed_rsv=rsv,
        )
        if self.reader.buffer:
            self._parser.feed(self.reader.buffer)
            self.reader.buffer.clear()

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the network. Never raises for anything the peer sends."""
        if self._discard or self.eof_rcvd:
            return
        if self._state is _CONNECTING:
            self.reader.feed_data(data)
            self._receive_handshake()
            return
        assert self._parser is not None
        self._parser.feed(data)
        self._receive_frames()

    def payload_buffer(self) -> memoryview | None:
        """A writable view where the rest of a large data frame being received (at least
        ``SPLIT_WRITE_SIZE`` bytes still missing) may be read in place, for an I/O layer that
        reads into buffers (asyncio's ``BufferedProtocol``); ``None`` otherwise. Hand what
        was read to :meth:`payload_received`, not to :meth:`receive_data`. The payload then
        reaches the frame without a copy of each read or a join of the pieces (see
        ``FrameParser.payload_buffer``)."""
        parser = self._parser
        # Called after every read: the usual answer (no frame pending) without a call.
        if parser is None or parser._pending is None or self._discard or self.eof_rcvd:
            return None
        return parser.payload_buffer(SPLIT_WRITE_SIZE)

    def payload_received(self, size: int) -> None:
        """``size`` bytes were read into the view from :meth:`payload_buffer`: go on as
        :meth:`receive_data` would."""
        if self._discard or self.eof_rcvd:
            return
        assert self._parser is not None
        self._parser.payload_written(size)
        self._receive_frames()

    @property
    def message_budget(self) -> int | None:
        """Whole messages the parser may still produce (``None``: no limit)."""
        return self._budget

    def set_message_budget(self, budget: int | None) -> None:
        """Bound the whole messages parsed ahead of the application: the parser produces at
        most ``budget`` more (``None``: no limit), then stops, the rest of the input staying
        buffered (:attr:`buffered`, no frame of it seen: neither a ping nor a close) until a
        new budget lets it parse on, at once. The I/O layer stops reading meanwhile; at EOF
        the limit is lifted, as the peer is gone and all it sent counts."""
        self._budget = budget
        stop = budget is not None and budget <= 0
        if self.parsing_stopped and not stop:
            self.parsing_stopped = False
            if self._parser is not None:
                self._receive_frames()
        else:
            self.parsing_stopped = stop

    @property
    def holding(self) -> bool:
        """Whether a close frame or a peer error waits for :meth:`caught_up` (only with
        ``hold_end_after_message``)."""
        return self._held is not None

    def caught_up(self) -> None:
        """The application took every message received so far (and had its turn to answer
        them): act on a held close frame or peer error now."""
        self._behind = False
        held = self._held
        if held is None:
            return
        self._held = None
        if isinstance(held, Frame):
            try:
                self._receive_control_frame(held)
            except Exception as exc:  # an invalid close frame
                self._on_peer_error(exc)
        else:
            self._on_peer_error(held)

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet."""
        if self._parser is None:
            return len(self.reader.buffer)
        return self._parser.buffered

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection (or the connection was lost)."""
        if self.eof_rcvd:
            return
        self.eof_rcvd = True
        if self._state is State.CONNECTING:
            self.reader.feed_eof()
            self._receive_handshake()
            if self._state is State.CONNECTING:
                # The peer went away in the middle of the handshake.
                if self.handshake_exc is None:
                    peer = "server" if self.side is Side.CLIENT else "client"
                    self.handshake_exc = ConnectionLostDuringHandshake(peer, self.reader.received)
                self._set_state(State.CLOSED)
            return
        if self.parsing_stopped:
            self.set_message_budget(None)  # the peer is gone: what it sent counts now
        if self._held is not None:
            # The peer is gone: whatever it sent before, a close frame included, counts now.
            self.caught_up()
        if self.debug:
            self.logger.debug("< EOF")
        if self.close_rcvd is None and self._message.opcode is not None and self.debug:
            # 7.1.5: closed without a close frame, in the middle of a message: code 1006.
            self.logger.debug("connection lost in the middle of a message")
        self._discard = True
        # The client closes its side now that the server closed (7.1.1). A server that had not
        # closed yet (EOF without a closing handshake, 7.1.5's 1006) closes too: both sides end
        # having written exactly one EOF.
        if not self.eof_sent:
            self.send_eof()
        self._set_state(State.CLOSED)

    def _receive_handshake(self) -> None:
        """Overridden by the two roles to parse the request or the response."""
        raise NotImplementedError

    def _receive_frames(self) -> None:
        """The choke point: every frame, and every peer error turned into a close code."""
        if self.parsing_stopped:
            return
        parser = self._parser
        assert parser is not None
        message = self._message
        try:
            while not self._discard:
                frame = parser.next_frame()
                if frame is None:
                    if message.decoder is not None or parser.pending_frame() is not None:
                        message.check_partial(parser, self.limits.max_message_size)
                    break
                if message.probe is not None:
                    message.probe = None
                if self.debug:
                    self.logger.debug("< %s", frame)
                if frame.opcode <= 2:  # CONT, TEXT, BINARY
                    self._receive_data_frame(frame)
                elif self._behind and frame.opcode is Opcode.CLOSE:
                    self._hold(frame)
                else:
                    self._receive_control_frame(frame)
                if self._message_done:
                    self._message_done = False
                    if self.hold_end_after_message and self._state is _OPEN:
                        self._behind = True
                    if self._budget is not None:
                        self._budget -= 1
                        if self._budget <= 0:
                            self.parsing_stopped = True
                            break
        except Exception as exc:
            if self._behind:
                self._hold(exc)
            else:
                self._on_peer_error(exc)

    def _hold(self, end: Frame | Exception) -> None:
        """Keep a close frame or a peer error for :meth:`caught_up`; nothing after it counts,
        so drop what is buffered and what comes."""
        if isinstance(end, Exception):
            end.__traceback__ = None  # no cycle through this frame's locals
        self._held = end
        self._drop_input()

    def _drop_input(self) -> None:
        """The connection is ending: discard input from now on, and free the partial frame
        and message at once."""
        self._discard = True
        self._message.reset()
        if self._parser is not None:
            self._parser.discard()
        self.reader.buffer.clear()
        self._message.probe = None

    def _on_peer_error(self, exc: Exception) -> None:
        """Turn a peer's error into a close code; a bug of ours is logged, not sent."""
        if isinstance(exc, ProtocolError):
            self._peer_failed(exc, CloseCode.PROTOCOL_ERROR, str(exc))
        elif isinstance(exc, UnicodeDecodeError):
            # No position: it would depend on how the bytes were chunked.
            self._peer_failed(exc, CloseCode.INVALID_DATA, f"invalid UTF-8: {exc.reason}")
        elif isinstance(exc, PayloadTooBig):
            self._peer_failed(exc, CloseCode.MESSAGE_TOO_BIG, str(exc))
        else:  # a bug of ours or of an extension: no details to the peer
            self.logger.error("! error while processing a frame", exc_info=exc)
            self._peer_failed(exc, CloseCode.INTERNAL_ERROR, "")

    def _peer_failed(self, exc: Exception, code: int, reason: str) -> None:
        if self.debug:
            self.logger.debug("! failing connection with %d: %s", code, reason)
        # The traceback would tie this protocol into a cycle (its frames hold ``self``): drop it
        # so a closed connection is freed without the cyclic collector.
        exc.__traceback__ = None
        self.parser_exc = exc
        self.fail(code, reason)

    def _receive_control_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # No extension gives a meaning to reserved bits on control frames (RFC 7692 6.1).
            raise ProtocolError(f"reserved bit set on a {opcode.name} frame")
        elif opcode is Opcode.PING:
            # 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
            # response, unless it already received a Close frame." It carries the same data.
            if self._state is State.OPEN:
                if self.defer_pongs:
                    self.pong_due = frame.data
                else:
                    self._send_frame(Frame(Opcode.PONG, frame.data))
            self._events.append(Ping(frame.data))
        elif opcode is Opcode.PONG:
            self._events.append(Pong(frame.data, self._ack_pings(frame.data)))
        else:  # CLOSE
            self._receive_close(frame)

    def _ack_pings(self, data: bytes) -> tuple[bytes, ...]:
        pings = self._pings
        if data in pings:
            n = pings.index(data) + 1
            acked = tuple(pings[:n])
            del pings[:n]
            return acked
        return ()

    def _receive_close(self, frame: Frame) -> None:
        # 5.5.1: a 1-byte payload, a code not allowed on the wire and a reason that is not
        # UTF-8 are errors; Close.parse raises ProtocolError or UnicodeDecodeError for them.
        close = Close.parse(frame.data)
        self.close_rcvd = close
        if self.close_sent is None:
            self.close_rcvd_then_sent = True
        self._events.append(CloseReceived(close))
        if self._state is State.OPEN:
            # 5.5.1: "If an endpoint receives a Close frame and did not previously send a
            # Close frame, the endpoint MUST send a Close frame in response." We echo the code.
            echo = Close(close.code, "") if close.code != CloseCode.NO_STATUS_RCVD else None
            self._send_close_frame(echo)
        # Nothing may follow a close frame: what does is discarded, and the message in
        # progress will never end.
        self._drop_input()
        # 7.1.1: the server closes the TCP connection first.
        if self.side is Side.SERVER and not self.eof_sent:
            self.send_eof()

    def _receive_data_frame(self, frame: Frame) -> None:
        # The order of frames (5.4) and the message limit are checked here; a fragmented
        # message is then assembled by IncomingMessage (sansio/messages.py).
        opcode = frame.opcode
        message = self._message
        if opcode is _CONT:
            if message.opcode is None:
                raise ProtocolError("unexpected continuation frame")
        elif message.opcode is not None:
            raise ProtocolError(f"expected a continuation frame, got {opcode.name}")

        compressed = frame.rsv1
        max_size = self.limits.max_message_size
        if self.extensions:
            remaining = None if max_size is None else max_size - message.size
            for extension in reversed(self.extensions):
                frame = extension.decode(frame, max_size=remaining)
        data = frame.data
        size = message.size + len(data)
        if max_size is not None and size > max_size:
            raise PayloadTooBig(f"message over {max_size} bytes")

        if frame.fin and opcode is not _CONT:
            # The common case, a whole message in one frame: no bookkeeping at all.
            if self.assemble:
                if opcode is _TEXT:
                    self._events.append(TextMessage(data.decode()))
                else:
                    self._events.append(BinaryMessage(data))
            elif opcode is _TEXT:
                self._events.append(Fragment(data.decode(), True, True))
            else:
                self._events.append(Fragment(data, True, True))
            self._message_done = True
            return

        event = message.receive(opcode, compressed, data, size, frame.fin, self.assemble)
        if event is not None:
            self._events.append(event)
        if frame.fin:
            self._message_done = True

    # --- output -------------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes | bytearray]:
        """The bytes to write since the last call; ``b""`` means "half-close the connection".
        Items are ``bytes``, or ``bytearray`` for large masked frames when ``reuse_output``
        is set; the caller owns them (and may give a bytearray back with
        :meth:`recycle_output` once written)."""
        writes, self._writes = self._writes, []
        return writes

    def recycle_output(self, data: bytes | bytearray) -> None:
        """Give back a ``bytearray`` from :meth:`data_to_send` once it is written and nothing
        refers to it any more (with ``reuse_output``): the next large masked frame of the same
        size is built in it. Anything else is ignored."""
        if type(data) is bytearray:
            self._spare = data

    def close_expected(self) -> bool:
        """Whether the peer should now close the TCP connection (arm a timeout if so): during
        the closing handshake, after a failed opening handshake, and whenever we have sent EOF
        (for example after answering a plain HTTP request) but not received it."""
        return (
            self._state is State.CLOSING
            or self.handshake_exc is not None
            or (self.eof_sent and not self.eof_rcvd)
        )

    def send_eof(self) -> None:
        if self.eof_sent:
            raise InvalidState("EOF already sent")
        if self.debug:
            self.logger.debug("> EOF")
        self.eof_sent = True
        self._writes.append(b"")

    def _check_open(self) -> None:
        if self._state is not State.OPEN:
            raise InvalidState(f"connection is {self._state.name}")

    def _send_frame(self, frame: Frame) -> None:
        if self.debug:
            self.logger.debug("> %s", frame)
        if self.extensions and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            for extension in self.extensions:
                frame = extension.encode(frame)
        if len(frame.data) >= SPLIT_WRITE_SIZE:
            if not self._mask:
                # A large payload from a server: header and payload as two writes, rather
                # than a copy of the payload behind its header (one more send() call, one
                # copy less).
                self._writes.append(unmasked_header(frame))
                self._writes.append(bytes(frame.data))
                return
            if self.reuse_output:
                # A large masked frame from a client: built in the buffer handed back by
                # recycle_output(), if any (see reuse_output).
                spare, self._spare = self._spare, None
                self._writes.append(masked_frame_into(frame, spare))
                return
        self._writes.append(serialize_frame(frame, mask=self._mask))

    @property
    def sending_fragmented(self) -> bool:
        """Whether a fragmented message is being sent (started, not finished)."""
        return self._out_opcode is not None

    def send_text(self, data: str | bytes, fin: bool = True) -> None:
        """Send a text frame; ``fin=False`` starts a fragmented message. ``bytes`` must be
        UTF-8 (it is sent as is)."""
        self._start_outgoing(Opcode.TEXT, fin)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._send_frame(Frame(Opcode.TEXT, payload, fin))

    def send_binary(self, data: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Send a binary frame; ``fin=False`` starts a fragmented message."""
        self._start_outgoing(Opcode.BINARY, fin)
        self._send_frame(Frame(Opcode.BINARY, bytes(data), fin))

    def send_continuation(self, data: str | bytes | bytearray | memoryview, fin: bool) -> None:
        """Send the next fragment of the message started with ``fin=False``."""
        self._check_open()
        if self._out_opcode is None:
            raise InvalidState("no fragmented message in progress")
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if fin:
            self._out_opcode = None
        self._send_frame(Frame(Opcode.CONT, payload, fin))

    def _start_outgoing(self, opcode: Opcode, fin: bool) -> None:
        self._check_open()
        if self._out_opcode is not None:
            raise InvalidState("a fragmented message is in progress: finish it first")
        if not fin:
            self._out_opcode = opcode

    def send_message(
        self, data: str | bytes | bytearray | memoryview, text: bool | None = None
    ) -> None:
        """Send a whole message (text for ``str``), split into frames of at most
        ``limits.max_outgoing_frame_size`` bytes when that limit is set. ``text`` overrides
        the frame type: ``True`` sends bytes (which must be UTF-8) as text, ``False`` sends a
        ``str`` as binary."""
        if text is None:
            text = isinstance(data, str)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        size = self.limits.max_outgoing_frame_size
        if size is None or len(payload) <= size or size <= 0:
            # One frame: send_text/send_binary, _start_outgoing and _check_open inlined, as
            # this runs once per message sent.
            if self._state is not _OPEN:
                raise InvalidState(f"connection is {self._state.name}")
            if self._out_opcode is not None:
                raise InvalidState("a fragmented message is in progress: finish it first")
            self._send_frame(Frame(_TEXT if text else _BINARY, payload))
            return
        view = memoryview(payload)
        if text:
            self.send_text(bytes(view[:size]), fin=False)
        else:
            self.send_binary(view[:size], fin=False)
        for start in range(size, len(payload), size):
            self.send_continuation(view[start : start + size], fin=start + size >= len(payload))

    # --- encode once, send to many (broadcast) ---------------------------------------------

    def encoding_key(self, size: int) -> Hashable | None:
        """Protocols with equal keys put a message of ``size`` bytes on the wire as the same
        bytes, so :meth:`encode_message` on one serves :meth:`send_encoded` on all. ``None``:
        this protocol must encode the message itself (a client masks every frame; an
        extension with state, such as a compressor with context takeover; a message that
        ``max_outgoing_frame_size`` splits)."""
        if self._mask:
            return None
        limit = self.limits.max_outgoing_frame_size
        if limit is not None and 0 < limit < size:
            return None
        if not self.extensions:
            return ()
        keys = []
        for extension in self.extensions:
            key = extension.broadcast_key(size)
            if key is None:
                return None
            keys.append(key)
        return tuple(keys)

    def encode_message(self, message: str | bytes | bytearray | memoryview) -> EncodedMessage:
        """Encode ``message`` (text for ``str``) once for every protocol with the same
        :meth:`encoding_key`; this protocol's state is not touched. When the key is ``None``
        the result only carries the payload, and :meth:`send_encoded` sends it normally."""
        text = isinstance(message, str)
        payload = message.encode() if isinstance(message, str) else bytes(message)
        return self._encode(payload, text, self.encoding_key(len(payload)))

    def _encode(self, payload: bytes, text: bool, key: Hashable | None) -> EncodedMessage:
        """:meth:`encode_message` of a payload already in bytes, whose key is known."""
        if key is None:
            return EncodedMessage(None, payload, text, b"")
        frame = Frame(Opcode.TEXT if text else Opcode.BINARY, payload)
        for extension in self.extensions:
            frame = extension.encode_for_broadcast(frame)
        return EncodedMessage(key, payload, text, serialize_frame(frame, mask=False))

    def send_encoded(self, encoded: EncodedMessage) -> None:
        """Send a message encoded by :meth:`encode_message` (of this protocol or of one with
        the same :meth:`encoding_key`).

        Raises:
            InvalidState: the connection is not open, or a fragmented message is being sent.
            ValueError: the message was encoded for other negotiated parameters.
        """
        self._check_open()
        if self._out_opcode is not None:
            raise InvalidState("a fragmented message is in progress: finish it first")
        if encoded.key is None:
            self.send_message(encoded.payload, text=encoded.text)
            return
        if self.encoding_key(encoded.size) != encoded.key:
            raise ValueError("this message was encoded for a connection with other parameters")
        if self.debug:
            self.logger.debug("> pre-encoded message, %d bytes", len(encoded.data))
        self._writes.append(encoded.data)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a ping; the matching ``Pong`` event lists it in ``acked``."""
        self._check_open()
        data = bytes(data)
        if len(data) > 125:
            raise ValueError("ping payload must be 125 bytes or less")
        if data in self._pings:
            raise InvalidState("a ping with the same payload is already waiting for its pong")
        self._pings.append(data)
        self._send_frame(Frame(Opcode.PING, data))

    def pause_output(self) -> None:
        """The I/O layer's write buffer is full: defer pongs (see ``defer_pongs``)."""
        self.defer_pongs = True

    def resume_output(self) -> bool:
        """The write buffer drained: answer the latest deferred ping, if any (and if still
        open). Returns whether there is output to write."""
        self.defer_pongs = False
        data, self.pong_due = self.pong_due, None
        if data is None or self._state is not State.OPEN:
            return False
        self._send_frame(Frame(Opcode.PONG, data))
        return True

    def send_pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a heartbeat that expects no answer)."""
        self._check_open()
        data = bytes(data)
        if len(data) > 125:
            raise ValueError("pong payload must be 125 bytes or less")
        self._send_frame(Frame(Opcode.PONG, data))

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake (7.1.2). ``code=None`` sends a close frame without a
        payload, which the peer reads as 1005.

        Raises:
            InvalidState: the connection is not open.
            ValueError: the code may not appear on the wire, or the reason is too long.
        """
        self._check_open()
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            close = None
        else:
            # A code that may not go on the wire is a bad argument, not a peer error: ValueError.
            if not is_valid_close_code(code):
                raise ValueError(f"close code {code} may not be sent (7.4)")
            close = Close(code, reason)
            if len(reason.encode()) > _MAX_REASON:
                raise ValueError(f"close reason must be at most {_MAX_REASON} bytes in UTF-8")
        self._send_close_frame(close)
        # Now waiting for the peer's close frame: one that was held counts now.
        if self._held is not None:
            self.caught_up()

    def _send_close_frame(self, close: Close | None) -> None:
        payload = b"" if close is None else close.serialize()
        self.close_sent = close if close is not None else Close(CloseCode.NO_STATUS_RCVD, "")
        if self.close_rcvd is None:
            self.close_rcvd_then_sent = False
        self._out_opcode = None
        self._send_frame(Frame(Opcode.CLOSE, payload))
        self._set_state(State.CLOSING)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the WebSocket connection (7.1.7): send a close frame with ``code`` once if
        none was sent, stop reading, and close the TCP connection when we are the server."""
        if self._state is State.OPEN:
            self._send_close_frame(Close(code, _truncate_reason(reason)))
        self._drop_input()
        # 7.1.7: "the endpoint MUST Close the WebSocket Connection". The server closes the TCP
        # connection at once; a client waits for the server to do it (7.1.1), within a timeout.
        if self.side is Side.SERVER and not self.eof_sent:
            self.send_eof()


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message encoded once by :meth:`Protocol.encode_message`, for every protocol whose
    :meth:`Protocol.encoding_key` equals ``key`` (``None``: not shared; ``data`` is empty and
    each protocol frames ``payload`` itself)."""

    key: Hashable | None
    #: The payload before any extension (the UTF-8 of a text message).
    payload: bytes
    #: Whether it is a text message.
    text: bool
    #: The frame as it goes on the wire.
    data: bytes

    @property
    def size(self) -> int:
        """The size of the payload before any extension (the UTF-8 size of a text message)."""
        return len(self.payload)


class MessageEncoder:
    """Encodes one message once per group of protocols that frame it alike (compress-once
    broadcast)::

        encoder = MessageEncoder(message)
        for protocol in protocols:
            protocol.send_encoded(encoder.encode_for(protocol))

    A ``str`` is encoded to UTF-8 once here, whatever the number of protocols and groups.
    """

    __slots__ = ("_cache", "_unshared", "payload", "text")

    def __init__(self, message: str | bytes | bytearray | memoryview) -> None:
        self.text = isinstance(message, str)
        self.payload = message.encode() if isinstance(message, str) else bytes(message)
        self._cache: dict[Hashable, EncodedMessage] = {}
        #: What every protocol that cannot share an encoding gets (it frames the payload).
        self._unshared = EncodedMessage(None, self.payload, self.text, b"")

    @property
    def size(self) -> int:
        """The size of the payload (the UTF-8 size of a text message)."""
        return len(self.payload)

    def encode_for(self, protocol: Protocol) -> EncodedMessage:
        """The message encoded for ``protocol``, shared with the protocols of its group."""
        key = protocol.encoding_key(len(self.payload))
        if key is None:
            return self._unshared
        encoded = self._cache.get(key)
        if encoded is None:
            encoded = self._cache[key] = protocol._encode(self.payload, self.text, key)
        return encoded
