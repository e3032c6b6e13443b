"""tether: a correct, fast and observable WebSocket library (RFC 6455, RFC 7692).

The names most programs need are here; the sans-I/O core is in :mod:`tether.sansio` and the
extensions in :mod:`tether.extensions`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .asyncio import (
    ClientConnection,
    Connection,
    InvalidRedirect,
    Server,
    ServerConnection,
    broadcast,
    broadcast_and_wait,
    connect,
    serve,
)
from .exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionFailed,
    InvalidHandshake,
    InvalidState,
    InvalidStatus,
    OpenTimeout,
    PayloadTooBig,
    ProtocolError,
    TetherError,
)
from .extensions.permessage_deflate import PRESETS, DeflateSettings
from .limits import Limits
from .sansio.codes import CloseCode
from .sansio.http11 import Headers, Request, Response

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
    "DeflateSettings",
    "Headers",
    "InvalidHandshake",
    "InvalidRedirect",
    "InvalidState",
    "InvalidStatus",
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
