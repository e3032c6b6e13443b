"""The sans-I/O core and the extensions import nothing that does I/O or reads a clock."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "tether"
FORBIDDEN = {"asyncio", "socket", "ssl", "select", "selectors", "time", "threading"}
SANS_IO = sorted([*(SRC / "sansio").glob("*.py"), *(SRC / "extensions").glob("*.py")])


@pytest.mark.parametrize("path", SANS_IO, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sans_io_module_imports_no_io(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            # Relative imports must stay inside the sans-I/O layers.
            assert not node.module.startswith("asyncio"), f"{path.name} imports tether.asyncio"
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"


def test_there_are_sans_io_modules() -> None:
    assert len(SANS_IO) >= 10
