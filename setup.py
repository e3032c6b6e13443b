"""Build hook for the optional C masking helper (``tether.sansio._speedups``).

The project's metadata lives in ``pyproject.toml``; this file only replaces setuptools'
``optional = true`` (which skips a failed extension without a word and still tags the wheel for
the platform) with a build step that says so in one line and makes the wheel pure
(``py3-none-any``), since the pure-Python implementation is then the only one inside.
"""

from __future__ import annotations

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

_BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


class BuildExtOrFallBack(build_ext):
    """Build the C helper; when that fails, warn once and build a pure-Python package."""

    def run(self) -> None:
        try:
            super().run()
        except _BUILD_ERRORS as exc:
            self._fall_back(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        print(
            "tether: C compiler not available; installing the pure-Python implementation"
            f" (slower) [{type(exc).__name__}]",
            file=sys.stderr,
            flush=True,
        )
        # No extension in the distribution: files go to purelib and the wheel is py3-none-any.
        self.distribution.ext_modules = []
        self.extensions = []
        bdist_wheel = self.distribution.command_obj.get("bdist_wheel")
        if bdist_wheel is not None:
            bdist_wheel.root_is_pure = True


setup(cmdclass={"build_ext": BuildExtOrFallBack})
