"""A real ``redis-server`` on 127.0.0.1, on a free port, with its files in a temporary folder.

:class:`RedisServer` starts it in the foreground and waits for ``PING``; :meth:`~RedisServer.stop`
(SIGTERM: Redis saves and exits), :meth:`~RedisServer.kill` (SIGKILL, mid-stream) and
:meth:`~RedisServer.start` again on the same port, with the same data folder. By default it
keeps an append-only file fsynced on every write (``appendfsync always``), so that what Redis
acknowledged survives a kill; ``persist=False`` keeps nothing, so a restart loses everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from helpers.net import free_port

__all__ = ["RedisServer", "redis_available"]

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def redis_available() -> str | None:
    """``None`` when redis-server (>= 7) and redis-py are installed, else why not."""
    if shutil.which("redis-server") is None and not os.path.exists(REDIS_SERVER):
        return "redis-server not found (apt-get install -y redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py not installed (pip install 'tether[redis]')"
    return None


class RedisServer:
    def __init__(self, folder: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or REDIS_SERVER
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log),
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._log_tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING: {self._log_tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM and wait (Redis flushes its files and exits)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what a crash does."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
