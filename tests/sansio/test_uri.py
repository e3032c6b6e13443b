"""Tests for tether.sansio.uri: WebSocket URIs (RFC 6455 3), as the client parses them."""

from __future__ import annotations

import pytest

from tether.exceptions import InvalidURI
from tether.sansio.uri import parse_uri


def test_ws_and_wss_defaults() -> None:
    plain = parse_uri("ws://example.com")
    assert (plain.secure, plain.host, plain.port, plain.resource_name) == (
        False,
        "example.com",
        80,
        "/",
    )
    secure = parse_uri("WSS://example.com:8443/chat?room=1")
    assert (secure.secure, secure.port, secure.resource_name) == (True, 8443, "/chat?room=1")
    assert secure.user_info is None


def test_http_schemes_are_accepted_as_ws() -> None:
    assert parse_uri("https://example.com/").secure
    assert not parse_uri("http://example.com/").secure


def test_user_info_is_unquoted() -> None:
    assert parse_uri("ws://al%20ice:p%40ss@h/").user_info == ("al ice", "p@ss")
    assert parse_uri("ws://bob@h/").user_info == ("bob", "")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("ftp://example.com/", "scheme isn't ws or wss"),
        ("ws://example.com/#top", "a WebSocket URI has no fragment"),
        ("ws:///path", "no host"),
        ("ws://example.com:99999/", "Port out of range"),
        ("ws://example.com:port/", "Port could not be cast"),
    ],
)
def test_invalid_uris(uri: str, reason: str) -> None:
    with pytest.raises(InvalidURI) as caught:
        parse_uri(uri)
    assert reason in str(caught.value)
    assert uri in str(caught.value)
