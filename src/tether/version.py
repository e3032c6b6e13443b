"""The version of tether, in one place (``pyproject.toml`` reads it from here).

A leaf module: the sans-I/O core reads ``__version__`` for its default ``User-Agent`` and
``Server`` headers without importing the package root (which would load :mod:`tether.asyncio`).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
