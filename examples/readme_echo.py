import asyncio

from tether import connect, serve


async def echo(ws):  # ws.request, ws.subprotocol, ws.extensions
    async for message in ws:  # str for text, bytes for binary
        await ws.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 8765, subprotocols=["chat"]):
        async with connect("ws://127.0.0.1:8765/", subprotocols=["chat"]) as ws:
            await ws.send("hello")
            print(await ws.recv(), ws.subprotocol, ws.extensions)


asyncio.run(main())
