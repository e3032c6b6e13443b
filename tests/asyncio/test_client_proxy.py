"""The client through real proxies on 127.0.0.1: tinyproxy (HTTP CONNECT), danted (SOCKS5),
and a minimal SOCKS5 server of our own for username/password authentication (see
``tests/helpers/proxies.py`` for why danted cannot test that as a non-system user)."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from helpers.aio import run as aio_run
from helpers.proxies import Danted, MiniSocks5, Tinyproxy, free_port
from tether import ServerConnection, connect, serve
from tether.exceptions import InvalidProxy
from tether.sansio.backoff import Backoff

pytestmark = [pytest.mark.timeout(60), pytest.mark.proxy]


def run(coro: Awaitable[Any]) -> Any:
    return aio_run(coro, 30)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def round_trip(uri: str, **kwargs: Any) -> str:
    async with connect(uri, **kwargs) as ws:
        await ws.send("through")
        return str(await ws.recv())


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    with Tinyproxy(tmp_path) as proxy:
        yield proxy


@pytest.fixture
def tinyproxy_auth(tmp_path: Path) -> Iterator[Tinyproxy]:
    with Tinyproxy(tmp_path, auth=("alice", "s3cret")) as proxy:
        yield proxy


@pytest.fixture
def danted(tmp_path: Path) -> Iterator[Danted]:
    blocked = free_port()
    with Danted(tmp_path, blocked_ports=[blocked]) as proxy:
        yield proxy


# --- HTTP CONNECT through tinyproxy ------------------------------------------------------------


def test_ws_through_tinyproxy(tinyproxy: Tinyproxy) -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.port_number
            assert await round_trip(f"ws://127.0.0.1:{port}/", proxy=tinyproxy.url) == "through"

    run(main())
    assert "CONNECT" in tinyproxy.logs()


def test_wss_through_tinyproxy(
    tinyproxy: Tinyproxy, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, ssl=tls[0]) as server:
            uri = f"wss://localhost:{server.port_number}/"
            assert await round_trip(uri, proxy=tinyproxy.url, ssl=tls[1]) == "through"

    run(main())
    assert "CONNECT" in tinyproxy.logs()


def test_tinyproxy_basic_auth(tinyproxy_auth: Tinyproxy) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{tinyproxy_auth.port}"

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.port_number}/"
            assert await round_trip(uri, proxy=url) == "through"
            with pytest.raises(InvalidProxy) as info:
                await round_trip(uri, proxy=tinyproxy_auth.url)
            assert "HTTP 407" in str(info.value)
            assert "put credentials in the proxy URL" in str(info.value)
            assert not info.value.retryable
            with pytest.raises(InvalidProxy) as info:
                await round_trip(uri, proxy=url.replace("s3cret", "wrong"))
            # tinyproxy answers wrong credentials with 401, missing ones with 407.
            assert re.search("HTTP 40[17] .*were refused", str(info.value))
            assert "wrong" not in str(info.value)

    run(main())


def test_tinyproxy_refuses_a_port(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            with Tinyproxy(tmp_path, connect_ports=[server.port_number + 1]) as proxy:
                with pytest.raises(InvalidProxy) as info:
                    await round_trip(f"ws://127.0.0.1:{server.port_number}/", proxy=proxy.url)
            assert "HTTP 403" in str(info.value)
            assert f"CONNECT 127.0.0.1:{server.port_number}" in str(info.value)

    run(main())


def test_environment_variables(tinyproxy_auth: Tinyproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    # The proxy needs credentials that the environment does not give: a 407 proves that the
    # connection went through it; success proves that it did not.
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.port_number}/"
            monkeypatch.setenv("HTTP_PROXY", tinyproxy_auth.url)
            with pytest.raises(InvalidProxy, match="HTTP 407"):
                await round_trip(uri)
            assert await round_trip(uri, proxy=None) == "through"
            monkeypatch.setenv("no_proxy", f"example.com, 127.0.0.1:{server.port_number}")
            assert await round_trip(uri) == "through"
            monkeypatch.delenv("no_proxy")
            monkeypatch.delenv("HTTP_PROXY")
            monkeypatch.setenv("https_proxy", tinyproxy_auth.url)
            assert await round_trip(uri) == "through"  # ws:// does not use https_proxy
            monkeypatch.setenv("ALL_PROXY", tinyproxy_auth.url)
            with pytest.raises(InvalidProxy, match="HTTP 407"):
                await round_trip(uri)

    run(main())


def test_reconnects_through_the_proxy_until_the_server_is_up(tinyproxy: Tinyproxy) -> None:
    port = free_port()
    failures: list[Exception] = []

    async def main() -> str:
        failed = asyncio.Event()

        def record(exc: Exception) -> Exception | None:
            failures.append(exc)
            failed.set()
            return None if isinstance(exc, InvalidProxy) and exc.retryable else exc

        async def client() -> str:
            async for ws in connect(
                f"ws://127.0.0.1:{port}/",
                proxy=tinyproxy.url,
                backoff=Backoff(first_delay=0, initial=0.01, max_delay=0.01, jitter=0),
                process_exception=record,
            ):
                await ws.send("up")
                return str(await ws.recv())
            raise AssertionError("unreachable")

        task = asyncio.create_task(client())
        await failed.wait()
        async with serve(echo, "127.0.0.1", port):
            return await task

    assert run(main()) == "up"
    assert "HTTP 5" in str(failures[0])


# --- SOCKS5 through danted ---------------------------------------------------------------------


def test_ws_and_wss_through_danted(
    danted: Danted, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.port_number}/"
            assert await round_trip(uri, proxy=danted.url) == "through"
            socks5h = danted.url.replace("socks5:", "socks5h:")
            assert await round_trip(uri, proxy=socks5h) == "through"
        async with serve(echo, "127.0.0.1", 0, ssl=tls[0]) as server:
            uri = f"wss://127.0.0.1:{server.port_number}/"
            assert await round_trip(uri, proxy=danted.url, ssl=tls[1]) == "through"

    run(main())


def test_danted_refusals(danted: Danted) -> None:
    (blocked,) = danted.blocked_ports
    closed = free_port()

    async def main() -> None:
        with pytest.raises(InvalidProxy) as info:
            await round_trip(f"ws://127.0.0.1:{blocked}/", proxy=danted.url)
        assert "SOCKS5 reply 2 (connection not allowed by ruleset)" in str(info.value)
        assert not info.value.retryable
        with pytest.raises(InvalidProxy) as info:
            await round_trip(f"ws://127.0.0.1:{closed}/", proxy=danted.url)
        assert "SOCKS5 reply 5 (connection refused)" in str(info.value)
        assert info.value.retryable

    run(main())


def test_danted_requiring_username_refuses_a_client_without_credentials(tmp_path: Path) -> None:
    async def main() -> None:
        with Danted(tmp_path, username=True) as proxy:
            with pytest.raises(InvalidProxy) as info:
                await round_trip(f"ws://127.0.0.1:{free_port()}/", proxy=proxy.url)
        assert "no acceptable authentication method" in str(info.value)
        assert "socks5://user:password@host:port" in str(info.value)

    run(main())


# --- SOCKS5 username/password (RFC 1929) against helpers.proxies.MiniSocks5 -------------------


def test_socks5_username_password() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server, MiniSocks5(("bob", "pa ss")) as proxy:
            port = server.port_number
            good = f"socks5h://bob:pa%20ss@127.0.0.1:{proxy.port}"
            assert await round_trip(f"ws://localhost:{port}/", proxy=good) == "through"
            assert proxy.requests[-1] == (3, "localhost", port)  # socks5h: name sent
            local = good.replace("socks5h:", "socks5:")
            assert await round_trip(f"ws://localhost:{port}/", proxy=local) == "through"
            assert proxy.requests[-1][0] in (1, 4)  # socks5: resolved here
            with pytest.raises(InvalidProxy) as info:
                await round_trip(f"ws://127.0.0.1:{port}/", proxy=good.replace("pa%20ss", "no"))
            assert "authentication failed" in str(info.value)
            assert proxy.logins == [("bob", "pa ss"), ("bob", "pa ss"), ("bob", "no")]

    run(main())


def test_ws_and_wss_through_both_proxies_on_uvloop(
    tinyproxy: Tinyproxy, danted: Danted, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    # uvloop's transports are not asyncio.Transport subclasses; start_tls and set_protocol
    # must work on them too.
    import uvloop  # a test dependency (pyproject.toml): missing must fail, not skip

    async def main() -> None:
        async with asyncio.timeout(30):
            assert "uvloop" in type(asyncio.get_running_loop()).__module__
            async with (
                serve(echo, "127.0.0.1", 0) as plain,
                serve(echo, "127.0.0.1", 0, ssl=tls[0]) as secure,
            ):
                for proxy in (tinyproxy.url, danted.url):
                    uri = f"ws://127.0.0.1:{plain.port_number}/"
                    assert await round_trip(uri, proxy=proxy) == "through"
                    uri = f"wss://127.0.0.1:{secure.port_number}/"
                    assert await round_trip(uri, proxy=proxy, ssl=tls[1]) == "through"

    uvloop.run(main())


def test_proxy_down_is_a_retryable_invalid_proxy() -> None:
    async def main() -> None:
        port = free_port()
        with pytest.raises(InvalidProxy) as info:
            await round_trip("ws://127.0.0.1:1/", proxy=f"http://127.0.0.1:{port}")
        assert f"proxy http://127.0.0.1:{port} failed: cannot connect to the proxy" in str(
            info.value
        )
        assert info.value.retryable
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    run(main())
