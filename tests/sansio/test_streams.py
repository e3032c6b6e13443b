"""Tests for tether.sansio.streams: the generator-based reader the HTTP parsers pull from."""

from __future__ import annotations

import pytest

from tether.sansio.streams import StreamReader


def test_feed_after_eof_is_refused() -> None:
    reader = StreamReader()
    reader.feed_eof()
    with pytest.raises(EOFError):
        reader.feed_data(b"late")
