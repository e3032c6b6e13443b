"""The sans-I/O core: bytes in, events out. Nothing here touches a socket or a clock.

A test (tests/test_layering.py) checks that no module of this package or of
:mod:`tether.extensions` imports asyncio, socket, ssl, select, selectors, time or threading, nor
anything above it (the package root, the I/O layers, the command); and that importing it does
not load :mod:`tether.asyncio`.
"""

from __future__ import annotations

from .client import ClientProtocol
from .codes import CloseCode, Opcode
from .events import BinaryMessage, CloseReceived, Fragment, Ping, Pong, TextMessage
from .frames import Close, Frame
from .handshake import Handshake
from .http11 import Headers, Request, Response
from .protocol import EncodedMessage, Event, MessageEncoder, Protocol, Side, State
from .server import ServerProtocol
from .uri import WebSocketURI, parse_uri

__all__ = [
    "BinaryMessage",
    "ClientProtocol",
    "Close",
    "CloseCode",
    "CloseReceived",
    "EncodedMessage",
    "Event",
    "Fragment",
    "Frame",
    "Handshake",
    "Headers",
    "MessageEncoder",
    "Opcode",
    "Ping",
    "Pong",
    "Protocol",
    "Request",
    "Response",
    "ServerProtocol",
    "Side",
    "State",
    "TextMessage",
    "WebSocketURI",
    "parse_uri",
]
