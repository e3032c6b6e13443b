"""The import graph of the package: no cycle, and every arrow points down the layers.

Every ``import`` and ``from ... import`` in ``src/tether`` (relative ones resolved to absolute
module names, imports inside functions included) is an edge of the graph. Imports under
``if TYPE_CHECKING:`` never run; they are kept apart as type-only edges, and the few that point
up are listed by name below.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tether"

# The layers, bottom first (see docs of the design: arrows point down only). A module belongs to
# the first entry whose name equals it or is a package prefix of it. Modules of one layer may
# import each other (cycles are checked separately). Layers that do not exist yet (sync, asgi,
# hub) are listed so that they land in the right place when they come.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("tether.exceptions", "tether.limits", "tether.typing", "tether.version")),
    # The interface the core calls; the extensions themselves sit above the core.
    ("extension interface", ("tether.extensions.base",)),
    ("sans-I/O core", ("tether.sansio",)),
    ("extensions", ("tether.extensions",)),
    # The options of serve()/connect(), validated, what a connection reads from its protocol,
    # its receive queue, the bookkeeping of pings and redirects, and hook responses: shared by
    # every I/O layer.
    (
        "shared options",
        (
            "tether.options",
            "tether.connection_info",
            "tether.fragment_queue",
            "tether.pings",
            "tether.redirects",
            "tether.responses",
            "tether.reads",
        ),
    ),
    ("I/O layers", ("tether.asyncio", "tether.sync", "tether.asgi")),
    ("hub", ("tether.hub",)),
    ("package root", ("tether",)),
    ("command", ("tether.cli", "tether.__main__")),
]

# Imports that only annotations use and that point up (they never run).
TYPE_ONLY_UPWARD = {
    ("tether.exceptions", "tether.sansio.frames"),
    ("tether.exceptions", "tether.sansio.http11"),
    ("tether.extensions.base", "tether.sansio.frames"),
}

# What the sans-I/O layers may never import, even inside a function.
SANS_IO_PACKAGES = ("tether.sansio", "tether.extensions")
FORBIDDEN_STDLIB = {"asyncio", "socket", "ssl", "select", "selectors", "time", "threading"}
FORBIDDEN_TETHER = ("tether.asyncio", "tether.sync", "tether.asgi", "tether.hub", "tether.cli")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute name of the module a ``from`` import with ``level`` dots names."""
    if level == 0:
        assert module is not None
        return module
    base = importer.split(".")
    if not is_package(importer):
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(importer: str, source: str) -> tuple[set[str], set[str]]:
    """(run-time imports, type-only imports) of one module, as absolute module names."""
    runtime: set[str] = set()
    type_only: set[str] = set()

    def visit(node: ast.AST, target: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                assert isinstance(child, ast.If)
                for statement in child.body:
                    visit_statement(statement, type_only)
                for statement in child.orelse:
                    visit_statement(statement, target)
            else:
                visit_statement(child, target)

    def visit_statement(node: ast.AST, target: set[str]) -> None:
        if isinstance(node, ast.Import):
            target.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(importer, node.level, node.module)
            if base != importer:  # ``from . import x`` in a package's own __init__
                target.add(base)
            for alias in node.names:
                # ``from . import name`` imports a submodule when there is one.
                if f"{base}.{alias.name}" in MODULES:
                    target.add(f"{base}.{alias.name}")
        visit(node, target)

    visit(ast.parse(source), runtime)
    return runtime, type_only


def build_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    runtime: dict[str, set[str]] = {}
    type_only: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        runtime[name], type_only[name] = imports_of(name, path.read_text())
    return runtime, type_only


RUNTIME, TYPE_ONLY = build_graph()


def layer_of(name: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return rank
    return None


def internal(edges: set[str]) -> set[str]:
    return {edge for edge in edges if edge == "tether" or edge.startswith("tether.")}


# --- the resolver itself --------------------------------------------------------------------


def test_resolve_relative_imports() -> None:
    assert resolve("tether.sansio.client", 2, None) == "tether"
    assert resolve("tether.sansio.client", 2, "exceptions") == "tether.exceptions"
    assert resolve("tether.sansio.client", 1, "protocol") == "tether.sansio.protocol"
    assert resolve("tether.sansio", 1, "client") == "tether.sansio.client"
    assert resolve("tether", 1, "version") == "tether.version"
    assert resolve("tether.sansio", 0, "os.path") == "os.path"


def test_from_dot_import_name_finds_the_package_root() -> None:
    # The import that once made the sans-I/O core load the asyncio layer.
    runtime, type_only = imports_of("tether.sansio.client", "from .. import __version__\n")
    assert runtime == {"tether"}
    assert type_only == set()


def test_type_checking_imports_are_type_only() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .frames import Frame\n"
        "def f():\n"
        "    from ..asyncio import connect\n"
    )
    runtime, type_only = imports_of("tether.sansio.protocol", source)
    assert runtime == {"typing", "tether.asyncio"}
    assert type_only == {"tether.sansio.frames"}


# --- the package ----------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) >= 25
    unplaced = [name for name in MODULES if layer_of(name) is None]
    assert not unplaced


def test_every_arrow_points_down() -> None:
    upward = []
    for importer, edges in RUNTIME.items():
        rank = layer_of(importer)
        assert rank is not None
        for imported in internal(edges):
            imported_rank = layer_of(imported)
            assert imported_rank is not None, f"{importer} imports unknown {imported}"
            if imported_rank > rank:
                upward.append(f"{importer} -> {imported}")
    assert not upward


def test_type_only_upward_imports_are_the_listed_ones() -> None:
    upward = set()
    for importer, edges in TYPE_ONLY.items():
        rank = layer_of(importer)
        assert rank is not None
        for imported in internal(edges):
            imported_rank = layer_of(imported)
            assert imported_rank is not None
            if imported_rank > rank:
                upward.add((importer, imported))
    assert upward == TYPE_ONLY_UPWARD


def test_no_import_cycle() -> None:
    graph = {name: internal(edges) & MODULES.keys() for name, edges in RUNTIME.items()}
    done: set[str] = set()
    stack: list[str] = []

    def walk(name: str) -> None:
        if name in done:
            return
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        stack.append(name)
        for imported in sorted(graph[name]):
            walk(imported)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        walk(name)


def test_leaves_import_nothing_from_tether() -> None:
    for name in LAYERS[0][1]:
        assert not internal(RUNTIME[name]), name


SANS_IO = sorted(name for name in MODULES if name.startswith(SANS_IO_PACKAGES))


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_module_imports_no_io_and_nothing_above(name: str) -> None:
    edges = RUNTIME[name] | TYPE_ONLY[name]
    stdlib = {edge.split(".")[0] for edge in edges} & FORBIDDEN_STDLIB
    assert not stdlib, f"{name} imports {stdlib}"
    above = {edge for edge in edges if edge == "tether" or edge.startswith(FORBIDDEN_TETHER)}
    assert not above, f"{name} imports {above}"


def test_there_are_sans_io_modules() -> None:
    assert len(SANS_IO) >= 14


@pytest.mark.parametrize("package", ["tether.sansio", "tether.extensions.permessage_deflate"])
def test_importing_the_core_does_not_load_the_io_layer(package: str) -> None:
    code = (
        f"import sys, {package}\n"
        "loaded = [m for m in sys.modules if m.startswith(('tether.asyncio', 'tether.cli'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_package_root_loads_the_io_layer_on_first_use() -> None:
    code = (
        "import sys, tether\n"
        "assert 'tether.asyncio' not in sys.modules\n"
        "from tether import connect\n"
        "assert connect.__module__ == 'tether.asyncio.client', connect.__module__\n"
        "assert 'serve' in dir(tether)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_leaf_copy_of_the_abnormal_closure_code() -> None:
    from tether.exceptions import ABNORMAL_CLOSURE, ConnectionClosed
    from tether.sansio.codes import CloseCode

    assert ABNORMAL_CLOSURE == CloseCode.ABNORMAL_CLOSURE
    assert ConnectionClosed(None, None).code == CloseCode.ABNORMAL_CLOSURE


def test_the_version_has_one_source() -> None:
    import importlib.metadata

    from tether.version import __version__

    pyproject = (SRC.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'attr = "tether.version.__version__"' in pyproject
    assert importlib.metadata.version("tether") == __version__


def test_the_command_loads_its_parts_on_demand() -> None:
    # `tether connect` needs neither the inspector nor the demo server.
    code = (
        "import sys, tether.cli\n"
        "loaded = [m for m in ('tether.cli.inspect', 'tether.cli.demo') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
