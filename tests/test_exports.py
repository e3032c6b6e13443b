"""The public API: every module has an __all__, every name in it exists, none twice."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tether

#: Modules without an ``__all__``: an empty package, the compiled speedups (which
#: ``tether.sansio.masking`` wraps), and ``__main__``, which runs the command when imported.
WITHOUT_ALL = {"tether.extensions", "tether.sansio._speedups", "tether.__main__"}

#: Every module of the package (walked, not listed, so that a new module is checked too).
SUBMODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tether.__path__, "tether.")
    if info.name not in WITHOUT_ALL
)
MODULES = ["tether", *SUBMODULES]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute}"


def test_every_module_is_checked() -> None:
    assert {"tether.asyncio", "tether.sansio.protocol", "tether.sync.router"} <= set(MODULES)
    assert len(MODULES) > 50


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
