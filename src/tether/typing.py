"""Type aliases shared across tether."""

from __future__ import annotations

import logging
from typing import NewType, TypeAlias

__all__ = [
    "BytesLike",
    "Data",
    "ExtensionName",
    "ExtensionParameter",
    "LoggerLike",
    "Origin",
    "Subprotocol",
]

#: A message: ``str`` for text, ``bytes`` for binary.
Data: TypeAlias = str | bytes

#: Anything that can be sent as binary data.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: A logger or a logger adapter.
LoggerLike: TypeAlias = logging.Logger | logging.LoggerAdapter[logging.Logger]

#: A value of the ``Origin`` header.
Origin = NewType("Origin", str)

#: A subprotocol name, as in ``Sec-WebSocket-Protocol``.
Subprotocol = NewType("Subprotocol", str)

#: An extension name, as in ``Sec-WebSocket-Extensions``.
ExtensionName = NewType("ExtensionName", str)

#: One extension parameter: name and value (``None`` for a parameter without a value).
ExtensionParameter: TypeAlias = tuple[str, str | None]
