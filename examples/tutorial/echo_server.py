"""The tutorial's first server: send every message back."""

import asyncio

from tether import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 8765) as server:
        print("serving on ws://127.0.0.1:8765", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
