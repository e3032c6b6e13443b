"""Real proxy servers for the client's proxy tests, started on 127.0.0.1 with temp config.

- :class:`Tinyproxy`: Debian's ``tinyproxy`` (an HTTP proxy; ``CONNECT``, ``BasicAuth``).
- :class:`Danted`: Debian's ``dante-server`` (a SOCKS5 proxy), without authentication or
  with ``socksmethod: username``. Dante checks usernames against the system's password
  database, so tests cannot give it a user of their own; RFC 1929 authentication is tested
  against :class:`MiniSocks5` instead, and danted with ``username`` only checks that a client
  without credentials gets a clear refusal.
- :class:`MiniSocks5`: a small SOCKS5 server written here from RFC 1928 and RFC 1929,
  independent of tether's client code, with username/password authentication.

Each binary is started in the foreground; the helper waits until its port accepts
connections and stops it (SIGTERM, then SIGKILL) on exit. On failure the proxy's log is in
the exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .net import free_port

__all__ = [
    "Danted",
    "MiniSocks5",
    "ProxyError",
    "Tinyproxy",
    "danted_available",
    "free_port",
    "tinyproxy_available",
]

TINYPROXY = "/usr/bin/tinyproxy"
DANTED = "/usr/sbin/danted"
START_TIMEOUT = 10.0


class ProxyError(RuntimeError):
    """A proxy binary did not start."""


def tinyproxy_available() -> str | None:
    """``None`` when tinyproxy is installed, else why not."""
    if shutil.which("tinyproxy") is None and not os.path.exists(TINYPROXY):
        return "tinyproxy not found (apt-get install -y tinyproxy)"
    return None


def danted_available() -> str | None:
    """``None`` when danted is installed, else why not."""
    if shutil.which("danted") is None and not os.path.exists(DANTED):
        return "danted not found (apt-get install -y dante-server)"
    return None


def proxies_available() -> str | None:
    return tinyproxy_available() or danted_available()


class _Process:
    """A proxy process in the foreground, its config and log in ``folder``."""

    name = ""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self, config: Path) -> list[str]:
        raise NotImplementedError

    def config(self) -> str:
        raise NotImplementedError

    def logs(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        out = self.folder / f"{self.name}.out"
        if out.exists():
            text += out.read_text(errors="replace")
        return text[-4000:]

    def __enter__(self) -> Self:
        config = self.folder / f"{self.name}.conf"
        config.write_text(self.config())
        with open(self.folder / f"{self.name}.out", "wb") as out:
            self.process = subprocess.Popen(
                self.command(config), stdout=out, stderr=subprocess.STDOUT, cwd=self.folder
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise ProxyError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.logs()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise ProxyError(
                    f"{self.name} did not listen within {START_TIMEOUT} s:\n{self.logs()}"
                )
            time.sleep(0.02)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Tinyproxy(_Process):
    """tinyproxy on 127.0.0.1; ``auth=(user, password)`` turns on BasicAuth; ``connect_ports``
    restricts CONNECT to those ports (tinyproxy answers 403 to others)."""

    name = "tinyproxy"

    def __init__(
        self,
        folder: Path,
        *,
        auth: tuple[str, str] | None = None,
        connect_ports: list[int] | None = None,
    ) -> None:
        super().__init__(folder)
        self.auth = auth
        self.connect_ports = connect_ports or []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 20",
            "Allow 127.0.0.1",
            "LogLevel Info",
            f'LogFile "{self.log}"',
            f'PidFile "{self.folder / "tinyproxy.pid"}"',
        ]
        if self.auth is not None:
            lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
        lines += [f"ConnectPort {port}" for port in self.connect_ports]
        return "\n".join(lines) + "\n"

    def command(self, config: Path) -> list[str]:
        return [shutil.which("tinyproxy") or TINYPROXY, "-d", "-c", str(config)]


class Danted(_Process):
    """danted on 127.0.0.1: SOCKS5 CONNECT to 127.0.0.1 allowed, except to ``blocked_ports``
    (reply 2); ``username=True`` requires RFC 1929 authentication against system users."""

    name = "danted"

    def __init__(
        self, folder: Path, *, username: bool = False, blocked_ports: list[int] | None = None
    ) -> None:
        super().__init__(folder)
        self.username = username
        self.blocked_ports = blocked_ports or []

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            f"logoutput: {self.log}",
            f"internal: 127.0.0.1 port = {self.port}",
            "external: 127.0.0.1",
            "clientmethod: none",
            f"socksmethod: {'username' if self.username else 'none'}",
        ]
        if os.geteuid() == 0:
            lines.append("user.unprivileged: nobody")
        lines.append("client pass { from: 127.0.0.1/32 to: 0.0.0.0/0 }")
        lines += [
            f"socks block {{ from: 0.0.0.0/0 to: 127.0.0.1/32 port = {port} }}"
            for port in self.blocked_ports
        ]
        lines.append("socks pass { from: 127.0.0.1/32 to: 127.0.0.1/32 command: connect }")
        return "\n".join(lines) + "\n"

    def command(self, config: Path) -> list[str]:
        pid = self.folder / "danted.pid"
        return [shutil.which("danted") or DANTED, "-f", str(config), "-p", str(pid), "-N", "1"]


class MiniSocks5:
    """An asyncio SOCKS5 server (RFC 1928 CONNECT, RFC 1929 username/password) on 127.0.0.1.

    ``async with MiniSocks5(("user", "pw")) as proxy:``; ``proxy.requests`` records each
    CONNECT as ``(address type, host, port)`` and ``proxy.logins`` each login attempt.
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.requests: list[tuple[int, str, int]] = []
        self.logins: list[tuple[str, str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def __aenter__(self) -> MiniSocks5:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handshake(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 0x02 if self.credentials is not None else 0x00
        if version != 5 or wanted not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(bytes([5, wanted]))
        if self.credentials is not None:
            _, length = await reader.readexactly(2)
            user = (await reader.readexactly(length)).decode()
            (length,) = await reader.readexactly(1)
            password = (await reader.readexactly(length)).decode()
            self.logins.append((user, password))
            if (user, password) != self.credentials:
                writer.write(b"\x01\x01")
                return
            writer.write(b"\x01\x00")
        _, command, _, address_type = await reader.readexactly(4)
        if address_type == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif address_type == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.requests.append((address_type, host, port))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        if host not in ("127.0.0.1", "localhost"):  # tests never leave the loopback
            writer.write(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
