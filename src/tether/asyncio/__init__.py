"""The asyncio server and client."""

from __future__ import annotations

from ..exceptions import InvalidRedirect
from .client import ClientConnection, connect
from .compression import Compression
from .connection import Connection
from .server import Server, ServerConnection, broadcast, serve

__all__ = [
    "ClientConnection",
    "Compression",
    "Connection",
    "InvalidRedirect",
    "Server",
    "ServerConnection",
    "broadcast",
    "connect",
    "serve",
]
