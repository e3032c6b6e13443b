"""Checked by tests/test_options.py: mypy --strict must report each marked line, nothing else.

Misuses of the public signatures that a websockets user would write.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether import Limits, ServerConnection, broadcast, connect, serve


async def handler(ws: ServerConnection) -> None:
    await ws.send("hi")


def old_select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return None


async def main() -> None:
    serve(handler, "127.0.0.1", 0, max_size=2**20)  # error: Argument "max_size" to "Server"
    serve(handler, "127.0.0.1", 0, open_timeout="10")  # error: Argument "open_timeout" to "Server"
    serve(handler, "127.0.0.1", 0, subprotocols=[1])  # error: List item 0 has incompatible type
    serve(handler, None, 0, select_subprotocol=old_select)  # error: Argument "select_subprotocol"
    serve(handler, None, 0, limits={"max_message_size": 1})  # error: Argument "limits" to "Server"
    connect("ws://h/", max_size=2**20)  # error: Argument "max_size" to "connect"
    connect("ws://h/", extra_headers={"A": "b"})  # error: Argument "extra_headers" to "connect"
    connect("ws://h/", user_agent_header="x")  # error: Argument "user_agent_header" to "connect"
    connect("ws://h/", additional_headers=3)  # error: Argument "additional_headers" to "connect"
    async with serve(handler, "127.0.0.1", 0) as server:
        await broadcast(server.connections, "x")  # error: Incompatible types in "await"
        broadcast(server.connections, "x", slow="wait")  # error: Argument "slow" to "broadcast"
    # Correct use type-checks.
    connect("ws://h/", additional_headers={"A": "b"}, limits=Limits(max_message_size=2**20))
