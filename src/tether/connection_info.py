"""What a connection tells about itself, read from its sans-I/O protocol (no I/O).

Shared by the I/O layers (:class:`tether.Connection`, :class:`tether.sync.Connection`): each
keeps its :class:`~tether.sansio.protocol.Protocol` in ``self.protocol`` and inherits these
read-only properties from :class:`ConnectionInfo`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

from .exceptions import ConnectionClosed
from .sansio.handshake import Handshake
from .sansio.http11 import Request, Response
from .sansio.protocol import Protocol, State
from .typing import LoggerLike

__all__ = ["ConnectionInfo", "ConnectionLogger"]


class ConnectionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the connection's id and peer, so logs can be scanned.

    ``extra`` holds ``"peer"`` (``host:port``, or the address tuple until the first line is
    logged) and, once the connection's id is made (on the first line logged or the first read
    of ``connection.id``, not before: most connections never need one), ``"uuid"`` and
    ``"id"``, its first 8 hex digits.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = cast(dict[str, Any], self.extra)
        if "id" not in extra:
            _connection_uuid(extra)
        peer = extra["peer"]
        if isinstance(peer, tuple):  # an address, formatted when first logged
            peer = extra["peer"] = f"{peer[0]}:{peer[1]}"
        return f"[{extra['id']} {peer}] {msg}", kwargs


def _connection_uuid(extra: dict[str, Any]) -> uuid.UUID:
    """The connection id kept in a :class:`ConnectionLogger`'s ``extra``, made on first use."""
    ident: uuid.UUID | None = extra.get("uuid")
    if ident is None:
        ident = uuid.uuid4()
        extra["uuid"] = ident
        extra["id"] = str(ident)[:8]
    return ident


class ConnectionInfo:
    """The state, close frames and opening handshake of a connection, as its protocol has
    them. A base of the asyncio and threading connections."""

    #: The sans-I/O protocol the connection drives.
    protocol: Protocol
    logger: LoggerLike
    #: An id given before the logger exists (see :attr:`id`).
    _given_id: uuid.UUID | None = None

    @property
    def id(self) -> uuid.UUID:
        """A random UUID for this connection; logs show its first 8 hex digits. Made on
        first use (one ``os.urandom`` call fewer for each connection that never logs)."""
        return _connection_uuid(self._log_extra())

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        logger = self.__dict__.get("logger")
        if isinstance(logger, ConnectionLogger):
            extra = cast(dict[str, Any], logger.extra)
            extra["uuid"] = value
            extra["id"] = str(value)[:8]
        else:
            self._given_id = value

    def _log_extra(self) -> dict[str, Any]:
        logger = self.logger
        if isinstance(logger, ConnectionLogger):
            return cast(dict[str, Any], logger.extra)
        # The logger was replaced by something else: keep an id of our own.
        if self._given_id is None:
            self._given_id = uuid.uuid4()
        return {"uuid": self._given_id}

    def _set_logger(self, logger: LoggerLike | None, peer: str) -> None:
        """Log to ``logger`` (the ``tether`` logger by default) with this connection's id and
        ``peer`` on every line, and have the protocol log the same way."""
        base = logger if logger is not None else logging.getLogger("tether")
        if isinstance(base, logging.LoggerAdapter):
            base = base.logger
        extra: dict[str, Any] = {"peer": peer}
        if self._given_id is not None:
            extra["uuid"] = self._given_id
            extra["id"] = str(self._given_id)[:8]
        self.logger = ConnectionLogger(base, extra)
        self.protocol.logger = self.logger
        self.protocol.debug = self.logger.isEnabledFor(logging.DEBUG)

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent (1006 if none), once the connection is closed."""
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception that ``recv()`` and ``send()`` raise once the connection is closed:
        ``ConnectionClosedOK`` or ``ConnectionClosedError``, with both close frames."""
        return self.protocol.close_exc

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, if any."""
        return self.protocol.subprotocol

    @property
    def request(self) -> Request | None:
        """The opening handshake request (``request.path``, ``request.headers``)."""
        return self.protocol.request

    @property
    def response(self) -> Response | None:
        """The opening handshake response."""
        return self.protocol.response

    @property
    def handshake(self) -> Handshake:
        """What the client offered and what was agreed (and, on a server, declined)."""
        return self.protocol.handshake

    @property
    def extensions(self) -> list[Any]:
        return self.protocol.extensions
