"""The threading client through real proxies on 127.0.0.1: tinyproxy (HTTP CONNECT) and
danted (SOCKS5), started by the tests (tests/helpers/proxies.py)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from helpers.proxies import Danted, Tinyproxy, free_port
from helpers.sync_server import running, uri
from tether.exceptions import InvalidProxy
from tether.sync import ServerConnection, connect

pytestmark = [pytest.mark.timeout(60), pytest.mark.proxy]


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def round_trip(target: str, **kwargs: Any) -> Any:
    with connect(target, open_timeout=10, **kwargs) as ws:
        ws.send("through")
        return ws.recv(timeout=10)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    with Tinyproxy(tmp_path) as proxy:
        yield proxy


def test_ws_and_wss_through_tinyproxy(tinyproxy: Tinyproxy) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with running(echo) as server:
        assert round_trip(uri(server), proxy=tinyproxy.url) == "through"
    with running(echo, ssl=server_context) as server:
        target = f"wss://localhost:{server.port_number}/"
        assert round_trip(target, proxy=tinyproxy.url, ssl=client_context) == "through"
    assert tinyproxy.logs().count("CONNECT") >= 2


def test_proxy_from_the_environment(tinyproxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", tinyproxy.url)
    with running(echo) as server:
        assert round_trip(uri(server)) == "through"
        assert "CONNECT" in tinyproxy.logs()
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # nothing listens there
        assert round_trip(uri(server), proxy=None) == "through"
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert round_trip(uri(server)) == "through"


def test_tinyproxy_basic_auth(tmp_path: Path) -> None:
    with Tinyproxy(tmp_path, auth=("alice", "s3cret")) as proxy, running(echo) as server:
        url = f"http://alice:s3cret@127.0.0.1:{proxy.port}"
        assert round_trip(uri(server), proxy=url) == "through"
        with pytest.raises(InvalidProxy) as info:
            round_trip(uri(server), proxy=proxy.url)
        assert "HTTP 407" in str(info.value)
        assert not info.value.retryable


def test_socks5_through_danted_and_refusals(tmp_path: Path) -> None:
    blocked = free_port()
    with Danted(tmp_path, blocked_ports=[blocked]) as proxy, running(echo) as server:
        assert round_trip(uri(server), proxy=proxy.url) == "through"
        socks5h = proxy.url.replace("socks5://", "socks5h://")
        assert round_trip(uri(server), proxy=socks5h) == "through"
        with pytest.raises(InvalidProxy) as info:
            round_trip(f"ws://127.0.0.1:{blocked}/", proxy=proxy.url)
        assert "not allowed" in str(info.value)


def test_an_unreachable_proxy_is_a_retryable_invalid_proxy() -> None:
    port = free_port()
    with pytest.raises(InvalidProxy) as info:
        round_trip("ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{port}")
    assert info.value.retryable
    assert f"127.0.0.1:{port}" in str(info.value)
