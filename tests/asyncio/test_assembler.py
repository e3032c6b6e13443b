"""The receive queue of a connection (asyncio/messages.py), on its own."""

from __future__ import annotations

import asyncio

import pytest

from tether.asyncio.messages import Assembler
from tether.sansio.events import Fragment


def test_whole_and_fragmented_messages_are_joined_and_counted() -> None:
    queue = Assembler(max_queue=100)
    for fragment in (
        Fragment("one", True, True),
        Fragment(b"t", True, False),
        Fragment(b"wo", False, True),
        Fragment("th", True, False),
    ):
        queue.put(fragment)
    assert (queue.size, queue.complete) == (8, 2)
    assert queue.pop_message() == "one"
    assert queue.pop_message() == b"two"
    assert (queue.size, queue.complete) == (2, 0)
    queue.drop_incomplete()  # "th" will never end
    assert (queue.size, len(queue.fragments)) == (0, 0)


def test_reading_pauses_over_max_queue_only_with_a_complete_message() -> None:
    queue = Assembler(max_queue=10)
    queue.put(Fragment(b"x" * 20, True, False))
    assert not queue.should_pause(0)  # incomplete: reading is the only way it completes
    queue.put(Fragment(b"", False, True))
    assert queue.should_pause(0)
    assert not queue.should_pause(0)  # said once
    queue.put(Fragment(b"y" * 2, True, True))
    queue.pop_message()
    assert queue.should_resume(0)  # 2 bytes left: at most a quarter of max_queue
    assert not queue.paused


def test_reading_resumes_below_a_quarter_or_when_nothing_complete_is_left() -> None:
    queue = Assembler(max_queue=100)
    queue.put(Fragment(b"a" * 80, True, True))
    queue.put(Fragment(b"b" * 30, True, True))
    assert queue.should_pause(0)
    queue.pop_message()
    assert not queue.should_resume(0)  # 30 > 25, a message still waits
    assert queue.should_resume(-10)  # 20 <= 25 with what the protocol holds counted
    queue.put(Fragment(b"c" * 200, True, False))
    queue.paused = True
    queue.pop_message()
    assert queue.should_resume(0)  # nothing complete: only reading can help


def test_waiter_is_woken_and_cancelling_it_takes_nothing() -> None:
    async def main() -> None:
        queue = Assembler(max_queue=100)
        waiter = queue.waiter(asyncio.get_running_loop())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await waiter
        queue.put(Fragment("kept", True, True))
        queue.wake()  # the cancelled waiter is simply dropped
        waiter = queue.waiter(asyncio.get_running_loop())
        queue.wake()
        await waiter
        assert queue.pop_message() == "kept"

    asyncio.run(main())
