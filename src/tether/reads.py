"""Reading from a buffered transport into the sans-I/O protocol, shared by the asyncio
connection and the ASGI protocol (both ``asyncio.BufferedProtocol``).

Every connection of an event loop's thread reads into one shared buffer: each fills and
empties it within one callback (``get_buffer`` then ``buffer_updated``). A plain
``asyncio.Protocol`` would get a fresh 256 KiB ``bytes`` per read instead, which glibc serves
with ``mmap`` (and ``mremap``, ``munmap`` and page faults). Once part of a large frame has
arrived, the protocol offers the rest of its payload as the buffer to read into
(:meth:`~tether.sansio.protocol.Protocol.payload_buffer`), so that it is not copied again.
"""

from __future__ import annotations

import threading

from .sansio.protocol import Protocol

__all__ = ["READ_BUFFER_SIZE", "read_buffer", "take_read"]

#: Bytes read at once (what asyncio's socket transport asks of a plain protocol).
READ_BUFFER_SIZE = 256 * 1024

_read_buffers = threading.local()


def read_buffer() -> memoryview:
    """This thread's shared read buffer."""
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_BUFFER_SIZE))
    return view


def take_read(
    protocol: Protocol, read_view: memoryview, payload_view: memoryview | None, nbytes: int
) -> memoryview | None:
    """Hand ``nbytes`` just read to ``protocol``: from ``read_view`` (the shared buffer) when
    ``payload_view`` is None, else they were read straight into that payload. Returns the
    payload buffer for the next read, or None to read into the shared buffer."""
    if payload_view is None:
        # One copy of what was read, into a bytes object the parser can keep.
        protocol.receive_data(read_view[:nbytes].tobytes())
    else:
        protocol.payload_received(nbytes)
    return protocol.payload_buffer()
