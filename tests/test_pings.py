"""tether.pings: the ping bookkeeping both I/O layers share (payloads, pongs, round trips)."""

from __future__ import annotations

import pytest

from tether import ConcurrencyError
from tether.pings import answered_pings, ping_payload


def test_a_default_payload_is_four_random_bytes() -> None:
    payloads = {ping_payload({}, None) for _ in range(8)}
    assert {len(payload) for payload in payloads} == {4}
    assert len(payloads) > 1


def test_a_default_payload_is_never_one_already_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([b"used", b"used", b"free"])
    monkeypatch.setattr("tether.pings.os.urandom", lambda n: next(draws))
    waiting = {b"used": ("waiter", 0.0)}
    assert ping_payload(waiting, None) == b"free"


def test_given_data_is_the_payload_and_a_duplicate_is_refused() -> None:
    waiting = {b"caf\xc3\xa9": ("waiter", 0.0)}
    assert ping_payload(waiting, b"other") == b"other"
    with pytest.raises(ConcurrencyError, match="same data"):
        ping_payload(waiting, "café")


def test_a_pong_answers_its_ping_and_every_earlier_one() -> None:
    waiting = {b"a": ("first", 1.0), b"b": ("second", 2.0), b"c": ("third", 3.0)}
    answered = answered_pings(waiting, (b"a", b"b", b"unknown"), now=4.5)
    assert answered == [("first", 3.5), ("second", 2.5)]
    assert waiting == {b"c": ("third", 3.0)}
    assert answered_pings(waiting, (), now=5.0) == []
