"""Which implementation of the sans-I/O core runs: compiled with mypyc, or pure Python.

A wheel built where a C compiler works holds the modules of :data:`MYPYC_MODULES` twice: the
``.py`` source, which is the reference implementation, and the same module compiled by mypyc
into an extension module, which Python imports first. The editable install of a checkout
(``make test``), a wheel built without a compiler (``py3-none-any``) and a build with
``TETHER_NO_MYPYC=1`` set hold the ``.py`` files only. Both run the same test suite.

A running process cannot switch: a compiled module, once imported, stays. To run pure Python,
install a pure build (see :func:`describe`). ``TETHER_NO_SPEEDUPS=1`` only concerns masking
(:mod:`tether.sansio.masking`), whose pure-Python functions are not among the compiled modules.

``setup.py`` reads :data:`MYPYC_MODULES` from this file without importing the package, so this
module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib.machinery
import sys

__all__ = ["MYPYC_MODULES", "compiled_modules", "describe"]

#: The modules setup.py compiles with mypyc, relative to ``src/tether/``. Chosen by measurement
#: (bench/README.md, "Shipping the compiled core"): the per-message path (frames, protocol,
#: messages, events, codes) and the per-connection path (streams, http11, headers, handshake,
#: server, client). masking.py stays pure: the C helper replaces its functions whenever a
#: compiler exists; extensions/ stays pure: zlib's time dominates there.
MYPYC_MODULES: tuple[str, ...] = (
    "sansio/codes.py",
    "sansio/events.py",
    "sansio/frames.py",
    "sansio/messages.py",
    "sansio/protocol.py",
    "sansio/streams.py",
    "sansio/http11.py",
    "sansio/headers.py",
    "sansio/handshake.py",
    "sansio/server.py",
    "sansio/client.py",
)

#: Build-time switch: set to anything but ``0`` to build without mypyc (C masking only).
NO_MYPYC_VARIABLE = "TETHER_NO_MYPYC"


def module_names() -> list[str]:
    """The dotted names of :data:`MYPYC_MODULES`."""
    return ["tether." + path.removesuffix(".py").replace("/", ".") for path in MYPYC_MODULES]


def compiled_modules() -> list[str]:
    """Those of :data:`MYPYC_MODULES` that run compiled (imported from an extension module).

    Imports them (they are what ``import tether`` loads anyway).
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = []
    for name in module_names():
        __import__(name)
        if (getattr(sys.modules[name], "__file__", None) or "").endswith(suffixes):
            compiled.append(name)
    return compiled


def describe() -> str:
    """One line for ``tether --version``: compiled or pure, and how to get the other one."""
    count, total = len(compiled_modules()), len(MYPYC_MODULES)
    if count == total:
        return (
            f"sans-I/O core compiled with mypyc ({count} modules); for pure Python, install "
            f"a build without it ({NO_MYPYC_VARIABLE}=1 pip install --no-binary tether tether)"
        )
    if count == 0:
        return (
            "sans-I/O core in pure Python (an editable install, a build without a C compiler "
            f"or with {NO_MYPYC_VARIABLE}=1); a wheel built with a C compiler compiles it with "
            "mypyc (faster)"
        )
    return (
        f"sans-I/O core partly compiled ({count} of {total} modules with mypyc): a stale "
        "build; reinstall tether"
    )
