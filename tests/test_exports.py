"""The public API: every name in __all__ exists, and no name is exported twice."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "tether",
    "tether.exceptions",
    "tether.limits",
    "tether.options",
    "tether.typing",
    "tether.version",
    "tether.sansio",
    "tether.sansio.codes",
    "tether.sansio.frames",
    "tether.sansio.headers",
    "tether.sansio.http11",
    "tether.sansio.handshake",
    "tether.sansio.protocol",
    "tether.sansio.messages",
    "tether.sansio.masking",
    "tether.sansio.server",
    "tether.sansio.client",
    "tether.extensions.base",
    "tether.extensions.permessage_deflate",
    "tether.asyncio",
    "tether.asyncio.fanout",
    "tether.hub",
    "tether.sync",
    "tether.sync.client",
    "tether.sync.server",
    "tether.sync.connection",
    "tether.fragment_queue",
    "tether.sync.router",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute}"


def test_top_level_api() -> None:
    import tether

    for attribute in [
        "serve",
        "connect",
        "broadcast",
        "broadcast_and_wait",
        "Limits",
        "ConnectionClosed",
        "ConnectionFailed",
        "OpenTimeout",
    ]:
        assert attribute in tether.__all__
