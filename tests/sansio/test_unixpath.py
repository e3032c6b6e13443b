"""Tests for tether.sansio.unixpath: Unix socket paths checked against ``sun_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.exceptions import InvalidUnixPath
from tether.sansio.unixpath import SUN_PATH_SIZE, check_unix_path


def test_paths_are_returned_as_the_socket_calls_take_them() -> None:
    assert check_unix_path(Path("/tmp/a.sock")) == "/tmp/a.sock"
    assert check_unix_path(b"/tmp/a.sock") == b"/tmp/a.sock"
    assert check_unix_path("\0" + "x" * (SUN_PATH_SIZE - 1)) == "\0" + "x" * (SUN_PATH_SIZE - 1)


def test_empty_and_too_long_paths_are_refused() -> None:
    with pytest.raises(InvalidUnixPath, match="empty Unix socket path"):
        check_unix_path("")
    with pytest.raises(InvalidUnixPath):
        check_unix_path("/" + "x" * (SUN_PATH_SIZE - 1))
