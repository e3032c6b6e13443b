"""The hub's JSON wire format, for browsers and other clients (optional: the hub's Python API
does not need it, see ``Hub(codec=...)``).

Server to client, one JSON text message each::

    {"type": "pub", "channel": "chat", "epoch": "k3J9...", "offset": 42, "data": "..."}
    {"type": "pub", ..., "data": "aGVsbG8=", "binary": true}       binary data, base64
    {"type": "unrecoverable", "channel": "chat", "epoch": "...", "offset": 40, "reason": "..."}
    {"type": "down", "reason": "..."}                               the hub lost its backend
    {"type": "up"}                                                  delivery resumed, in order

Offsets of one channel increase by exactly one per message: a client that sees a jump (it
was skipped as a slow consumer) asks for what it missed.

Client to server (:func:`parse_request`)::

    {"type": "subscribe", "channel": "chat"}                        from now on
    {"type": "recover", "channel": "chat", "epoch": "k3J9...", "since": 42}
    {"type": "unsubscribe", "channel": "chat"}
    {"type": "publish", "channel": "chat", "data": "..."}           where the server allows it

``recover`` replays every message after offset ``since`` of ``epoch`` in order, then goes on
live; when the history no longer reaches back (or the epoch changed) the server sends
``unrecoverable`` instead, then goes on live from its ``offset``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from ..exceptions import HubError
from .base import Message, Signal, check_channel

__all__ = ["JSON_CODEC", "Codec", "JsonCodec", "Request", "parse_request"]

REQUEST_TYPES = ("subscribe", "recover", "unsubscribe", "publish")


class Codec:
    """How messages and signals are framed for WebSocket clients; subclass to change it."""

    def message(self, message: Message) -> str | bytes:
        raise NotImplementedError

    def signal(self, signal: Signal) -> str | bytes | None:
        """The frame for ``signal``, or ``None`` not to tell clients."""
        raise NotImplementedError


class JsonCodec(Codec):
    """The documented JSON envelope (module docstring)."""

    def message(self, message: Message) -> str:
        fields: dict[str, Any] = {
            "type": "pub",
            "channel": message.channel,
            "epoch": message.epoch,
            "offset": message.offset,
        }
        if isinstance(message.data, str):
            fields["data"] = message.data
        else:
            fields["data"] = base64.b64encode(message.data).decode("ascii")
            fields["binary"] = True
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))

    def signal(self, signal: Signal) -> str:
        fields = {"type": signal.kind}
        fields.update(
            (name, value)
            for name in ("channel", "epoch", "offset", "reason")
            if (value := getattr(signal, name)) is not None
        )
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


JSON_CODEC = JsonCodec()


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A client's request in the wire format."""

    type: str
    channel: str
    since: int | None = None
    epoch: str | None = None
    data: str | None = None


def parse_request(text: str | bytes) -> Request:
    """Parse a client request; raise :class:`~tether.exceptions.HubError` (with a message fit
    to send back) if it is not one."""
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise HubError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise HubError("a request is a JSON object with a 'type'")
    kind = fields.get("type")
    if kind not in REQUEST_TYPES:
        raise HubError(f"unknown request type {kind!r}; expected one of {', '.join(REQUEST_TYPES)}")
    channel = check_channel(fields.get("channel"))
    since = fields.get("since")
    epoch = fields.get("epoch")
    data = fields.get("data")
    if kind == "recover":
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise HubError("recover needs 'since': the offset (an integer >= 0) last received")
        if not isinstance(epoch, str):
            raise HubError("recover needs 'epoch': the epoch of the offset last received")
    else:
        since = epoch = None
    if kind == "publish":
        if not isinstance(data, str):
            raise HubError("publish needs 'data': a string")
    else:
        data = None
    return Request(kind, channel, since, epoch, data)
