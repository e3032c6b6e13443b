"""The asyncio server and client."""

from __future__ import annotations

from .client import ClientConnection, InvalidRedirect, connect
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
