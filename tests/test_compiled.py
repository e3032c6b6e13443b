"""tether.compiled: which sans-I/O modules mypyc compiles, and whether this process runs them.

``make test`` runs the suite against the editable install (pure Python: setup.py never compiles
with mypyc for ``pip install -e``); ``make test-compiled`` runs it against a wheel built with
mypyc and sets ``TETHER_TEST_COMPILED=1``, so that a mistake in either setup (the tree's
``src/`` shadowing the installed wheel, a module left out of the wheel) fails here instead of
testing the wrong thing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import tether
from tether import compiled

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tether"


def test_the_modules_to_compile_exist_and_are_sans_io() -> None:
    package = Path(tether.__file__).parent
    assert compiled.MYPYC_MODULES
    for path in compiled.MYPYC_MODULES:
        assert (package / path).is_file(), path  # the .py stays beside a compiled module
        assert path.startswith(("sansio/", "extensions/")), path
    assert compiled.module_names()[:2] == ["tether.sansio.codes", "tether.sansio.events"]
    assert len(set(compiled.module_names())) == len(compiled.MYPYC_MODULES)


def test_setup_py_compiles_the_listed_modules() -> None:
    # setup.py reads the list from src/tether/compiled.py (runpy), so there is one list.
    setup = (ROOT / "setup.py").read_text()
    assert 'runpy.run_path(str(HERE / "src" / "tether" / "compiled.py"))' in setup
    assert 'info["MYPYC_MODULES"]' in setup


def test_this_run_tests_the_build_it_means_to() -> None:
    names = compiled.compiled_modules()
    if os.environ.get("TETHER_TEST_COMPILED") == "1":
        # make test-compiled: the installed wheel, every listed module compiled.
        assert SRC not in Path(tether.__file__).resolve().parents, tether.__file__
        assert names == compiled.module_names()
        assert compiled.describe().startswith("sans-I/O core compiled with mypyc (")
    elif Path(tether.__file__).resolve().parent == SRC:
        # make test: the editable install of this tree, never compiled with mypyc.
        assert names == []
        assert compiled.describe().startswith("sans-I/O core in pure Python (")
    else:
        # Another tree (bench/compile_variants.py test, a wheel installed by hand): all or none.
        assert names in ([], compiled.module_names()), names
    for name in compiled.module_names():
        assert name in sys.modules


def test_describe_names_a_partly_compiled_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some modules compiled and others not: the leftovers of an interrupted or mixed install.
    monkeypatch.setattr(compiled, "compiled_modules", lambda: ["tether.sansio.frames"])
    total = len(compiled.MYPYC_MODULES)
    assert compiled.describe() == (
        f"sans-I/O core partly compiled (1 of {total} modules with mypyc): a stale build; "
        "reinstall tether"
    )
