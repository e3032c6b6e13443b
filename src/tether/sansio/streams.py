"""A byte buffer read by generator coroutines.

Parsers are written top to bottom as generators: ``line = yield from reader.read_line(8192)``.
Each ``yield`` means "feed me more bytes". When data arrives, the owner calls ``feed_data`` and
resumes the generator with ``next()``; when a parser returns, ``StopIteration.value`` holds the
result. Nothing here blocks and nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Generator

from ..exceptions import LineTooLong

__all__ = ["StreamReader"]


class StreamReader:
    """Bytes received but not consumed yet, an end-of-stream flag, and a count of all bytes fed.

    The generators raise :class:`EOFError` when the stream ends too early; the code that drives a
    parser turns that into the error that names what was cut short (for the opening handshake,
    :class:`~tether.exceptions.ConnectionLostDuringHandshake`).
    """

    __slots__ = ("buffer", "eof", "received")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.received = 0

    def feed_data(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof:
            raise EOFError("stream ended")
        self.buffer += data
        self.received += len(data)

    def feed_eof(self) -> None:
        self.eof = True

    def read_line(self, m: int) -> Generator[None, None, bytes]:
        """Read up to and including the next ``\\n``; at most ``m`` bytes before it.

        Raises:
            LineTooLong: no ``\\n`` within ``m + 2`` bytes (the limit excludes the CRLF).
            EOFError: the stream ended before a ``\\n``.
        """
        start = 0
        while True:
            n = self.buffer.find(b"\n", start)
            if n >= 0:
                break
            start = len(self.buffer)
            if start > m + 1:
                raise LineTooLong(f"line longer than {m} bytes")
            if self.eof:
                raise EOFError(f"stream ended after {start} bytes, before end of line")
            yield
        if n > m + 1:
            raise LineTooLong(f"line longer than {m} bytes")
        line = bytes(self.buffer[: n + 1])
        del self.buffer[: n + 1]
        return line

    def read_exact(self, n: int) -> Generator[None, None, bytes]:
        """Read exactly ``n`` bytes.

        Raises:
            EOFError: the stream ended before ``n`` bytes.
        """
        while len(self.buffer) < n:
            if self.eof:
                raise EOFError(f"stream ended after {len(self.buffer)} bytes, expected {n}")
            yield
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_to_eof(self, m: int) -> Generator[None, None, bytes]:
        """Read everything until the stream ends, at most ``m`` bytes (more is discarded)."""
        while not self.eof:
            if len(self.buffer) > m:
                del self.buffer[m:]
            yield
        data = bytes(self.buffer[:m])
        del self.buffer[:]
        return data
