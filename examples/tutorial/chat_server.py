"""The tutorial's chat room: a page at http://127.0.0.1:8765/ and a WebSocket at /chat."""

import asyncio
from pathlib import Path

from tether import broadcast, serve

PAGE = (Path(__file__).parent / "page.html").read_text()
members = set()


def page(connection, request):
    """Answer plain HTTP requests for / with the page; let WebSocket handshakes through."""
    if request.path == "/" and "websocket" not in request.headers.get("Upgrade", "").lower():
        return connection.respond_html(200, PAGE)
    if request.path != "/chat":
        return connection.respond(404, f"Nothing at {request.path}")
    return None


async def chat(ws):
    members.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str):
                broadcast(members, message[:500])  # never waits: see below
    finally:
        members.discard(ws)


async def main():
    async with serve(chat, "127.0.0.1", 8765, process_request=page) as server:
        print("open http://127.0.0.1:8765/ in two browser tabs", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
