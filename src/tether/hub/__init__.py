"""Publish/subscribe across processes and hosts, on top of the asyncio layer.

:class:`Hub` delivers channel messages to WebSocket connections through tether's encode-once
``broadcast`` with a slow-consumer policy; messages carry per-channel offsets, and a client that
reconnects with its last offset gets what it missed, in order, or an explicit ``unrecoverable``
signal. Backends: :class:`MemoryBackend` (one process) and :class:`RedisBackend` (Redis
streams; ``pip install 'tether[redis]'``). The JSON wire format is in :mod:`tether.hub.wire`.
See ``docs/deployment.md``.
"""

from __future__ import annotations

from .base import Backend, History, Message, Signal, check_channel
from .core import Hub, Listener, Recovery
from .memory import MemoryBackend
from .redis_backend import RedisBackend
from .wire import JSON_CODEC, Codec, JsonCodec, Request, parse_request

__all__ = [
    "JSON_CODEC",
    "Backend",
    "Codec",
    "History",
    "Hub",
    "JsonCodec",
    "Listener",
    "MemoryBackend",
    "Message",
    "Recovery",
    "RedisBackend",
    "Request",
    "Signal",
    "check_channel",
    "parse_request",
]
