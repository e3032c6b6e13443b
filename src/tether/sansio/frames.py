"""Frames and close payloads (RFC 6455 sections 5 and 7)."""

from __future__ import annotations

import dataclasses

from ..exceptions import ProtocolError
from .codes import CONTROL_OPCODES, CloseCode, Opcode, explain, is_valid_close_code

__all__ = ["MAX_LOG_SIZE", "Close", "Frame"]

#: Payloads longer than this are elided in ``str(frame)``.
MAX_LOG_SIZE = 75


@dataclasses.dataclass(slots=True)
class Frame:
    """One WebSocket frame, unmasked. ``data`` is the payload as it is on the wire after unmasking
    (compressed, if an extension compressed it)."""

    opcode: Opcode
    data: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __str__(self) -> str:
        length = f"{len(self.data)} byte{'' if len(self.data) == 1 else 's'}"
        flags = "" if self.fin else " [continued]"
        if self.rsv1:
            flags += " [rsv1]"
        if self.opcode is Opcode.TEXT or (self.opcode is Opcode.CONT and not self.rsv1):
            try:
                shown = repr(bytes(self.data).decode())
            except UnicodeDecodeError:
                shown = bytes(self.data).hex(" ")
        elif self.opcode is Opcode.CLOSE:
            try:
                shown = str(Close.parse(self.data))
            except (ProtocolError, UnicodeDecodeError):
                shown = bytes(self.data).hex(" ")
        else:
            shown = bytes(self.data).hex(" ")
        if len(shown) > MAX_LOG_SIZE:
            shown = shown[: MAX_LOG_SIZE - 11] + "..." + shown[-8:]
        return f"{self.opcode.name} {shown} [{length}]{flags}"

    def check(self) -> None:
        """Check the rules every frame must follow whatever the extensions (5.5)."""
        if self.opcode in CONTROL_OPCODES:
            if len(self.data) > 125:
                raise ProtocolError("control frame too long")
            if not self.fin:
                raise ProtocolError("fragmented control frame")


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """The payload of a close frame: a code and a reason (5.5.1)."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.code} ({explain(self.code)})"
        return f"{text} {self.reason}" if self.reason else text

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """Parse a close frame payload.

        Raises:
            ProtocolError: the payload is one byte long, or the code is not allowed on the wire.
            UnicodeDecodeError: the reason is not valid UTF-8.
        """
        if len(data) == 0:
            return cls(CloseCode.NO_STATUS_RCVD, "")
        if len(data) == 1:
            raise ProtocolError("close frame too short")
        close = cls(int.from_bytes(data[:2], "big"), bytes(data[2:]).decode())
        close.check()
        return close

    def serialize(self) -> bytes:
        """The payload of a close frame carrying this code and reason."""
        self.check()
        return self.code.to_bytes(2, "big") + self.reason.encode()

    def check(self) -> None:
        """Raise ProtocolError if the code may not appear on the wire (7.4)."""
        if not is_valid_close_code(self.code):
            raise ProtocolError(f"invalid status code: {self.code}")
