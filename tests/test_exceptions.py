"""One exception tree: every exception class lives in tether.exceptions and is a TetherError."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re

import pytest

import tether.exceptions
from tether.exceptions import TetherError

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

# Exception classes that deliberately live elsewhere, with the reason.
ELSEWHERE = {
    # Internal to `tether inspect`: raised and caught inside the command, never by the library.
    "tether.cli.inspect.CannotConnect",
}


def modules() -> list[str]:
    names = []
    for path in sorted((SRC / "tether").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def exception_classes() -> list[type[BaseException]]:
    found = []
    for name in modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_every_exception_is_in_exceptions_py_and_a_tether_error() -> None:
    classes = exception_classes()
    assert len(classes) >= 30
    misplaced = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if f"{cls.__module__}.{cls.__qualname__}" not in ELSEWHERE
        and not is_private_refinement(cls)
        and (cls.__module__ != "tether.exceptions" or not issubclass(cls, TetherError))
    ]
    assert not misplaced


def is_private_refinement(cls: type[BaseException]) -> bool:
    """A private subclass of a public exception of exceptions.py (documented there).

    sansio/server.py refines InvalidRequest to pick the status and headers of its answer (405,
    426, 500); callers see, and catch, an InvalidRequest.
    """
    public = [getattr(tether.exceptions, name) for name in tether.exceptions.__all__]
    return cls.__name__.startswith("_") and any(
        base in public and issubclass(base, TetherError) for base in cls.__bases__
    )


def test_no_exception_class_is_defined_in_a_function_or_missed_by_the_import_scan() -> None:
    # A source scan as well: a class statement whose base names an exception, anywhere.
    pattern = re.compile(r"^\s*class (\w+)\((?:[\w.]*(?:Error|Exception)\b)", re.MULTILINE)
    defined = set()
    for path in (SRC / "tether").rglob("*.py"):
        for name in pattern.findall(path.read_text()):
            defined.add(name)
    found = {cls.__qualname__ for cls in exception_classes()}
    assert defined <= found


@pytest.mark.parametrize("name", tether.exceptions.__all__)
def test_the_docstring_tree_names_every_exception(name: str) -> None:
    doc = tether.exceptions.__doc__
    assert doc is not None
    assert re.search(rf"[─ ]{name}\b", doc), name


def test_the_docstring_tree_matches_the_classes() -> None:
    # Each line "├── Child" under a parent drawn one level up names a real subclass.
    doc = tether.exceptions.__doc__
    assert doc is not None
    stack: list[tuple[int, str]] = []
    checked = 0
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)\s", line + " ")
        if not match or not hasattr(tether.exceptions, match.group(2)):
            continue
        depth = len(match.group(1)) + (4 if "──" in line else 0)
        name = match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parent = getattr(tether.exceptions, stack[-1][1])
            assert issubclass(getattr(tether.exceptions, name), parent), (name, stack[-1][1])
            checked += 1
        stack.append((depth, name))
    assert checked == len(tether.exceptions.__all__) - 1  # all but TetherError, the root


def test_handshake_eof_names_what_happened() -> None:
    from tether.exceptions import ConnectionLostDuringHandshake, InvalidHandshake

    exc = ConnectionLostDuringHandshake("server", 12)
    assert isinstance(exc, InvalidHandshake)
    assert str(exc) == (
        "the server closed the connection before sending a complete HTTP response "
        "(12 bytes received)"
    )
    assert "(1 byte received)" in str(ConnectionLostDuringHandshake("client", 1))
