"""Reconnection policy: which failures to retry and how long to wait (no I/O, no clock).

RFC 6455 section 7.2.3 ("Recovering from Abnormal Closure") asks clients that reconnect
after an abnormal closure to "use some form of backoff", to wait "a random amount of time"
before the first attempt so that many clients cut off at once do not come back at once, and
to increase the delay on each failure ("truncated binary exponential backoff" is the
example). :class:`Backoff` computes those delays; :func:`should_reconnect` says which
failures deserve a retry. Both are pure, so the asyncio and threading layers share them and
tests drive them with a seeded :class:`random.Random`.

The delays are ``initial`` scaled by ``factor`` per failed attempt, capped at ``max_delay``,
each with "full jitter" on the fraction ``jitter`` of it (``jitter=0`` gives exact delays,
``jitter=1`` any delay between 0 and the nominal one), plus a random first delay in
``[0, first_delay]``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

from ..exceptions import ConnectionLostDuringHandshake, InvalidProxy, InvalidStatus, TetherError

__all__ = ["RETRYABLE_STATUSES", "Backoff", "should_reconnect"]

#: Statuses that mean "try again later" rather than "no": the server or a gateway in front
#: of it is failing, overloaded or restarting (RFC 9110 sections 15.6.1, 15.6.3-15.6.5).
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts: exponential, capped, with jitter.

    Attributes:
        first_delay: the first attempt after a failure waits a random time in ``[0,
            first_delay]`` (RFC 6455 7.2.3); ``0`` retries at once.
        initial: the nominal delay before the second retry.
        factor: how much the nominal delay grows after each further failure (``>= 1``).
        max_delay: the cap of the nominal delay.
        jitter: the fraction of each nominal delay that is randomised, in ``[0, 1]``: a delay
            is ``nominal * (1 - jitter * r)`` for a uniform ``r`` in ``[0, 1)``.
    """

    first_delay: float = 1.0
    initial: float = 2.0
    factor: float = 1.6
    max_delay: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.first_delay < 0 or self.initial < 0 or self.max_delay < 0:
            raise ValueError("backoff delays must be >= 0")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, got {self.jitter}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Return an endless iterator of delays, one per consecutive failed attempt.

        Start a fresh iterator after a success. ``rng`` makes the sequence reproducible
        (``random.Random(seed)``); the default is a fresh unseeded generator.
        """
        return _delays(self, rng if rng is not None else random.Random())


def _delays(policy: Backoff, rng: random.Random) -> Iterator[float]:
    yield rng.random() * policy.first_delay
    nominal = min(policy.initial, policy.max_delay)
    while True:
        yield nominal * (1 - policy.jitter * rng.random())
        nominal = min(nominal * policy.factor, policy.max_delay)


def should_reconnect(exc: BaseException) -> bool:
    """Whether a failed connection attempt (or a lost connection) is worth retrying.

    Retried: network errors (``OSError``: refused, reset, unreachable, DNS), timeouts, the
    connection ending during the handshake (``ConnectionLostDuringHandshake``, ``EOFError``,
    or any handshake error caused by one), statuses in :data:`RETRYABLE_STATUSES`, and proxy
    failures that say the target could not be reached (``InvalidProxy.retryable``). Not
    retried: any other refusal (a 4xx says "no", and asking again will not change the
    answer), an invalid handshake (a bug or a misconfiguration on one side), and anything that
    is not a connection failure.
    """
    if isinstance(exc, InvalidStatus):
        return exc.response.status in RETRYABLE_STATUSES
    if isinstance(exc, InvalidProxy):
        return exc.retryable
    if isinstance(exc, ConnectionLostDuringHandshake):
        return True
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return True
    # A handshake error that reports a lost connection ("stream ended before ...").
    return isinstance(exc, TetherError) and isinstance(
        exc.__cause__, (OSError, TimeoutError, EOFError)
    )
