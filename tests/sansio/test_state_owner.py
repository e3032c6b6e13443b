"""protocol.py is the one owner of the state machine: nothing else assigns a state."""

from __future__ import annotations

import ast
import logging
import pathlib

import pytest

from tether.sansio.client import ClientProtocol
from tether.sansio.protocol import Protocol, Side, State
from tether.sansio.uri import parse_uri

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "tether"
PROTOCOL = SRC / "sansio" / "protocol.py"


def state_assignments(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of every assignment to an attribute ``state``/``_state``."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            targets: list[ast.expr] = []
            if isinstance(child, ast.Assign):
                targets = child.targets
            elif isinstance(child, ast.AugAssign | ast.AnnAssign):
                targets = [child.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr in ("state", "_state"):
                        found.append((name, part.lineno))
            # setattr(obj, "state", ...) too
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "setattr"
                and len(child.args) >= 2
                and isinstance(child.args[1], ast.Constant)
                and child.args[1].value in ("state", "_state")
            ):
                found.append((name, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_the_scan_finds_assignments() -> None:
    source = "def f(p):\n    p.state = 1\n    p.x._state += 1\n    setattr(p, 'state', 2)\n"
    assert state_assignments(ast.parse(source)) == [("f", 2), ("f", 3), ("f", 4)]


@pytest.mark.parametrize(
    "path",
    [path for path in sorted(SRC.rglob("*.py")) if path != PROTOCOL],
    ids=lambda path: str(path.relative_to(SRC)),
)
def test_no_other_module_assigns_a_state(path: pathlib.Path) -> None:
    assert state_assignments(ast.parse(path.read_text())) == []


def test_protocol_assigns_the_state_in_two_places_only() -> None:
    found = state_assignments(ast.parse(PROTOCOL.read_text()))
    assert sorted({function for function, _ in found}) == ["__init__", "_set_state"]


def test_state_is_read_only() -> None:
    protocol = Protocol(Side.CLIENT)
    with pytest.raises(AttributeError):
        protocol.state = State.CLOSED  # type: ignore[misc]


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tether.test.state")
    logger.setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="tether.test.state"):
        client = ClientProtocol(parse_uri("ws://example.com/"), logger=logger)
        client.receive_eof()
    assert client.state is State.CLOSED
    assert "= connection is CLOSED" in caplog.messages
