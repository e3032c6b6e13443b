"""Build hook for tether's compiled modules: the C masking helper and the mypyc-compiled core.

The project's metadata lives in ``pyproject.toml``; this file adds two things to it.

1. The sans-I/O modules listed in ``src/tether/compiled.py`` (``MYPYC_MODULES``) are compiled
   with mypyc (a build requirement) when a wheel is built, next to the C masking helper
   (``tether.sansio._speedups``, declared in ``pyproject.toml``). Their ``.py`` files stay in
   the wheel: Python imports the compiled module first, and the source remains the reference.
   Not compiled: an editable install (``pip install -e``, ``make test``: pure Python plus the C
   helper, quick to iterate on), an sdist, or any build with ``TETHER_NO_MYPYC=1`` set.
2. When a compiled module fails to build (no working C compiler), it says so in one line and
   builds a pure-Python package instead (``py3-none-any`` wheel), rather than setuptools'
   ``optional = true``, which skips a failed extension without a word and still tags the wheel
   for the platform.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

_BUILD_ERRORS = (CCompilerError, CompileError, LinkError, ExecError, PlatformError, OSError)

# The commands that build compiled modules for a wheel or an installation. Not among them:
# editable_wheel (pip install -e), sdist, egg_info and dist_info (metadata only).
_BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "install"}

HERE = Path(__file__).resolve().parent


def mypyc_extensions() -> list[Extension]:
    """The mypyc-compiled modules, or none (see the module docstring)."""
    if not _BUILD_COMMANDS.intersection(sys.argv[1:]):
        return []
    info = runpy.run_path(str(HERE / "src" / "tether" / "compiled.py"))
    if os.environ.get(info["NO_MYPYC_VARIABLE"], "") not in ("", "0"):
        print(f"tether: {info['NO_MYPYC_VARIABLE']} is set; not compiling with mypyc", flush=True)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without build isolation, in an environment without mypy
        print("tether: mypyc not available; the sans-I/O core stays pure Python", flush=True)
        return []
    paths = [f"src/tether/{path}" for path in info["MYPYC_MODULES"]]
    # mypy reads the modules these import too, but reports errors only in the compiled ones:
    # `make typecheck` checks the whole tree, with the optional dependencies (zlib-ng, ...)
    # that the build environment does not have. group_name: one shared library for all of
    # them, named after the package.
    return mypycify(["--follow-imports=silent", *paths], opt_level="3", group_name="tether")


class BuildExtOrFallBack(build_ext):
    """Build the compiled modules; when one fails, warn once and build a pure-Python package."""

    _fell_back = False

    def run(self) -> None:
        if not self.inplace:
            self._remove_stale_modules()
        try:
            super().run()
        except _BUILD_ERRORS as exc:
            self._fall_back(exc)

    def build_extension(self, ext: Extension) -> None:
        if self._fell_back:
            return
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            self._fall_back(exc)

    def _remove_stale_modules(self) -> None:
        """Delete compiled modules that an earlier build left in ``build/`` and this one does
        not build (say, mypyc's after a build with TETHER_NO_MYPYC=1): the wheel takes every
        file there."""
        expected = {Path(self.get_ext_fullpath(ext.name)).resolve() for ext in self.extensions}
        root = Path(self.build_lib)
        for path in [*root.glob("tether__mypyc.*"), *root.glob("tether/**/*.so")]:
            if path.resolve() not in expected:
                path.unlink()

    def _fall_back(self, exc: BaseException) -> None:
        if self._fell_back:
            return
        self._fell_back = True
        print(
            "tether: C compiler not available; installing the pure-Python implementation"
            f" (slower) [{type(exc).__name__}]",
            file=sys.stderr,
            flush=True,
        )
        # Whatever was built before the failure goes too: all compiled or none.
        for built in self.extensions:
            for path in (self.get_ext_fullpath(built.name),):
                if os.path.exists(path):
                    os.remove(path)
        # No extension in the distribution: files go to purelib and the wheel is py3-none-any.
        self.distribution.ext_modules = []
        self.extensions = []
        bdist_wheel = self.distribution.command_obj.get("bdist_wheel")
        if bdist_wheel is not None:
            bdist_wheel.root_is_pure = True


setup(cmdclass={"build_ext": BuildExtOrFallBack}, ext_modules=mypyc_extensions())
