"""tether under ASGI servers: uvicorn's WebSocket protocol class on tether's sans-I/O core.

::

    uvicorn app:app --ws tether.asgi:UvicornProtocol

or ``uvicorn.run(app, ws="tether.asgi:UvicornProtocol")``, or ``Config(app, ws=UvicornProtocol)``.
uvicorn's import strings need the colon: ``tether.asgi.UvicornProtocol`` is refused by uvicorn.

The application sees the ASGI ``websocket`` scope (spec version 2.4, with the
``websocket.http.response`` extension); the handshake, limits, compression and close handshake
are tether's. Nothing here imports uvicorn: the class only uses the objects uvicorn hands it.
"""

from __future__ import annotations

from .protocol import UvicornProtocol

__all__ = ["UvicornProtocol"]
