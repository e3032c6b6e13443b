"""Several server processes on one port: a supervisor and its workers.

Each worker is a process with its own event loop that listens on the same port with
``SO_REUSEPORT`` (``serve(..., reuse_port=True)``), so the kernel spreads new connections over
them. The supervisor starts the workers and then only watches:

- a worker that dies is logged (with its exit code or signal) and shows as dead in the status,
  and is **not** restarted: a crash loop would hide a bug; restart the whole service instead
  (systemd, a container runtime);
- SIGTERM or SIGINT sends SIGTERM to every worker, which closes its connections with 1001 and
  exits; workers still running after ``grace`` seconds are killed.

Workers report their state as JSON files in a status folder (:meth:`WorkerInfo.report`);
:func:`read_status` gathers them with the supervisor's view, for ``/healthz``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["WorkerInfo", "free_reuse_port", "read_status", "supervise"]

logger = logging.getLogger("tether.workers")

#: A worker whose last report is older than this many seconds is reported stale.
STALE_AFTER = 5.0


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What a worker knows about itself; passed to the worker's function."""

    index: int
    count: int
    status_dir: str
    #: The supervisor's pid: a worker whose parent changed was orphaned and should stop.
    supervisor: int = 0

    @property
    def orphaned(self) -> bool:
        return self.supervisor != 0 and os.getppid() != self.supervisor

    def report(self, state: dict[str, Any]) -> None:
        """Publish this worker's state (JSON-able) for ``/healthz``; atomic."""
        record = {"index": self.index, "pid": os.getpid(), "time": time.time(), **state}
        path = Path(self.status_dir) / f"worker-{self.index}.json"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)


def read_status(status_dir: str) -> dict[str, Any]:
    """Every worker's state, as the supervisor and the worker itself last reported it:
    ``{"ok": bool, "workers": [{"index", "pid", "alive", "exitcode", "state", ...}]}``. ``ok``
    is false when a worker died, has not reported for :data:`STALE_AFTER` seconds, or reports
    ``"ok": false`` itself."""
    folder = Path(status_dir)
    try:
        supervisor = json.loads((folder / "supervisor.json").read_text())
    except (OSError, ValueError):
        return {"ok": False, "workers": [], "error": "no supervisor status"}
    workers = []
    now = time.time()
    ok = True
    for entry in supervisor["workers"]:
        record: dict[str, Any] = dict(entry)
        try:
            reported = json.loads((folder / f"worker-{entry['index']}.json").read_text())
        except (OSError, ValueError):
            reported = {}
        if reported.get("pid") == entry["pid"]:
            age = now - float(reported.pop("time", 0))
            record.update({k: v for k, v in reported.items() if k not in record})
            record["report_age"] = round(age, 3)
            record["stale"] = age > STALE_AFTER
        else:
            record["stale"] = True
            record["state"] = record.get("state", "starting")
        if not record["alive"] or record["stale"] or reported.get("ok") is False:
            ok = False
        workers.append(record)
    return {"ok": ok, "supervisor": supervisor["pid"], "workers": workers}


def free_reuse_port(host: str) -> tuple[socket.socket, int]:
    """Reserve a free port for workers that will share it with ``SO_REUSEPORT``: a bound,
    non-listening socket (the kernel gives connections only to listening ones). Close it once
    the workers listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock, int(sock.getsockname()[1])


def _child(target: Callable[[WorkerInfo], None], info: WorkerInfo) -> None:
    # The supervisor alone decides when workers stop: a terminal's Ctrl-C reaches the whole
    # process group, and the supervisor turns it into one SIGTERM per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(info)


def supervise(
    target: Callable[[WorkerInfo], None],
    count: int,
    *,
    grace: float = 15.0,
    ready: Callable[[WorkerInfo | None, str], None] | None = None,
    ready_timeout: float = 30.0,
) -> int:
    """Run ``target(info)`` in ``count`` worker processes until SIGTERM/SIGINT; return 0 if
    every worker was running until then and exited cleanly, else 1.

    ``ready(None, status_dir)`` is called once every worker has reported (its first
    :meth:`WorkerInfo.report`), or not at all if one dies first.
    """
    if count < 1:
        raise ValueError(f"workers must be >= 1, got {count}")
    status_dir = tempfile.mkdtemp(prefix="tether-workers-")
    context: Any = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    stopping = False
    healthy = True

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            logger.info("received %s: stopping %d workers", signal.Signals(signum).name, count)
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    processes = []
    try:
        for index in range(count):
            info = WorkerInfo(index, count, status_dir, os.getpid())
            process = context.Process(
                target=_child, args=(target, info), name=f"tether-worker-{index}"
            )
            process.start()
            processes.append(process)
        dead: set[int] = set()
        _write_supervisor(status_dir, processes)
        announced = ready is None
        deadline = time.monotonic() + ready_timeout
        while not stopping:
            sentinels = [p.sentinel for i, p in enumerate(processes) if i not in dead]
            if not sentinels:
                logger.error("every worker died: stopping")
                healthy = False
                break
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            for index, process in enumerate(processes):
                if index not in dead and not process.is_alive():
                    dead.add(index)
                    healthy = False
                    logger.error(
                        "worker %d (pid %s) died: %s; it is not restarted (%d of %d left)",
                        index,
                        process.pid,
                        _describe_exit(process.exitcode),
                        count - len(dead),
                        count,
                    )
                    _write_supervisor(status_dir, processes)
            if not announced and ready is not None:
                if all((Path(status_dir) / f"worker-{i}.json").exists() for i in range(count)):
                    announced = True
                    ready(None, status_dir)
                elif time.monotonic() > deadline:
                    logger.error("workers did not start within %g s", ready_timeout)
                    healthy = False
                    break
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, end - time.monotonic()))
        for index, process in enumerate(processes):
            if process.is_alive():
                logger.error(
                    "worker %d (pid %s) ignored SIGTERM for %g s: killed", index, process.pid, grace
                )
                process.kill()
                process.join()
                healthy = False
            elif index not in dead and process.exitcode != 0:
                logger.error("worker %d exited with %s", index, _describe_exit(process.exitcode))
                healthy = False
        return 0 if healthy else 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in processes:
            if process.is_alive():
                process.kill()
        shutil.rmtree(status_dir, ignore_errors=True)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _write_supervisor(status_dir: str, processes: list[Any]) -> None:
    record = {
        "pid": os.getpid(),
        "workers": [
            {
                "index": index,
                "pid": process.pid,
                "alive": process.is_alive(),
                "exitcode": process.exitcode,
            }
            for index, process in enumerate(processes)
        ],
    }
    path = Path(status_dir) / "supervisor.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)
