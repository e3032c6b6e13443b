"""The asyncio server and client."""

from __future__ import annotations

from ..exceptions import InvalidRedirect
from ..options import Compression
from .client import ClientConnection, connect
from .connection import Connection
from .fanout import broadcast, broadcast_and_wait
from .router import Router, route
from .server import Server, ServerConnection, serve
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
    "broadcast_and_wait",
    "connect",
    "route",
    "serve",
    "unix_connect",
    "unix_serve",
]
