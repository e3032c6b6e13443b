"""The asyncio server and client."""

from __future__ import annotations

from .client import ClientConnection, InvalidRedirect, connect
from .compression import Compression
from .connection import Connection
from .router import Router, route
from .server import Server, ServerConnection, broadcast, serve

__all__ = [
    "ClientConnection",
    "Compression",
    "Connection",
    "InvalidRedirect",
    "Router",
    "Server",
    "ServerConnection",
    "broadcast",
    "connect",
    "route",
    "serve",
]
