"""WebSocket over Unix sockets: a real socket file in tmp_path, its permissions and lifetime."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trustme

from helpers.aio import run
from tether import ServerConnection
from tether.asyncio.unix import unix_connect, unix_serve
from tether.exceptions import InvalidUnixPath
from tether.sansio.backoff import Backoff
from tether.sansio.unixpath import SUN_PATH_SIZE

pytestmark = pytest.mark.timeout(30)


async def echo_path(ws: ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(f"{ws.request.headers['Host']} {ws.request.path}")
    async for message in ws:
        await ws.send(message)


def test_echo_over_a_unix_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.server")
    path = tmp_path / "ws.sock"

    async def main() -> None:
        async with unix_serve(echo_path, path, mode=0o600) as server:
            info = os.stat(path)
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o600
            async with unix_connect(path, "ws://app.local/chat?x=1") as ws:
                assert await ws.recv() == "app.local /chat?x=1"
                await ws.send("hello")
                assert await ws.recv() == "hello"
            assert server.connections == set() or all(
                c.state.name == "CLOSED" for c in server.connections
            )
        assert not path.exists()  # removed on close

    run(main())
    assert f"server listening on ws over Unix socket {str(path)!r}" in caplog.text


def test_default_uri_and_group_mode(tmp_path: Path) -> None:
    path = tmp_path / "g.sock"

    async def main() -> None:
        async with unix_serve(echo_path, str(path), mode=0o660):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
            async with unix_connect(str(path)) as ws:
                assert await ws.recv() == "localhost /"

    run(main())


def _can_connect(path: Path) -> bool:
    """Connect from a process without our privileges: as ourselves, or as nobody if root."""
    code = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    user = "nobody" if os.geteuid() == 0 else None
    # nobody cannot read a Python under /root; the system's one needs nothing but socket.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run(
        [python, "-c", code, str(path)], user=user, capture_output=True, timeout=10
    )
    if done.returncode != 0:
        assert b"PermissionError" in done.stderr, done.stderr
    return done.returncode == 0


@pytest.mark.parametrize(("mode", "allowed"), [(0o600, False), (0o666, True)])
def test_mode_decides_who_may_connect(mode: int, allowed: bool) -> None:
    # A directory anyone may enter (pytest's tmp_path is private to its owner), so that the
    # socket's own mode is what decides.
    folder = Path(tempfile.mkdtemp(prefix="tether-unix-"))
    try:
        folder.chmod(0o755)
        path = folder / "ws.sock"

        async def main() -> None:
            async with unix_serve(echo_path, path, mode=mode):
                if os.geteuid() != 0 and not allowed:
                    path.chmod(0o000)  # our own process: drop even the owner's permission
                assert await asyncio.to_thread(_can_connect, path) is allowed

        run(main())
    finally:
        shutil.rmtree(folder)


def test_wss_over_a_unix_socket(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("app.local")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    path = tmp_path / "tls.sock"

    async def main() -> None:
        async with unix_serve(echo_path, path, ssl=server_context):
            async with unix_connect(path, "wss://app.local/", ssl=client_context) as ws:
                assert await ws.recv() == "app.local /"

    run(main())


def test_path_too_long_is_clear(tmp_path: Path) -> None:
    path = tmp_path / ("x" * SUN_PATH_SIZE)
    with pytest.raises(InvalidUnixPath) as info:
        unix_serve(echo_path, path)
    message = str(info.value)
    assert f"at most {SUN_PATH_SIZE - 1}" in message
    assert "use a shorter path" in message
    with pytest.raises(InvalidUnixPath):
        unix_connect(path)
    assert isinstance(info.value, ValueError)


def test_stale_socket_is_replaced_live_one_and_regular_file_are_not(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening, then closed: a leftover file
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")

    async def main() -> None:
        async with unix_serve(echo_path, stale):
            async with unix_connect(stale) as ws:
                assert await ws.recv() == "localhost /"
            with pytest.raises(OSError, match="another server is listening"):
                await unix_serve(echo_path, stale)
        with pytest.raises(InvalidUnixPath, match="is not a socket"):
            await unix_serve(echo_path, regular)
        assert regular.read_text() == "not a socket"

    run(main())


def test_nothing_listening(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError):
            await unix_connect(tmp_path / "missing.sock")

    run(main())


def test_reconnects_when_the_server_comes_up(tmp_path: Path) -> None:
    path = tmp_path / "later.sock"
    fast = Backoff(first_delay=0, initial=0.01, factor=1, max_delay=0.01, jitter=0)

    async def main() -> str:
        async def client() -> str:
            async for ws in unix_connect(path, backoff=fast):
                return str(await ws.recv())
            raise AssertionError("unreachable")

        task = asyncio.create_task(client())
        await asyncio.sleep(0.05)  # a few refused attempts; the result does not depend on it
        async with unix_serve(echo_path, path):
            return await task

    assert run(main()) == "localhost /"


def test_unix_connect_refuses_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not go through a proxy"):
        unix_connect(tmp_path / "s.sock", proxy="http://127.0.0.1:3128")
    unix_connect(tmp_path / "s.sock", proxy=None)  # explicit "no proxy" is fine
