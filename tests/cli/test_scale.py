"""``tether serve --redis`` and ``--workers``: one chat room across processes, real Redis.

Each server is a ``tether serve`` subprocess on 127.0.0.1 port 0; Redis is a real redis-server
(``tests/helpers/redis.py``); clients are tether's asyncio client in this process, and, in the
browser test, headless Chromium pages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import pytest

from helpers.browser import Browser
from helpers.demo import ServeProcess, http_get, tether
from helpers.redis import RedisServer
from tether import ClientConnection, ConnectionClosed, connect

pytestmark = pytest.mark.timeout(60)


async def _next_message(ws: ClientConnection) -> dict[str, Any]:
    """The next chat message (join/leave notices and others are skipped)."""
    while True:
        item = json.loads(str(await asyncio.wait_for(ws.recv(), 10)))
        if item["type"] == "message":
            return dict(item)


def _health(server: ServeProcess) -> tuple[int, dict[str, Any]]:
    try:
        status, _, body = http_get(server.url("/healthz", "http"))
    except OSError:  # a worker killed with connections in its accept queue resets them
        return 0, {}
    return status, json.loads(body)


@pytest.mark.redis
def test_two_servers_share_one_room_in_one_order(redis_server: RedisServer) -> None:
    with (
        ServeProcess("--redis", redis_server.url) as one,
        ServeProcess("--redis", redis_server.url) as two,
    ):

        async def main() -> list[list[tuple[int, str]]]:
            urls = [one.url("/chat?name=a"), one.url("/chat?name=b"), two.url("/chat?name=c")]
            clients = [await connect(url) for url in urls]
            try:
                # Everyone is subscribed once the last join notice reached the first client.
                while True:
                    notice = json.loads(str(await asyncio.wait_for(clients[0].recv(), 10)))
                    if notice.get("name") == "c":
                        break
                for i in range(20):
                    sender = clients[i % 3]
                    await sender.send(json.dumps({"type": "message", "name": "x", "text": str(i)}))
                seen = []
                for ws in clients:
                    got = [await _next_message(ws) for _ in range(20)]
                    seen.append([(m["offset"], m["text"]) for m in got])
                return seen
            finally:
                for ws in clients:
                    await ws.close()

        seen = asyncio.run(main())
    assert seen[0] == seen[1] == seen[2]
    offsets = [offset for offset, _ in seen[0]]
    assert offsets == sorted(offsets) and len(set(offsets)) == 20
    assert sorted(int(text) for _, text in seen[0]) == list(range(20))
    # Each sender's messages keep their order.
    for sender in range(3):
        mine = [int(t) for _, t in seen[0] if int(t) % 3 == sender]
        assert mine == sorted(mine)


@pytest.mark.redis
def test_a_reconnecting_client_gets_exactly_what_it_missed(redis_server: RedisServer) -> None:
    with (
        ServeProcess("--redis", redis_server.url) as one,
        ServeProcess("--redis", redis_server.url) as two,
    ):

        async def main() -> None:
            async with connect(one.url("/chat?name=reader")) as reader:
                async with connect(two.url("/chat?name=writer")) as writer:
                    await writer.send(json.dumps({"type": "message", "text": "first"}))
                    last = await _next_message(reader)
                assert last["text"] == "first"
            async with connect(two.url("/chat?name=writer2")) as writer:
                for i in range(5):
                    await writer.send(json.dumps({"type": "message", "text": f"missed {i}"}))
                for _ in range(5):
                    await _next_message(writer)
            path = f"/chat?name=reader&since={last['offset']}&epoch={last['epoch']}"
            async with connect(one.url(path)) as reader:
                # Everything after the last offset it saw, once, in order: its own leave, the
                # writers' joins and leaves, the 5 messages and its new join: 10 events. A leave
                # is published when its server notices the close, so it may come after the new
                # join: read the 10, not up to the join.
                items: list[dict[str, Any]] = []
                while len(items) < 10:
                    items.append(json.loads(str(await asyncio.wait_for(reader.recv(), 10))))
            assert any(i["type"] == "join" and i["name"] == "reader" for i in items)
            offsets = [item["offset"] for item in items]
            assert offsets == list(range(last["offset"] + 1, last["offset"] + 1 + len(items)))
            texts = [item["text"] for item in items if item["type"] == "message"]
            assert texts == [f"missed {i}" for i in range(5)]
            notices = sorted((i["type"], i["name"]) for i in items if i["type"] != "message")
            assert notices == [
                ("join", "reader"),
                ("join", "writer2"),
                ("leave", "reader"),
                ("leave", "writer"),
                ("leave", "writer2"),
            ]

        asyncio.run(main())


@pytest.mark.redis
def test_workers_share_the_port_the_room_and_stop_with_1001(redis_server: RedisServer) -> None:
    with ServeProcess("--workers", "2", "--redis", redis_server.url) as server:
        assert "workers:      2 (SO_REUSEPORT)" in "".join(server.stdout)

        async def main() -> list[ClientConnection]:
            clients = [await connect(server.url(f"/chat?name=c{i}")) for i in range(8)]
            # Wait until both workers report chat members (the kernel spread the connections).
            deadline = time.monotonic() + 10
            while True:
                status, health = await asyncio.to_thread(_health, server)
                members = [w.get("chat", 0) for w in health["workers"]]
                if all(members) and sum(members) == 8:
                    break
                assert time.monotonic() < deadline, health
                await asyncio.sleep(0.2)
            assert status == 200 and health["ok"] is True
            assert {w["state"] for w in health["workers"]} == {"serving"}
            assert all(w["hub"]["connected"] for w in health["workers"])
            await clients[0].send(json.dumps({"type": "message", "text": "to all"}))
            for ws in clients:
                assert (await _next_message(ws))["text"] == "to all"
            return clients

        async def stopped(clients: list[ClientConnection]) -> list[int | None]:
            await asyncio.to_thread(server.stop, signal.SIGTERM)
            codes = []
            for ws in clients:
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                codes.append(ws.close_code)
            return codes

        async def scenario() -> list[int | None]:
            clients = await main()
            return await stopped(clients)

        codes = asyncio.run(scenario())
        assert codes == [1001] * 8
        assert server.process.returncode == 0
        assert "Server stopped." in "".join(server.stdout)


def test_a_dead_worker_is_logged_and_shown_not_restarted() -> None:
    with ServeProcess("--workers", "2") as server:
        status, health = _health(server)
        assert status == 200
        victim = health["workers"][1]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            status, health = _health(server)
            if status == 503:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        dead = health["workers"][1]
        assert (dead["pid"], dead["alive"], dead["exitcode"]) == (victim, False, -9)
        assert health["workers"][0]["alive"] is True
        assert server.stop(signal.SIGTERM) == 1  # a worker died: not a clean run
        logs = server.logs()
        assert f"worker 1 (pid {victim}) died: killed by SIGKILL; it is not restarted" in logs


@pytest.mark.browser
@pytest.mark.redis
def test_two_pages_on_two_servers_chat_through_redis(
    browser: Browser, redis_server: RedisServer
) -> None:
    with (
        ServeProcess("--redis", redis_server.url) as one,
        ServeProcess("--redis", redis_server.url) as two,
    ):
        open_state = "document.body.dataset.state === 'open'"
        alice = browser.open(one.url("/", "http"))
        alice.wait_for(open_state)
        bob = browser.open(two.url("/", "http"))
        bob.wait_for(open_state)
        alice.type("#chat-name", "alice")
        bob.type("#chat-name", "bob")
        alice.type("#chat-input", "hello bob, from another process")
        alice.click("#chat-send")
        bob.wait_for(
            "Array.from(document.querySelectorAll('#chat-log .message'))"
            ".some((li) => li.textContent.includes('hello bob, from another process'))"
        )
        bob.type("#chat-input", "hi alice")
        bob.click("#chat-send")
        alice.wait_for(
            "Array.from(document.querySelectorAll('#chat-log .message'))"
            ".some((li) => li.textContent.includes('hi alice'))"
        )
        # Server two stops: Bob's page loses its connection and retries. Alice writes
        # meanwhile. A new server comes up on the same port; Bob's page reconnects with its
        # offset and replays what it missed, once.
        port = two.port
        two.stop(signal.SIGTERM)
        bob.wait_for("document.getElementById('chat-state').dataset.state === 'closed'")
        alice.type("#chat-input", "while you were away")
        alice.click("#chat-send")
        with ServeProcess("--redis", redis_server.url, "--port", str(port)) as again:
            assert again.port == port
            bob.wait_for(
                "Array.from(document.querySelectorAll('#chat-log .message'))"
                ".some((li) => li.textContent.includes('while you were away'))",
                timeout=20,
            )
            script = "(li) => li.textContent"
            texts = [
                str(t)
                for t in bob.eval(
                    f"Array.from(document.querySelectorAll('#chat-log .message'), {script})"
                )
            ]
            assert sum("hello bob, from another process" in t for t in texts) == 1
            assert sum("while you were away" in t for t in texts) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--workers", "0"], "--workers and --history must be >= 1"),
        (["--history", "0"], "--workers and --history must be >= 1"),
        (["--redis", "http://127.0.0.1/"], "expected redis://host:port/db"),
    ],
)
def test_serve_refuses_bad_scale_options(args: list[str], error: str) -> None:
    result = tether("serve", "--port", "0", *args)
    assert result.returncode == 2 and error in result.stderr
