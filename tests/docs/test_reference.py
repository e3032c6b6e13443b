"""Every public name appears in the API reference (docs/reference/).

The reference documents each object once, under the name users import it by; a re-export
(``tether.asyncio.serve`` is ``tether.serve``) counts as documented when the very same object
is. The Sphinx build (``make docs``, ``-W -n``) then checks that each directive resolves and
that every cross-reference does; this test checks that nothing public is left out, which the
build cannot see.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"

#: The public modules: their ``__all__`` is the public API.
PUBLIC = [
    "tether",
    "tether.asyncio",
    "tether.sansio",
    "tether.exceptions",
    "tether.extensions.base",
    "tether.extensions.permessage_deflate",
    "tether.limits",
    "tether.typing",
    "tether.options",
    "tether.sync",
    "tether.asgi",
    "tether.hub",
]

DIRECTIVE = re.compile(
    r"^\.\. (?:auto|py:)(class|exception|function|data|attribute|module)::\s*(\S+)(.*)$",
    re.MULTILINE,
)


def resolve(dotted: str) -> Any:
    try:
        return pkgutil.resolve_name(dotted)
    except (ImportError, AttributeError) as exc:
        raise AssertionError(f"the reference documents {dotted}, which does not exist") from exc


def documented() -> tuple[set[str], list[Any]]:
    """The names the reference documents, and the objects they hold.

    ``automodule`` with ``:members:`` documents the ``__all__`` of the module, less its
    ``:exclude-members:`` (names documented elsewhere, as the same object).
    """
    names: set[str] = set()
    for page in sorted(REFERENCE.glob("*.md")):
        text = page.read_text()
        for match in DIRECTIVE.finditer(text):
            kind, name = match.group(1), match.group(2)
            names.add(name)
            if kind == "module":
                options = text[match.end() : match.end() + 200].split("\n\n", 1)[0]
                if ":members:" in options:
                    module = importlib.import_module(name)
                    excluded = re.search(r":exclude-members:(.*)", options)
                    skip = {m.strip() for m in excluded[1].split(",")} if excluded else set()
                    names.update(f"{name}.{m}" for m in module.__all__ if m not in skip)
    objects = []
    for name in names:
        objects.append(resolve(name))
    return names, objects


@pytest.mark.parametrize("module_name", PUBLIC)
def test_every_public_name_is_in_the_reference(module_name: str) -> None:
    names, objects = documented()
    module = importlib.import_module(module_name)
    missing = []
    for attribute in module.__all__:
        obj = getattr(module, attribute)
        if f"{module_name}.{attribute}" in names:
            continue
        # Same object documented under another name. Identity means something only for
        # objects that are not plain values: classes, functions, aliases.
        if not isinstance(obj, (str, int, float, bytes)) and any(obj is o for o in objects):
            continue
        missing.append(attribute)
    assert not missing, (
        f"{module_name}: {', '.join(missing)} not in docs/reference/*.md; add an autodoc "
        "directive under the name users import it by"
    )


def test_the_reference_documents_each_object_once() -> None:
    """Two names for one object would be two entries that can drift apart."""
    names, objects = documented()
    seen: dict[int, str] = {}
    for name, obj in zip(sorted(names), [resolve(n) for n in sorted(names)], strict=True):
        if isinstance(obj, (str, int, float, bytes, type(None), type(importlib))):
            continue
        assert id(obj) not in seen, f"{name} and {seen[id(obj)]} document the same object"
        seen[id(obj)] = name
    assert objects
