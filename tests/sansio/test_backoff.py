"""The reconnection policy: delays (exponential, capped, jittered, seedable) and what to retry."""

from __future__ import annotations

import random

import pytest

from tether.exceptions import (
    ConnectionLostDuringHandshake,
    InvalidAccept,
    InvalidHTTP,
    InvalidProxy,
    InvalidStatus,
    InvalidUpgrade,
)
from tether.sansio.backoff import Backoff, should_reconnect
from tether.sansio.http11 import Headers, Response


def take(iterator: object, n: int) -> list[float]:
    return [next(iterator) for _ in range(n)]  # type: ignore[call-overload]


def test_without_jitter_delays_grow_by_factor_up_to_the_cap() -> None:
    policy = Backoff(first_delay=0, initial=1, factor=2, max_delay=10, jitter=0)
    assert take(policy.delays(), 7) == [0, 1, 2, 4, 8, 10, 10]


def test_first_delay_is_random_within_its_bound() -> None:
    policy = Backoff(first_delay=3, jitter=0)
    firsts = [next(policy.delays(random.Random(seed))) for seed in range(50)]
    assert all(0 <= d <= 3 for d in firsts)
    assert len(set(firsts)) == 50


def test_jitter_stays_within_the_fraction_of_the_nominal_delay() -> None:
    policy = Backoff(first_delay=0, initial=4, factor=1, max_delay=4, jitter=0.25)
    delays = take(policy.delays(random.Random(1)), 200)[1:]
    assert all(3 <= d <= 4 for d in delays)
    assert len(set(delays)) > 100


def test_same_seed_same_delays_and_fresh_iterators_restart() -> None:
    policy = Backoff()
    a = take(policy.delays(random.Random(7)), 10)
    b = take(policy.delays(random.Random(7)), 10)
    assert a == b
    assert a != take(policy.delays(random.Random(8)), 10)


@pytest.mark.parametrize(
    "kwargs", [{"factor": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}, {"initial": -1}]
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def response(status: int) -> Response:
    return Response(status, "", Headers())


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(),
        OSError("no route"),
        TimeoutError(),
        EOFError("stream ended after 0 bytes, before end of line"),
        ConnectionLostDuringHandshake("server", 0),  # no EOFError behind it
        InvalidStatus(response(500)),
        InvalidStatus(response(502)),
        InvalidStatus(response(503)),
        InvalidStatus(response(504)),
        InvalidProxy("http://p:3128", "HTTP 502 Bad Gateway", retryable=True),
    ],
    ids=repr,
)
def test_retried(exc: Exception) -> None:
    assert should_reconnect(exc)


def test_handshake_error_caused_by_a_lost_connection_is_retried() -> None:
    exc = InvalidHTTP("connection closed during the handshake")
    exc.__cause__ = EOFError()
    assert should_reconnect(exc)


@pytest.mark.parametrize(
    "exc",
    [
        InvalidStatus(response(400)),
        InvalidStatus(response(401)),
        InvalidStatus(response(403)),
        InvalidStatus(response(404)),
        InvalidStatus(response(426)),
        InvalidStatus(response(200)),
        InvalidStatus(response(501)),
        InvalidAccept("Sec-WebSocket-Accept", "x", "expected y"),
        InvalidUpgrade("Upgrade", None, "expected websocket"),
        InvalidHTTP("invalid status code in status line"),
        InvalidProxy("http://p:3128", "HTTP 407 Proxy Authentication Required"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_not_retried(exc: Exception) -> None:
    assert not should_reconnect(exc)
