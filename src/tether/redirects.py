"""Following a server's redirect in ``connect()``, shared by the I/O layers (no I/O).

A refusal with a 3xx status and a ``Location`` header sends the client to another URI: relative
references resolve against the URI that was refused, and a redirect may never drop TLS. Each
layer loops over at most ``max_redirects + 1`` attempts and asks :func:`redirect_target` where
the next one goes.

Layer: the shared options layer, with :mod:`tether.options`, below the I/O layers.
"""

from __future__ import annotations

import urllib.parse

from .exceptions import InvalidRedirect, InvalidStatus
from .sansio.uri import WebSocketURI, parse_uri

__all__ = ["redirect_target", "too_many_redirects"]


def redirect_target(uri: WebSocketURI, refusal: InvalidStatus) -> WebSocketURI | None:
    """Where ``refusal`` (the server's answer to ``uri``) redirects, or ``None`` if it does not.

    Raises:
        InvalidRedirect: the redirect goes from ``wss://`` to ``ws://``.
        InvalidURI: ``Location`` is not a ws://, wss://, http:// or https:// URI.
    """
    location = refusal.location
    if location is None:
        return None
    target = parse_uri(urllib.parse.urljoin(str(uri), location))
    if uri.secure and not target.secure:
        raise InvalidRedirect(refusal.response, "redirect from wss:// to ws://") from refusal
    return target


def too_many_redirects(max_redirects: int) -> InvalidRedirect:
    """The error once ``max_redirects`` redirects were followed and the server redirects again."""
    return InvalidRedirect(None, f"more than {max_redirects} redirects")
