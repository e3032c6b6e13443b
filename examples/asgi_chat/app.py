"""A FastAPI chat room served by uvicorn with tether as its WebSocket protocol.

Run it from this folder::

    uvicorn app:app --ws tether.asgi:UvicornProtocol
    # or: python app.py

and open http://127.0.0.1:8000/ in two browser windows. The endpoint is plain FastAPI; only
uvicorn's ``--ws`` option changes: tether does the handshake (subprotocol ``chat.v1`` when the
client offers it, permessage-deflate), the limits and the close handshake.

The server sends JSON objects: ``{"type": "join" | "leave", "name", "count"}`` and
``{"type": "message", "name", "text"}``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("index.html").read_text()
#: Longest chat line and name accepted, in characters.
MAX_TEXT = 2000
MAX_NAME = 40

app = FastAPI(title="tether chat")
members: dict[WebSocket, str] = {}


async def broadcast(message: dict[str, object]) -> None:
    """Send to every member; a member whose connection is gone is dropped."""
    for ws in list(members):
        try:
            await ws.send_json(message)
        except (WebSocketDisconnect, OSError, RuntimeError):
            members.pop(ws, None)


@app.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/chat")
async def chat(ws: WebSocket, name: str = "anonymous") -> None:
    name = name.strip()[:MAX_NAME] or "anonymous"
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol="chat.v1" if "chat.v1" in offered else None)
    members[ws] = name
    await broadcast({"type": "join", "name": name, "count": len(members)})
    try:
        while True:
            text = await ws.receive_text()
            if len(text) > MAX_TEXT:
                await ws.close(1009, f"messages are limited to {MAX_TEXT} characters")
                break
            await broadcast({"type": "message", "name": name, "text": text})
    except WebSocketDisconnect:
        pass
    finally:
        if members.pop(ws, None) is not None:
            with contextlib.suppress(Exception):
                await broadcast({"type": "leave", "name": name, "count": len(members)})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000, ws="tether.asgi:UvicornProtocol")
