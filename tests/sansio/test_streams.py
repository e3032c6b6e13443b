"""Tests for tether.sansio.streams: the generator-based reader the HTTP parsers pull from."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tether.sansio.streams import StreamReader


def drive(reader: StreamReader, coroutine: Generator[None, None, bool]) -> bool | None:
    """Step ``coroutine`` once; its result if it finished, None if it waits for data."""
    try:
        next(coroutine)
    except StopIteration as done:
        return bool(done.value)
    return None


def test_feed_after_eof_is_refused() -> None:
    reader = StreamReader()
    reader.feed_eof()
    with pytest.raises(EOFError):
        reader.feed_data(b"late")


def test_at_eof_waits_then_tells_data_from_end() -> None:
    reader = StreamReader()
    waiting = reader.at_eof()
    assert drive(reader, waiting) is None
    reader.feed_data(b"x")
    assert drive(reader, waiting) is False
    empty = StreamReader()
    empty.feed_eof()
    assert drive(empty, empty.at_eof()) is True
