"""tether: a correct, fast and observable WebSocket library (RFC 6455, RFC 7692).

The names most programs need are here; the sans-I/O core is in :mod:`tether.sansio` and the
extensions in :mod:`tether.extensions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionFailed,
    ConnectionLostDuringHandshake,
    InvalidHandshake,
    InvalidRedirect,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    OpenTimeout,
    PayloadTooBig,
    ProtocolError,
    TetherError,
)
from .extensions.permessage_deflate import PRESETS, DeflateSettings
from .limits import Limits
from .sansio.codes import CloseCode
from .sansio.http11 import Headers, Request, Response
from .version import __version__

if TYPE_CHECKING:
    # Static tools see the asyncio names as ordinary imports; at run time they are loaded on
    # first use (below), so that ``import tether.sansio`` does not start tether.asyncio.
    from .asyncio import (
        ClientConnection,
        Connection,
        Server,
        ServerConnection,
        broadcast,
        broadcast_and_wait,
        connect,
        serve,
    )

# The names of the I/O layer, imported from tether.asyncio when first looked up.
_ASYNCIO_NAMES = frozenset(
    {
        "ClientConnection",
        "Connection",
        "Server",
        "ServerConnection",
        "broadcast",
        "broadcast_and_wait",
        "connect",
        "serve",
    }
)

__all__ = [
    "PRESETS",
    "ClientConnection",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionFailed",
    "ConnectionLostDuringHandshake",
    "DeflateSettings",
    "Headers",
    "InvalidHandshake",
    "InvalidRedirect",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "Limits",
    "OpenTimeout",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "Response",
    "Server",
    "ServerConnection",
    "TetherError",
    "__version__",
    "broadcast",
    "broadcast_and_wait",
    "connect",
    "serve",
]


def __getattr__(name: str) -> Any:
    """Load the asyncio layer on first use of one of its names (PEP 562)."""
    if name in _ASYNCIO_NAMES:
        from . import asyncio as _asyncio

        value = getattr(_asyncio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
