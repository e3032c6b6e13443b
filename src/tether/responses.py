"""The HTTP responses a server's hooks build from a connection (``process_request`` answering
``/healthz``, a 401...), shared by the I/O layers' server connections (no I/O).

Layer: the shared options layer, with :mod:`tether.options`, below the I/O layers.
"""

from __future__ import annotations

import json

from .sansio.http11 import HeadersLike, Response
from .sansio.server import PLAIN_TEXT, ServerProtocol

__all__ = ["ServerResponses"]


class ServerResponses:
    """``respond()``, ``respond_json()`` and ``respond_html()`` of a server connection, which
    keeps its :class:`~tether.sansio.server.ServerProtocol` in ``self.protocol``."""

    protocol: ServerProtocol

    def respond(
        self,
        status: int,
        body: str | bytes = "",
        *,
        content_type: str = PLAIN_TEXT,
        headers: HeadersLike | None = None,
    ) -> Response:
        """An HTTP response for ``process_request`` hooks (``/healthz``, a 401...): ``status``
        with its reason phrase, ``body`` (a ``str`` is UTF-8; as plain text, the default, it
        is one line) with ``content_type``, and ``headers`` (a mapping, pairs or ``Headers``).
        """
        return self.protocol.reject(status, body, headers, content_type=content_type)

    def respond_json(
        self, status: int, value: object, *, headers: HeadersLike | None = None
    ) -> Response:
        """An ``application/json`` response with ``value`` serialised by ``json.dumps``."""
        return self.respond(
            status, json.dumps(value), content_type="application/json", headers=headers
        )

    def respond_html(
        self, status: int, html: str, *, headers: HeadersLike | None = None
    ) -> Response:
        """A ``text/html; charset=utf-8`` response."""
        return self.respond(status, html, content_type="text/html; charset=utf-8", headers=headers)
