"""Resolve type references in the reference to the name each object is documented under.

We document each public object once, under the name users import it by (``tether.serve``,
``tether.Limits``), while annotations and docstrings name it where it is defined
(``tether.limits.Limits``) or by its bare name (``Limits`` in a string annotation). With
``nitpicky`` on, every such reference would be a warning. This extension resolves a missing
Python reference by identity: it imports the target and links to whichever documented name
holds the same object; a bare name resolves when exactly one documented name ends with it.
A reference into the standard library (``ssl.SSLContext``, ``asyncio.Transport``) becomes plain
text, since the build has no network access for intersphinx, and so does a reference to a type
alias or to a helper class outside its module's ``__all__``. Anything else stays a warning,
which ``-W`` turns into a failure: a reference to a public tether name that is not documented.
"""

from __future__ import annotations

import pkgutil
import sys
from typing import Any, TypeVar

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.nodes import make_refnode

_MISSING = object()


def resolve_name(dotted: str) -> Any:
    """The object a dotted name refers to, importing modules as needed, or ``_MISSING``."""
    try:
        return pkgutil.resolve_name(dotted)
    except (ImportError, AttributeError, ValueError):
        return _MISSING


_cache: dict[int, tuple[int, tuple[dict[int, str], dict[str, list[str]]]]] = {}


def _documented(env: BuildEnvironment) -> tuple[dict[int, str], dict[str, list[str]]]:
    """Documented objects by identity and by last name component (cached per build)."""
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    cached = _cache.get(id(env))
    if cached is not None and cached[0] == len(objects):
        return cached[1]
    by_id: dict[int, str] = {}
    by_tail: dict[str, list[str]] = {}
    for name in sorted(objects):
        by_tail.setdefault(name.rsplit(".", 1)[-1], []).append(name)
        obj = resolve_name(name)
        # Only identities that mean something: classes, functions, modules, not str or int.
        if obj is not _MISSING and (callable(obj) or isinstance(obj, type(sys))):
            by_id.setdefault(id(obj), name)
    _cache[id(env)] = (len(objects), (by_id, by_tail))
    return by_id, by_tail


def _tether_modules() -> list[Any]:
    return [m for n, m in sorted(sys.modules.items()) if n.split(".")[0] == "tether" and m]


def _is_alias(obj: Any) -> bool:
    """A type alias or type variable: text in a signature, not a documented object."""
    return (not isinstance(obj, type) and not callable(obj)) or isinstance(obj, TypeVar)


def _public(obj: Any) -> bool:
    """In the ``__all__`` of its module: a helper that is not shows as text, not as a link."""
    module = sys.modules.get(getattr(obj, "__module__", ""))
    return getattr(obj, "__name__", None) in getattr(module, "__all__", ())


def _in_stdlib(obj: Any) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] in sys.stdlib_module_names


def _from_tether_scope(target: str) -> Any:
    """Look a name up in every loaded tether module: what a string annotation meant there.

    ``ssl_module.SSLContext`` (``import ssl as ssl_module``) resolves through the module's
    alias; ``Handler`` through the alias defined next to :func:`serve`.
    """
    head, _, rest = target.partition(".")
    for module in _tether_modules():
        obj = getattr(module, head, _MISSING)
        if obj is _MISSING:
            continue
        for attribute in rest.split(".") if rest else []:
            obj = getattr(obj, attribute, _MISSING)
            if obj is _MISSING:
                break
        else:
            return obj
    return _MISSING


def missing_reference(
    app: Sphinx, env: BuildEnvironment, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    top = target.split(".", 1)[0]
    if top in sys.stdlib_module_names and top != "tether":
        return contnode
    by_id, by_tail = _documented(env)
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    name: str | None = None
    obj = resolve_name(target) if "." in target else _MISSING
    if obj is not _MISSING and id(obj) in by_id:
        name = by_id[id(obj)]
    elif "." not in target and len(by_tail.get(target, [])) == 1:
        name = by_tail[target][0]
    elif "." not in target:
        # A name in scope of the module being documented: tether.typing aliases and the like.
        module = node.get("py:module") or ""
        obj = resolve_name(f"{module}.{target}") if module else _MISSING
        if obj is not _MISSING and id(obj) in by_id:
            name = by_id[id(obj)]
    if name is None:
        if obj is _MISSING:
            obj = _from_tether_scope(target)
        if obj is _MISSING:
            return None
        if id(obj) in by_id:
            name = by_id[id(obj)]
        elif _is_alias(obj) or _in_stdlib(obj) or not _public(obj):
            return contnode
        else:
            return None  # a tether class or function that the reference does not document
    entry = objects[name]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
