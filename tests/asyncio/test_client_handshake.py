"""The client when the server goes away during the opening handshake."""

from __future__ import annotations

import asyncio

import pytest

from tether import connect
from tether.exceptions import ConnectionLostDuringHandshake


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: web"])
def test_server_closes_before_a_complete_response(sent: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(sent)
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(ConnectionLostDuringHandshake) as info:
                await connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
        assert info.value.peer == "server"
        assert info.value.received == len(sent)
        assert str(info.value).startswith(
            "the server closed the connection before sending a complete HTTP response ("
        )

    asyncio.run(asyncio.wait_for(main(), 10))
