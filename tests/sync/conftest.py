"""Every test of the threading layer passes a leak check: the threads, sockets and file
descriptors it started must be gone within a few seconds of its end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from helpers.sync_server import open_fds


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    threads = set(threading.enumerate())
    fds = open_fds()
    yield
    deadline = time.monotonic() + 5
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        now = open_fds()
        extra_fds = {fd: target for fd, target in now.items() if fds.get(fd) != target}
        if not extra_threads and not extra_fds:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra_threads, f"threads left running: {[t.name for t in extra_threads]}"
    assert not extra_fds, f"file descriptors left open: {extra_fds}"
