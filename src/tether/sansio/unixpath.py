"""Checking a Unix domain socket path before binding or connecting (no I/O).

A Unix socket address is a ``sockaddr_un`` whose ``sun_path`` has a fixed size: 108 bytes on
Linux, 104 on macOS and the BSDs (unix(7); POSIX leaves it unspecified). The path, encoded
with the file system encoding, must fit with its terminating NUL; the kernel's own error
("AF_UNIX path too long") says neither the length nor what to do, so we check first.
A Linux abstract address (a leading NUL byte) has no terminating NUL and no file.
"""

from __future__ import annotations

import os
import sys

from ..exceptions import InvalidUnixPath

__all__ = ["SUN_PATH_SIZE", "check_unix_path"]

#: The size of ``sockaddr_un.sun_path`` on this platform.
SUN_PATH_SIZE = 108 if sys.platform.startswith("linux") else 104


def check_unix_path(path: str | bytes | os.PathLike[str]) -> str | bytes:
    """Return ``path`` as a ``str`` or ``bytes`` the socket calls accept.

    Raises:
        InvalidUnixPath: the path is empty, or too long for ``sun_path``.
    """
    name = os.fspath(path)
    encoded = os.fsencode(name)
    if not encoded:
        raise InvalidUnixPath("empty Unix socket path")
    abstract = encoded.startswith(b"\0")
    limit = SUN_PATH_SIZE if abstract else SUN_PATH_SIZE - 1
    if len(encoded) > limit:
        raise InvalidUnixPath(
            f"Unix socket path is {len(encoded)} bytes long; this system allows at most "
            f"{limit}: use a shorter path, for example in /tmp or /run, or a path relative "
            f"to the working directory: {name!r}"
        )
    return name
