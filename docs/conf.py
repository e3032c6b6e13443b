"""Sphinx configuration: MyST pages, autodoc reference, built by ``make docs`` with ``-W -n``."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402

import tether  # noqa: E402

project = "tether"
author = "the tether developers"
copyright = "the tether developers"
release = tether.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "tether_refs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "README.md"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The reference lists members explicitly; these apply to autoclass.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

nitpicky = True
html_theme = "alabaster"
html_title = f"tether {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "WebSockets for Python, exact and bounded",
    "fixed_sidebar": True,
}


# Attribute docstrings here are prose ("Write buffer high-water mark: send() waits above it"),
# not napoleon's "type: description" form; keep them as written.
def _attribute_docstring_as_written(self: GoogleDocstring) -> list[str]:
    return self._consume_to_end()


GoogleDocstring._parse_attribute_docstring = _attribute_docstring_as_written  # type: ignore[method-assign]

# asyncio.Protocol callbacks are how the event loop drives a connection, not API to call.
_PROTOCOL_CALLBACKS = {
    "connection_made",
    "connection_lost",
    "data_received",
    "eof_received",
    "get_buffer",
    "buffer_updated",
    "pause_writing",
    "resume_writing",
}


def _skip_member(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool:
    return skip or name in _PROTOCOL_CALLBACKS


def _drop_object_base(
    app: object, name: str, obj: object, options: object, bases: list[type]
) -> None:
    """ "Bases: object" says nothing; show bases only where there is one worth knowing."""
    bases[:] = [base for base in bases if base is not object]


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_member)  # type: ignore[attr-defined]
    app.connect("autodoc-process-bases", _drop_object_base)  # type: ignore[attr-defined]
