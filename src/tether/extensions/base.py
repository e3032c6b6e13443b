"""The extension framework: extensions transform frames, factories negotiate them.

An :class:`Extension` is a frame-to-frame transform agreed for one connection. On send, the
connection applies ``encode`` of every extension in the order they were agreed; on receive it
applies ``decode`` in the reverse order (RFC 6455 section 9.1).

Factories negotiate. A client factory writes its offer and checks the server's answer; a server
factory answers an offer or declines it by raising :class:`~tether.exceptions.NegotiationError`.
A declined offer is not an error: the server moves on to the client's next offer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from ..typing import ExtensionName, ExtensionParameter

if TYPE_CHECKING:  # only for annotations: importing it would be circular
    from ..sansio.frames import Frame

__all__ = [
    "RSV1",
    "RSV2",
    "RSV3",
    "ClientExtensionFactory",
    "Extension",
    "ServerExtensionFactory",
]

#: Bit masks of the reserved bits, as they sit in the first byte of a frame.
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10


class Extension(ABC):
    """An extension agreed for one connection."""

    #: The registered name, as in ``Sec-WebSocket-Extensions``.
    name: ExtensionName
    #: The reserved bits this extension gives a meaning to (``RSV1 | RSV2 ...``). Two extensions
    #: that claim the same bit are never agreed together.
    rsv_mask: int = 0

    @property
    def params(self) -> list[ExtensionParameter]:
        """The agreed parameters, as the server's answer carried them (for logs and users)."""
        return []

    @abstractmethod
    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Transform a received frame. ``max_size`` bounds the decoded payload of the message.

        Raises:
            PayloadTooBig: the decoded data would be larger than ``max_size``.
            ProtocolError: the frame breaks the extension's rules.
        """

    @abstractmethod
    def encode(self, frame: Frame) -> Frame:
        """Transform a frame about to be sent."""

    def broadcast_key(self, size: int) -> Hashable | None:
        """Compress-once broadcast: a key such that every connection whose extension returns
        an equal key encodes a message of ``size`` bytes into the same frame with
        :meth:`encode_for_broadcast`; ``None`` (the default) when this connection's encoding
        depends on its own state, so the message must go through :meth:`encode`."""
        return None

    def encode_for_broadcast(self, frame: Frame) -> Frame:
        """Transform the frame of a whole message as :meth:`encode` would, without using or
        changing this connection's state (called only when :meth:`broadcast_key` is not
        ``None``; the result is sent on every connection with the same key)."""
        raise NotImplementedError(f"{type(self).__name__} does not encode for broadcast")

    def __repr__(self) -> str:
        params = "".join(f"; {k}" if v is None else f"; {k}={v}" for k, v in self.params)
        return f"<{type(self).__name__} {self.name}{params}>"


class ClientExtensionFactory(ABC):
    """Writes one extension offer and turns the server's answer into an :class:`Extension`."""

    name: ExtensionName

    @abstractmethod
    def get_request_params(self) -> list[ExtensionParameter]:
        """The parameters of the offer."""

    @abstractmethod
    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> Extension:
        """Check the server's answer against the offer and build the extension.

        ``accepted`` are the extensions already agreed from earlier elements of the answer.

        Raises:
            NegotiationError: the answer does not fit the offer.
        """


class ServerExtensionFactory(ABC):
    """Answers or declines the client's offers of one extension."""

    name: ExtensionName

    @abstractmethod
    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], Extension]:
        """Answer one offer: return the parameters of the answer and the extension.

        ``accepted`` are the extensions already agreed from earlier offers.

        Raises:
            NegotiationError: to decline this offer (unknown, duplicated or invalid
                parameters, or a conflict with an extension already agreed).
        """
