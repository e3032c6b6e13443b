"""``async for ws in connect(uri)`` against real servers on 127.0.0.1.

Delays are set to a few milliseconds without jitter, so the tests wait on events, not on time.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from helpers.aio import run
from helpers.net import free_port
from tether import (
    ConnectionClosed,
    InvalidStatus,
    Request,
    Response,
    ServerConnection,
    connect,
    serve,
)
from tether.asyncio.reconnect import default_process_exception
from tether.exceptions import InvalidAccept
from tether.sansio.backoff import Backoff

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(first_delay=0, initial=0.01, factor=1, max_delay=0.01, jitter=0)


async def greet(ws: ServerConnection) -> None:
    await ws.send("hello")
    async for _ in ws:
        pass


def test_server_down_then_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.client")
    port = free_port()
    failures: list[Exception] = []

    async def main() -> None:
        first_failure = asyncio.Event()

        def count(exc: Exception) -> Exception | None:
            failures.append(exc)
            first_failure.set()
            return default_process_exception(exc)

        async def client() -> str:
            async for ws in connect(
                f"ws://127.0.0.1:{port}/", backoff=FAST, process_exception=count
            ):
                return str(await ws.recv())
            raise AssertionError("unreachable")

        task = asyncio.create_task(client())
        await first_failure.wait()
        async with serve(greet, "127.0.0.1", port):
            assert await task == "hello"

    run(main())
    assert failures and all(isinstance(exc, ConnectionRefusedError) for exc in failures)
    retries = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert len(retries) == len(failures)
    assert retries[0].levelno == logging.INFO
    assert "reconnecting in 0.00 s" in retries[0].getMessage()
    assert "ConnectionRefusedError" in retries[0].getMessage()


def test_503_then_ok(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.client")
    statuses: list[int] = []

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if not statuses:
            statuses.append(503)
            return ws.respond(503, "Restarting, try again.")
        statuses.append(101)
        return None

    async def main() -> str:
        async with serve(greet, "127.0.0.1", 0, process_request=process_request) as server:
            async for ws in connect(f"ws://127.0.0.1:{server.port_number}/", backoff=FAST):
                return str(await ws.recv())
        raise AssertionError("unreachable")

    assert run(main()) == "hello"
    assert statuses == [503, 101]
    (retry,) = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert "HTTP 503" in retry.getMessage()


def test_403_raises_at_once() -> None:
    attempts: list[str] = []

    def process_request(ws: ServerConnection, request: Request) -> Response:
        attempts.append(request.path)
        return ws.respond(403, "Go away.")

    async def main() -> None:
        async with serve(greet, "127.0.0.1", 0, process_request=process_request) as server:
            with pytest.raises(InvalidStatus) as info:
                async for _ in connect(f"ws://127.0.0.1:{server.port_number}/", backoff=FAST):
                    raise AssertionError("connected")
            assert info.value.response.status == 403

    run(main())
    assert attempts == ["/"]


def test_invalid_handshake_raises_at_once() -> None:
    attempts = 0

    async def bad_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(bad_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(InvalidAccept):
                async for _ in connect(f"ws://127.0.0.1:{port}/", backoff=FAST):
                    raise AssertionError("connected")

    run(main())
    assert attempts == 1


def test_connection_lost_during_the_handshake_is_retried() -> None:
    failures: list[Exception] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    def stop_after_three(exc: Exception) -> Exception | None:
        failures.append(exc)
        return exc if len(failures) == 3 else default_process_exception(exc)

    async def main() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(Exception) as info:
                async for _ in connect(
                    f"ws://127.0.0.1:{port}/", backoff=FAST, process_exception=stop_after_three
                ):
                    raise AssertionError("connected")
            assert info.value is failures[-1]

    run(main())
    assert len(failures) == 3
    assert all(default_process_exception(exc) is None for exc in failures)


def test_body_ending_normally_reconnects_on_next_iteration() -> None:
    opened: list[int] = []

    async def count(ws: ServerConnection) -> None:
        opened.append(1)
        await ws.send(str(len(opened)))
        async for _ in ws:
            pass

    async def main() -> list[str]:
        seen: list[str] = []
        async with serve(count, "127.0.0.1", 0) as server:
            async for ws in connect(f"ws://127.0.0.1:{server.port_number}/", backoff=FAST):
                seen.append(str(await ws.recv()))
                if len(seen) == 3:
                    break
            # Each connection but the last was closed cleanly before the next one opened.
        return seen

    assert run(main()) == ["1", "2", "3"]


def test_hook_may_replace_the_exception() -> None:
    class Fatal(Exception):
        pass

    async def main() -> None:
        with pytest.raises(Fatal) as info:
            async for _ in connect(
                f"ws://127.0.0.1:{free_port()}/",
                backoff=FAST,
                process_exception=lambda exc: Fatal("give up"),
            ):
                raise AssertionError("connected")
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    run(main())


def test_client_survives_a_server_restart() -> None:
    async def main() -> list[str]:
        port = free_port()
        received: list[str] = []
        first_down = asyncio.Event()

        async def client() -> None:
            async for ws in connect(f"ws://127.0.0.1:{port}/", backoff=FAST):
                try:
                    async for message in ws:  # ends cleanly on the server's 1001
                        received.append(str(message))
                        if len(received) == 2:
                            return
                except ConnectionClosed:
                    continue
                finally:
                    first_down.set()

        server = await serve(greet, "127.0.0.1", port)
        task = asyncio.create_task(client())
        while not received:
            await asyncio.sleep(0.01)
        server.close()  # closes the connection with 1001 (going away)
        await server.wait_closed()
        await first_down.wait()  # the client is now retrying against a closed port
        async with serve(greet, "127.0.0.1", port):
            await task
        return received

    assert run(main()) == ["hello", "hello"]
