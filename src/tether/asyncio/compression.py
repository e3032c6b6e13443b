"""The ``compression=`` option of ``serve()`` and ``connect()``, and compress-once broadcast."""

from __future__ import annotations

from typing import TypeAlias

from ..extensions.base import ClientExtensionFactory, ServerExtensionFactory
from ..extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    DeflateSettings,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from ..sansio.codes import Opcode
from ..sansio.frames import Frame, serialize_frame
from ..sansio.protocol import Protocol, Side
from ..typing import Data

__all__ = ["Compression", "client_extensions", "encode_for_broadcast", "server_extensions"]

#: ``"deflate"`` (the "balanced" preset), a preset name ("balanced", "small", "fast", "max"),
#: a :class:`~tether.extensions.permessage_deflate.DeflateSettings`, or ``None``/``"none"``.
Compression: TypeAlias = str | DeflateSettings | None


def _settings(compression: Compression) -> DeflateSettings | str | None:
    if compression is None or compression == "none":
        return None
    if compression == "deflate":
        return "balanced"
    return compression


def server_extensions(compression: Compression) -> list[ServerExtensionFactory]:
    settings = _settings(compression)
    return [] if settings is None else [ServerPerMessageDeflateFactory(settings)]


def client_extensions(compression: Compression) -> list[ClientExtensionFactory]:
    settings = _settings(compression)
    return [] if settings is None else [ClientPerMessageDeflateFactory(settings)]


def encode_for_broadcast(
    protocol: Protocol, message: Data, cache: dict[object, bytes]
) -> bytes | None:
    """The bytes of ``message`` as a frame for this connection, shared with every connection
    that encodes it the same way (``cache`` lives for one broadcast), or ``None`` when this
    connection must encode it itself (a client masks; a compressor with context takeover
    depends on earlier messages)."""
    if protocol.side is not Side.SERVER:
        return None
    payload = cache.get("payload")
    if payload is None:
        payload = cache["payload"] = (
            message.encode() if isinstance(message, str) else bytes(message)
        )
    opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
    extensions = protocol.extensions
    key: object
    if not extensions:
        key = "plain"
    elif len(extensions) == 1 and isinstance(extensions[0], PerMessageDeflate):
        extension = extensions[0]
        if not extension.can_share_encoding:
            return None
        if len(payload) < extension.compress_threshold:
            key = "plain"
        else:
            key = extension.shared_encoding_key
            data = cache.get(key)
            if data is None:
                compressed = extension.compress_message(payload)
                data = cache[key] = serialize_frame(
                    Frame(opcode, compressed, rsv1=True), mask=False
                )
            return data
    else:
        return None
    data = cache.get(key)
    if data is None:
        data = cache[key] = serialize_frame(Frame(opcode, payload), mask=False)
    return data
