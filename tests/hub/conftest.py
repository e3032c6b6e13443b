"""Fixtures that run a hub test on both backends (the Redis one against a real redis-server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from helpers.hub import make_backend
from tether.hub import Backend


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_backend(request: pytest.FixtureRequest, backend_kind: str) -> Callable[..., Backend]:
    """Makes backends of the test's kind (all on the same Redis for ``redis``)."""
    url = request.getfixturevalue("redis_server").url if backend_kind == "redis" else None

    def factory(**kwargs: Any) -> Backend:
        return make_backend(backend_kind, url, **kwargs)

    return factory
