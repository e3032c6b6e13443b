"""tether.fragment_queue: the receive queue both I/O layers share."""

from __future__ import annotations

from tether.fragment_queue import FragmentQueue
from tether.sansio.events import Fragment


def test_whole_messages_are_joined_and_counted() -> None:
    queue = FragmentQueue(max_queue=100)
    for fragment in [
        Fragment("hé", first=True, last=False),
        Fragment("llo", first=False, last=True),
        Fragment(b"one", first=True, last=True),
        Fragment(b"ab", first=True, last=False),
        Fragment(b"cd", first=False, last=True),
        Fragment(b"partial", first=True, last=False),
    ]:
        queue.put(fragment)
    assert (queue.complete, queue.size) == (3, 5 + 3 + 4 + 7)
    assert queue.pop_message() == "héllo"
    assert queue.pop_message() == b"one"
    assert queue.pop_message() == b"abcd"
    assert (queue.complete, queue.size) == (0, 7)
    assert queue.pop() == Fragment(b"partial", first=True, last=False)
    assert (queue.complete, queue.size, len(queue.fragments)) == (0, 0, 0)


def test_pop_takes_fragments_one_by_one() -> None:
    queue = FragmentQueue(max_queue=100)
    queue.put(Fragment(b"a", first=True, last=False))
    queue.put(Fragment(b"bc", first=False, last=True))
    assert queue.pop() == Fragment(b"a", first=True, last=False)
    assert (queue.complete, queue.size) == (1, 2)
    assert queue.pop() == Fragment(b"bc", first=False, last=True)
    assert (queue.complete, queue.size) == (0, 0)


def test_over_limit_needs_a_whole_message_and_counts_extra_bytes() -> None:
    queue = FragmentQueue(max_queue=10)
    queue.put(Fragment(b"x" * 20, first=True, last=False))
    assert not queue.over_limit(0)  # only reading can complete it
    queue.put(Fragment(b"", first=False, last=True))
    assert queue.over_limit(0)
    queue.pop_message()
    queue.put(Fragment(b"x" * 10, first=True, last=True))
    assert not queue.over_limit(0)
    assert queue.over_limit(1)


def test_drop_incomplete_keeps_whole_messages() -> None:
    queue = FragmentQueue(max_queue=100)
    queue.put(Fragment(b"whole", first=True, last=True))
    queue.put(Fragment(b"par", first=True, last=False))
    queue.put(Fragment(b"tial", first=False, last=False))
    queue.drop_incomplete()
    assert (queue.complete, queue.size) == (1, 5)
    assert queue.pop_message() == b"whole"
    queue.drop_incomplete()
    assert not queue.fragments
