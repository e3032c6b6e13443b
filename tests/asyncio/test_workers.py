"""The worker supervisor as a library: forked workers, their status, SIGTERM, a dead worker."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

import pytest

from tether.asyncio.workers import WorkerInfo, read_status, supervise

pytestmark = pytest.mark.timeout(30)


def _serving(info: WorkerInfo) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        info.report({"state": "serving", "ok": True})
        time.sleep(0.05)


def _crashing(info: WorkerInfo) -> None:
    if info.index == 1:
        raise SystemExit(3)
    _serving(info)


def test_workers_report_and_stop_on_sigterm() -> None:
    seen: dict[str, Any] = {}

    def ready(_: WorkerInfo | None, status_dir: str) -> None:
        seen.update(read_status(status_dir))
        os.kill(os.getpid(), signal.SIGTERM)  # what a service manager does

    assert supervise(_serving, 3, ready=ready, grace=5) == 0
    assert seen["ok"] is True and seen["supervisor"] == os.getpid()
    workers = seen["workers"]
    assert [w["index"] for w in workers] == [0, 1, 2]
    assert all(w["alive"] and w["state"] == "serving" and not w["stale"] for w in workers)
    assert len({w["pid"] for w in workers}) == 3


def test_a_dead_worker_is_logged_and_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tether.workers")
    statuses: list[dict[str, Any]] = []

    def ready(_: WorkerInfo | None, status_dir: str) -> None:  # never: worker 1 dies first
        statuses.append(read_status(status_dir))

    code = supervise(_crashing, 2, ready=ready, grace=5, ready_timeout=2)
    assert code == 1
    assert statuses == []  # never ready: one worker died before reporting
    assert "worker 1 (pid" in caplog.text
    assert "died: exit code 3; it is not restarted (1 of 2 left)" in caplog.text
    assert caplog.text.count("died:") == 1  # worker 0 was stopped, not dead
