"""The asyncio server and client."""

from __future__ import annotations

from ..exceptions import InvalidRedirect
from .client import ClientConnection, connect
from .compression import Compression
from .connection import Connection
from .router import Router, route
from .server import Server, ServerConnection, broadcast, serve
from .unix import UnixServer, unix_connect, unix_serve

__all__ = [
    "ClientConnection",
    "Compression",
    "Connection",
    "InvalidRedirect",
    "Router",
    "Server",
    "ServerConnection",
    "UnixServer",
    "broadcast",
    "connect",
    "route",
    "serve",
    "unix_connect",
    "unix_serve",
]
