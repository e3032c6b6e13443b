"""The asyncio server and client."""

from __future__ import annotations

from ..options import Compression
from .broadcast import broadcast, broadcast_and_wait
from .client import ClientConnection, InvalidRedirect, connect
from .connection import Connection
from .server import Server, ServerConnection, serve

__all__ = [
    "ClientConnection",
    "Compression",
    "Connection",
    "InvalidRedirect",
    "Server",
    "ServerConnection",
    "broadcast",
    "broadcast_and_wait",
    "connect",
    "serve",
]
