"""Every size and count limit tether enforces, in one object with documented defaults.

Every input from the network is bounded: the opening handshake by the ``max_*`` head limits,
frames and messages by ``max_frame_size`` and ``max_message_size`` (which applies to the
decompressed size when permessage-deflate is on), and the data waiting for the application by
``max_queue``. Sending is bounded by the write buffer water marks.

Precedents for the HTTP limits: nginx uses 8 KiB for a request line or header line by default,
Node.js 16 KiB for a whole head, Tomcat 8 KiB; websockets allows 8 KiB lines and 128 headers.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Limits"]


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Limits for one connection. ``None`` disables a limit (only do that with trusted peers)."""

    #: Longest request line, status line or header line, in bytes, CRLF excluded (431 past it).
    max_line_length: int = 8192
    #: Most header lines in a request or response head (431 past it).
    max_header_count: int = 128
    #: Largest whole request or response head, request line and headers, in bytes (431 past it).
    max_head_size: int = 32768
    #: Largest body of a non-101 response that a client reads to report an error, in bytes.
    max_body_size: int = 65536
    #: Largest single frame payload accepted, in bytes (1009 past it).
    max_frame_size: int | None = 16 * 2**20
    #: Largest message accepted, in bytes, after decompression (1009 past it).
    max_message_size: int | None = 2**20
    #: Largest amount of received data waiting for the application, in bytes; reading from the
    #: socket pauses above it and resumes below a quarter of it.
    max_queue: int = 4 * 2**20
    #: Write buffer high-water mark: ``send()`` waits while more than this is buffered.
    write_high_water: int = 64 * 1024
    #: Write buffer low-water mark: ``send()`` resumes when the buffer drains below this.
    write_low_water: int = 16 * 1024
    #: Outgoing messages larger than this are split into frames of this size (``None``: never).
    max_outgoing_frame_size: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value < 0:
                raise ValueError(f"{field.name} must be >= 0, got {value}")
        if self.write_low_water > self.write_high_water:
            raise ValueError("write_low_water must not exceed write_high_water")
