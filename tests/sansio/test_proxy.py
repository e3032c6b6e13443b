"""Proxy selection from the environment, proxy URLs, and the CONNECT / SOCKS5 codecs (no I/O)."""

from __future__ import annotations

import urllib.request

import pytest

from tether.exceptions import InvalidProxy
from tether.sansio.proxy import (
    HTTPConnectTunnel,
    Proxy,
    SOCKS5Tunnel,
    parse_proxy,
    proxy_bypass,
    proxy_from_environment,
)
from tether.sansio.uri import parse_uri

# --- proxy URLs ------------------------------------------------------------------------------


def test_parse_proxy_urls() -> None:
    assert parse_proxy("http://u%40x:p%3Aw@proxy:3128") == Proxy(
        "http", "proxy", 3128, "u@x", "p:w"
    )
    assert parse_proxy("proxy.example:8080") == Proxy("http", "proxy.example", 8080)
    assert parse_proxy("HTTP://proxy") == Proxy("http", "proxy", 80)
    assert parse_proxy("socks5://[::1]") == Proxy("socks5", "::1", 1080)
    assert parse_proxy("socks5h://a:b@h:1") == Proxy("socks5h", "h", 1, "a", "b")
    assert str(parse_proxy("http://u:secret@proxy:3128")) == "http://u@proxy:3128"


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("https://proxy:443", "unsupported proxy scheme 'https'"),
        ("socks4://proxy", "unsupported proxy scheme 'socks4'"),
        ("http://:3128", "no host"),
        ("http://proxy:99999", "invalid port"),
    ],
)
def test_invalid_proxy_urls(url: str, text: str) -> None:
    with pytest.raises(InvalidProxy, match=text):
        parse_proxy(url)


# --- environment -----------------------------------------------------------------------------

WS = parse_uri("ws://example.com/")
WSS = parse_uri("wss://example.com/")


@pytest.mark.parametrize(
    ("environ", "ws", "wss"),
    [
        ({}, None, None),
        ({"http_proxy": "http://h:1"}, "http://h:1", None),
        ({"HTTPS_PROXY": "http://s:1"}, None, "http://s:1"),
        (
            {"ALL_PROXY": "socks5h://a:1", "https_proxy": "http://s:1"},
            "socks5h://a:1",
            "http://s:1",
        ),
        ({"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1"}, "http://lower:1", None),
        ({"http_proxy": "http://h:1", "REQUEST_METHOD": "GET"}, "http://h:1", None),
        ({"HTTP_PROXY": "http://h:1", "REQUEST_METHOD": "GET"}, None, None),
        ({"all_proxy": "http://a:1", "NO_PROXY": "*"}, None, None),
        ({"all_proxy": "http://a:1", "no_proxy": "example.com"}, None, None),
        ({"all_proxy": "http://a:1", "no_proxy": ".com"}, None, None),
        ({"all_proxy": "http://a:1", "no_proxy": "ample.com"}, "http://a:1", "http://a:1"),
        ({"all_proxy": "http://a:1", "no_proxy": "example.com:443"}, "http://a:1", None),
        ({"all_proxy": "http://a:1", "http_proxy": ""}, "http://a:1", "http://a:1"),
    ],
)
def test_proxy_from_environment(environ: dict[str, str], ws: str | None, wss: str | None) -> None:
    assert proxy_from_environment(WS, environ) == ws
    assert proxy_from_environment(WSS, environ) == wss


@pytest.mark.parametrize(
    ("host", "port", "no_proxy"),
    [
        ("example.com", 80, "example.com"),
        ("www.example.com", 80, "example.com"),
        ("www.example.com", 80, ".example.com"),
        ("Example.COM", 80, "example.com"),
        ("example.com", 80, "other.org, example.com"),
        ("example.com", 8080, "example.com:8080"),
        ("example.com", 80, "example.com:8080"),
        ("notexample.com", 80, "example.com"),
        ("example.com", 80, "*"),
        ("127.0.0.1", 80, "127.0.0.1"),
        ("127.0.0.1", 80, "localhost"),
    ],
)
def test_bypass_agrees_with_urllib(host: str, port: int, no_proxy: str) -> None:
    # Undocumented in urllib, so missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    expected = bypass(f"{host}:{port}", {"no": no_proxy})
    assert proxy_bypass(host, port, no_proxy) == bool(expected)


def test_bypass_beyond_urllib() -> None:
    assert proxy_bypass("10.1.2.3", 80, "10.0.0.0/8")
    assert not proxy_bypass("11.1.2.3", 80, "10.0.0.0/8")
    assert proxy_bypass("::1", 80, "[::1]")
    assert proxy_bypass("::1", 80, "::1/128")
    assert proxy_bypass("a.b", 80, "x, *")


# --- HTTP CONNECT ----------------------------------------------------------------------------


def test_connect_request_with_basic_auth() -> None:
    tunnel = HTTPConnectTunnel(parse_proxy("http://alice:s3cret@p:3128"), "::1", 8443)
    assert tunnel.data_to_send() == (
        b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"
        b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
    )
    assert not tunnel.established
    tunnel.receive_data(b"HTTP/1.1 200 Connection established\r\nContent-Length: 99\r\n")
    assert not tunnel.established
    tunnel.receive_data(b"\r\n")  # a 2xx to CONNECT has no body, whatever the headers say
    assert tunnel.established
    assert tunnel.leftover == b""


def test_connect_byte_by_byte() -> None:
    tunnel = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80, user_agent="t/1")
    assert b"User-Agent: t/1\r\n" in tunnel.data_to_send()
    for byte in b"HTTP/1.1 200 OK\r\n\r\n":
        assert not tunnel.established
        tunnel.receive_data(bytes([byte]))
    assert tunnel.established


@pytest.mark.parametrize(
    ("status", "credentials", "text", "retryable"),
    [
        (407, False, "HTTP 407 Nope to CONNECT h:80; put credentials in the proxy URL", False),
        (407, True, "the credentials in the proxy URL were refused", False),
        (403, False, "HTTP 403 Nope to CONNECT h:80", False),
        (502, False, "HTTP 502 Nope", True),
        (503, False, "HTTP 503 Nope", True),
    ],
)
def test_connect_refused(status: int, credentials: bool, text: str, retryable: bool) -> None:
    url = "http://u:p@proxy:3128" if credentials else "http://proxy:3128"
    tunnel = HTTPConnectTunnel(parse_proxy(url), "h", 80)
    with pytest.raises(InvalidProxy) as info:
        tunnel.receive_data(f"HTTP/1.1 {status} Nope\r\nContent-Length: 4\r\n\r\nbody".encode())
    assert text in str(info.value)
    assert str(info.value).startswith(f"proxy {url.replace(':p@', '@')} failed")
    assert "p@" not in str(info.value).replace("u@", "")
    assert info.value.retryable is retryable
    with pytest.raises(InvalidProxy):  # stays failed
        tunnel.receive_data(b"more")


def test_connect_garbage_and_eof() -> None:
    tunnel = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    with pytest.raises(InvalidProxy, match="invalid answer to CONNECT"):
        tunnel.receive_data(b"SSH-2.0-OpenSSH\r\n")
    tunnel = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    tunnel.receive_data(b"HTTP/1.1 200")
    with pytest.raises(InvalidProxy, match="closed the connection during its handshake"):
        tunnel.receive_eof()


def test_connect_response_head_is_bounded() -> None:
    tunnel = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    tunnel.receive_data(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(InvalidProxy, match=r"max_line_length|max_head_size"):
        for _ in range(1000):
            tunnel.receive_data(b"X-Long: " + b"a" * 1000)


# --- SOCKS5 ------------------------------------------------------------------------------------

SUCCESS = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"


def test_socks5_no_auth_ipv4() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5://p"), "127.0.0.1", 8080)
    assert tunnel.data_to_send() == b"\x05\x01\x00"
    tunnel.receive_data(b"\x05\x00")
    assert tunnel.data_to_send() == b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"
    tunnel.receive_data(SUCCESS[:5])
    assert not tunnel.established
    tunnel.receive_data(SUCCESS[5:] + b"extra")
    assert tunnel.established
    assert tunnel.bound == ("127.0.0.1", 8080)
    assert tunnel.leftover == b"extra"


def test_socks5_domain_ipv6_and_auth() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5h://bob:pw@p"), "example.com", 443)
    assert tunnel.data_to_send() == b"\x05\x02\x02\x00"
    tunnel.receive_data(b"\x05\x02")
    assert tunnel.data_to_send() == b"\x01\x03bob\x02pw"
    tunnel.receive_data(b"\x01\x00")
    assert tunnel.data_to_send() == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    tunnel.receive_data(b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x00\x50")
    assert tunnel.established and tunnel.bound == ("::1", 80)
    six = SOCKS5Tunnel(parse_proxy("socks5://p"), "[::1]", 1)
    assert six.data_to_send() == b"\x05\x01\x00"
    six.receive_data(b"\x05\x00")
    assert six.data_to_send() == b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x01"


def test_socks5_server_may_skip_auth_we_offered() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5://bob:pw@p"), "1.2.3.4", 1)
    assert tunnel.data_to_send() == b"\x05\x02\x02\x00"
    tunnel.receive_data(b"\x05\x00")
    assert tunnel.data_to_send().startswith(b"\x05\x01\x00\x01")


@pytest.mark.parametrize(
    ("url", "replies", "text", "retryable"),
    [
        ("socks5://p", [b"\x04\x5a"], "not a SOCKS5 proxy", False),
        ("socks5://p", [b"\x05\xff"], "requires credentials: socks5://user:password@", False),
        ("socks5://u:p@p", [b"\x05\xff"], "username/password offered", False),
        ("socks5://p", [b"\x05\x02"], "method 2, not offered", False),
        ("socks5://u:p@p", [b"\x05\x02", b"\x01\x01"], "authentication failed", False),
        (
            "socks5://p",
            [b"\x05\x00", b"\x05\x02\x00\x01"],
            "reply 2 (connection not allowed",
            False,
        ),
        ("socks5://p", [b"\x05\x00", b"\x05\x05\x00\x01"], "reply 5 (connection refused)", True),
        ("socks5://p", [b"\x05\x00", b"\x05\x01\x00\x01"], "reply 1 (general SOCKS", True),
        ("socks5://p", [b"\x05\x00", b"\x05\x09\x00\x01"], "reply 9 (unknown reply)", False),
        ("socks5://p", [b"\x05\x00", b"\x05\x00\x00\x07"], "address type 7", False),
    ],
)
def test_socks5_failures(url: str, replies: list[bytes], text: str, retryable: bool) -> None:
    tunnel = SOCKS5Tunnel(parse_proxy(url), "127.0.0.1", 80)
    with pytest.raises(InvalidProxy) as info:
        for reply in replies:
            tunnel.receive_data(reply)
    assert text in str(info.value)
    assert info.value.retryable is retryable


def test_socks5_eof_and_limits() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5://p"), "h", 1)
    tunnel.receive_data(b"\x05")
    with pytest.raises(InvalidProxy, match="closed the connection"):
        tunnel.receive_eof()
    with pytest.raises(ValueError):
        SOCKS5Tunnel(parse_proxy("socks5://p"), "a" * 300, 1)
    with pytest.raises(ValueError):
        SOCKS5Tunnel(parse_proxy("socks5://p"), "h", 0)
    long_user = SOCKS5Tunnel(parse_proxy(f"socks5://{'u' * 300}:p@p"), "h", 1)
    with pytest.raises(InvalidProxy, match="1 to 255 bytes"):
        long_user.receive_data(b"\x05\x02")


def test_connect_answered_in_http10() -> None:
    # tinyproxy answers "HTTP/1.0 200 Connection established"; a WebSocket handshake may not.
    tunnel = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    tunnel.receive_data(b"HTTP/1.0 200 Connection established\r\nProxy-agent: x\r\n\r\n")
    assert tunnel.established
    refused = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    with pytest.raises(InvalidProxy, match="HTTP 403"):
        refused.receive_data(b"HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    other = HTTPConnectTunnel(parse_proxy("p:1"), "h", 80)
    with pytest.raises(InvalidProxy, match=r"unsupported HTTP version HTTP/2\.0"):
        other.receive_data(b"HTTP/2.0 200 OK\r\n\r\n")


def test_bypass_ignores_an_invalid_network() -> None:
    assert not proxy_bypass("10.0.0.1", 80, "10.0.0.0/33")
    assert proxy_bypass("10.0.0.1", 80, "10.0.0.0/33, 10.0.0.0/8")


def test_socks5_bound_domain_name_then_nothing_more_is_expected() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5://p"), "127.0.0.1", 80)
    tunnel.receive_data(b"\x05\x00")
    tunnel.receive_data(b"\x05\x00\x00\x03\x05proxy\x04\x38")
    assert tunnel.established and tunnel.bound == ("proxy", 1080)
    tunnel.receive_eof()  # the tunnel is up: the target's end of stream is not the proxy's
    with pytest.raises(InvalidProxy, match="after the tunnel was established"):
        tunnel.receive_data(b"more")


def test_socks5_reply_with_another_version() -> None:
    tunnel = SOCKS5Tunnel(parse_proxy("socks5://p"), "127.0.0.1", 80)
    tunnel.receive_data(b"\x05\x00")
    with pytest.raises(InvalidProxy, match=r"invalid SOCKS5 reply \(version byte 4\)"):
        tunnel.receive_data(b"\x04\x00\x00\x01")


@pytest.mark.parametrize("host", ["", ".".join(["a" * 60] * 5)])
def test_socks5_host_name_length(host: str) -> None:
    with pytest.raises(ValueError, match="host name too long for SOCKS5"):
        SOCKS5Tunnel(parse_proxy("socks5://p"), host, 1)
