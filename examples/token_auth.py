"""A server that checks a token in the query string with ``process_request`` and answers
401 without one, as in websockets' authentication guide, on tether.

Changes from the websockets program (see docs/from-websockets.md): the import lines only.
``process_request(connection, request)``, ``connection.respond(status, text)`` and
``request.path`` have the same shape in both libraries.

Run: ``python examples/token_auth.py [port]``; ``ws://127.0.0.1:8765/?token=secret`` is let in.
"""

import asyncio
import http
import sys
import urllib.parse

# websockets: from websockets.asyncio.server import serve
from tether import serve

TOKENS = {"secret": "alice"}


def get_query_param(path, key):
    query = urllib.parse.urlparse(path).query
    params = urllib.parse.parse_qs(query)
    values = params.get(key, [])
    if len(values) == 1:
        return values[0]


def get_user(token):
    return TOKENS.get(token)


async def process_request(connection, request):
    token = get_query_param(request.path, "token")
    if token is None:
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Missing token\n")
    user = get_user(token)
    if user is None:
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Invalid token\n")
    connection.username = user


async def handler(websocket):
    await websocket.send(f"Hello {websocket.username}!")
    async for message in websocket:
        await websocket.send(message)


async def main(port=8765, ready=None, stop=None):
    async with serve(handler, "127.0.0.1", port, process_request=process_request) as server:
        if ready is not None:
            ready(server)
        await (stop if stop is not None else server.serve_forever())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
