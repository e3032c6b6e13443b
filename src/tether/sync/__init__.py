"""The threading server and client: blocking calls, usable from any thread.

::

    from tether.sync import connect

    with connect("ws://127.0.0.1:8765/") as ws:
        ws.send("hello")
        print(ws.recv())
"""

from __future__ import annotations

from .client import ClientConnection, connect
from .connection import Connection
from .router import Router, route
from .server import Server, ServerConnection, serve

__all__ = [
    "ClientConnection",
    "Connection",
    "Router",
    "Server",
    "ServerConnection",
    "connect",
    "route",
    "serve",
]
