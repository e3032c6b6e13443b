"""tether.redirects: where connect() goes after a 3xx, shared by the I/O layers."""

from __future__ import annotations

import pytest

from tether import InvalidRedirect, InvalidStatus, InvalidURI
from tether.redirects import redirect_target, too_many_redirects
from tether.sansio.http11 import Headers, Response
from tether.sansio.uri import parse_uri


def refusal(status: int, location: str | None = None) -> InvalidStatus:
    headers = Headers()
    if location is not None:
        headers["Location"] = location
    return InvalidStatus(Response(status, "Moved", headers, b""))


@pytest.mark.parametrize(
    ("start", "location", "target"),
    [
        ("ws://a.example/x/y", "/final", "ws://a.example/final"),
        ("ws://a.example/x/y", "z?q=1", "ws://a.example/x/z?q=1"),
        ("ws://a.example/", "wss://b.example:8443/p", "wss://b.example:8443/p"),
        ("wss://a.example/", "https://b.example/p", "wss://b.example/p"),
        ("wss://a.example/", "//b.example/p", "wss://b.example/p"),
    ],
)
def test_location_resolves_against_the_refused_uri(start: str, location: str, target: str) -> None:
    assert str(redirect_target(parse_uri(start), refusal(302, location))) == target


def test_no_redirect_without_a_3xx_and_a_location() -> None:
    assert redirect_target(parse_uri("ws://a.example/"), refusal(302)) is None
    assert redirect_target(parse_uri("ws://a.example/"), refusal(403, "/elsewhere")) is None


@pytest.mark.parametrize("location", ["ws://b.example/", "http://b.example/"])
def test_a_redirect_may_not_drop_tls(location: str) -> None:
    exc = refusal(301, location)
    with pytest.raises(InvalidRedirect, match=r"from wss:// to ws://") as caught:
        redirect_target(parse_uri("wss://a.example/"), exc)
    assert caught.value.response is exc.response
    assert caught.value.__cause__ is exc


def test_a_location_that_is_not_a_websocket_uri_is_refused() -> None:
    with pytest.raises(InvalidURI):
        redirect_target(parse_uri("ws://a.example/"), refusal(302, "ftp://b.example/"))


def test_too_many_redirects_names_the_limit() -> None:
    exc = too_many_redirects(3)
    assert isinstance(exc, InvalidRedirect)
    assert exc.response is None
    assert str(exc) == "more than 3 redirects"
