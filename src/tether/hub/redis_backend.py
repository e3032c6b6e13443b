"""A Redis backend: one channel is one Redis stream, shared by every process and host that uses
the same Redis (needs Redis >= 7.0 and redis-py, ``pip install 'tether[redis]'``).

Keys, for channel ``chat`` and the default prefix (the braces keep both keys in one Redis
Cluster slot)::

    tether:{chat}:s     the stream: entry id 0-<offset>, fields d (data), k (t/b), e (epoch),
                        t (Redis time in ms); trimmed to history_size entries on every XADD
    tether:{chat}:e     the epoch of that history

Publishing runs one Lua script (atomic: read or create the epoch, ``XADD ... MAXLEN n 0-*``),
so offsets are dense per channel whoever publishes. Each process runs one listener task that
reads its watched channels with ``XREAD BLOCK`` from the last offset it delivered; after a
disconnection it reconnects with backoff and reads on from there, so nothing stored is missed.
If the history was lost meanwhile (Redis restarted without persistence: the epoch changed), the
subscribers get an ``unrecoverable`` signal and delivery goes on in the new epoch.

The publishing client never retries a command by itself: a publish that raises
:class:`~tether.exceptions.HubUnavailable` was not stored (or, if the connection broke after
Redis ran it, may have been: the caller who retries gets at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

from ..exceptions import HubError, HubUnavailable
from ..sansio.backoff import Backoff
from .base import Backend, History, Message, Sink
from .memory import answer

__all__ = ["RedisBackend"]

logger = logging.getLogger("tether.hub")

#: Default delays between the listener's reconnection attempts: quick first, at most 5 s.
DEFAULT_BACKOFF = Backoff(first_delay=0.05, initial=0.2, factor=2, max_delay=5)

_PUBLISH = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  -- A new history. A stream left without its epoch cannot be trusted: start it over.
  redis.call('DEL', KEYS[1])
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '0-*',
                      'd', ARGV[3], 'k', ARGV[4], 'e', epoch, 't', ms)
return {id, epoch}
"""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a read's outcome as seen: a cancelled read may still end with an error."""
    if not task.cancelled():
        task.exception()


def _offset(entry_id: bytes) -> int:
    return int(entry_id.rpartition(b"-")[2])


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisBackend(Backend):
    """Channels in Redis streams (see :class:`~tether.hub.base.Backend` for the history
    arguments).

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: prepended to every key.
        backoff: delays between reconnection attempts of the listener.
        block: seconds one ``XREAD`` waits for new messages before asking again.
        batch: messages read per ``XREAD`` and stream.
        connect_timeout: seconds to connect (a publish fails after at most this much when Redis
            is unreachable).
        pool_size: most connections for publishing and recovery; more concurrent commands
            wait for one (at most ``connect_timeout``, then :class:`HubUnavailable`). The
            listener has one more of its own.
    """

    kind = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tether:",
        history_size: int = 1000,
        history_age: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        block: float = 5.0,
        batch: int = 500,
        connect_timeout: float = 2.0,
        pool_size: int = 16,
    ) -> None:
        super().__init__(history_size=history_size, history_age=history_age)
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise HubError(
                "the Redis backend needs redis-py: pip install 'tether[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self.backoff = backoff
        self.block = block
        self.batch = batch
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self._client: Any = None
        self._pool: Any = None
        self._reader: Any = None
        self._script: Any = None
        self._sink: Sink | None = None
        #: Watched channel -> offset of the last message delivered (or seen at watch time).
        self._cursors: dict[str, int] = {}
        self._epochs: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = False
        self.listener = "stopped"
        self.last_error: str | None = None
        self.reconnects = 0
        self.delivered = 0
        #: The listener's command in flight, named in errors.
        self._command = ""

    # --- keys ---------------------------------------------------------------------------------

    def _stream_key(self, channel: str) -> str:
        return f"{self.prefix}{{{channel}}}:s"

    def _epoch_key(self, channel: str) -> str:
        return f"{self.prefix}{{{channel}}}:e"

    def _channel_of(self, key: bytes) -> str:
        return key.decode()[len(self.prefix) + 1 : -3]

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, sink: Sink) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._sink = sink
        common: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        try:
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.pool_size,
                timeout=self.connect_timeout,
                socket_timeout=10,
                **common,
            )
            self._pool = pool
            self._client = Redis(connection_pool=pool)
            # The listener's blocking reads get their own connection, with room for BLOCK.
            self._reader = Redis.from_url(self.url, socket_timeout=self.block + 10, **common)
        except ValueError as exc:
            raise HubError(f"invalid Redis URL {_redact(self.url)!r}: {exc}") from None
        self._script = self._client.register_script(_PUBLISH)
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._listen())
        self._task.add_done_callback(self._listener_done)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            # A listener that died was logged when it did.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for client in (self._reader, self._client, self._pool):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self.listener = "stopped"
        self.connected = False

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        if self._closing or task.cancelled():
            return
        exc = task.exception()
        self.listener = "dead"
        self.connected = False
        self.last_error = f"listener died: {exc!r}"
        logger.critical(
            "hub: the Redis listener died; subscribers of this process receive nothing more",
            exc_info=exc,
        )
        if self._sink is not None:
            self._sink.backend_state(False, self.last_error)

    # --- commands -----------------------------------------------------------------------------

    def _failed(self, command: str, exc: Exception) -> HubUnavailable:
        reason = str(exc) or type(exc).__name__
        return HubUnavailable(f"{command} on {_redact(self.url)}", reason)

    async def publish(self, channel: str, data: str | bytes) -> Message:
        from redis.exceptions import RedisError

        if self._script is None:
            raise HubError("the hub is not started: use 'async with hub' or 'await hub.start()'")
        kind = b"t" if isinstance(data, str) else b"b"
        key = self._stream_key(channel)
        try:
            entry_id, epoch = await self._script(
                keys=[key, self._epoch_key(channel)],
                args=[secrets.token_urlsafe(6), self.history_size, data, kind],
            )
        except (RedisError, OSError) as exc:
            raise self._failed(f"XADD {key}", exc) from exc
        return Message(channel, _offset(entry_id), epoch.decode(), data)

    async def history(self, channel: str, since: int, epoch: str | None, limit: int) -> History:
        from redis.exceptions import RedisError

        key = self._stream_key(channel)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self._epoch_key(channel))
                pipe.xrange(key, "-", "+", count=1)
                pipe.xrevrange(key, "+", "-", count=1)
                pipe.xrange(key, f"(0-{since}", "+", count=limit + 1)
                pipe.time()
                current, first, last, entries, now = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(f"XRANGE {key} (0-{since} +", exc) from exc
        current_epoch = current.decode() if current is not None else ""
        head = _offset(last[0][0]) if last else 0
        oldest = _offset(first[0][0]) if first else head + 1
        stored = [self._entry(channel, entry_id, fields) for entry_id, fields in entries]
        if current is None and since == 0 and epoch in (None, ""):
            current_epoch = epoch or ""
        return answer(
            channel,
            current_epoch,
            head,
            stored,
            since=since,
            epoch=epoch,
            limit=limit,
            oldest=oldest,
            max_age=self.history_age,
            now=now[0] + now[1] / 1e6,
        )

    def _entry(
        self, channel: str, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> tuple[Message, float]:
        raw = fields[b"d"]
        data: str | bytes = raw.decode() if fields.get(b"k") == b"t" else raw
        message = Message(channel, _offset(entry_id), fields[b"e"].decode(), data)
        return message, int(fields.get(b"t", b"0")) / 1000

    async def _head(self, client: Any, channel: str) -> tuple[str, int]:
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(self._epoch_key(channel))
            pipe.xrevrange(self._stream_key(channel), "+", "-", count=1)
            epoch, last = await pipe.execute()
        return (epoch.decode() if epoch is not None else ""), (_offset(last[0][0]) if last else 0)

    async def watch(self, channel: str) -> tuple[str, int]:
        from redis.exceptions import RedisError

        if channel in self._cursors:
            return self._epochs.get(channel, ""), self._cursors[channel]
        try:
            epoch, head = await self._head(self._client, channel)
        except (RedisError, OSError) as exc:
            raise self._failed(f"XREVRANGE {self._stream_key(channel)}", exc) from exc
        self._cursors[channel] = head
        self._epochs[channel] = epoch
        self._changed.set()
        return epoch, head

    async def unwatch(self, channel: str) -> None:
        self._cursors.pop(channel, None)
        self._epochs.pop(channel, None)
        self._changed.set()

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "ok": self.connected and self.listener == "running",
            "url": _redact(self.url),
            "connected": self.connected,
            "listener": self.listener,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            "watched": len(self._cursors),
            "delivered": self.delivered,
        }

    # --- the listener -------------------------------------------------------------------------

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        self.listener = "running"
        delays: Iterator[float] | None = None
        while True:
            try:
                if not self.connected:
                    resets = await self._resync()
                    self._set_up(delays is not None)
                    delays = None
                    for reset in resets:
                        self._reset(*reset)
                await self._read_once()
            except (RedisError, OSError) as exc:
                if delays is None:
                    delays = self.backoff.delays()
                self._set_down(exc)
                self.listener = "reconnecting"
                await asyncio.sleep(next(delays))

    def _set_up(self, was_down: bool) -> None:
        self.connected = True
        self.listener = "running"
        if was_down:
            self.reconnects += 1
            logger.warning(
                "hub: Redis at %s is reachable again; delivery resumes", _redact(self.url)
            )
        if self._sink is not None:
            self._sink.backend_state(True, None)

    def _set_down(self, exc: Exception) -> None:
        reason = f"{self._command} failed: {type(exc).__name__}: {exc}"
        if self.connected or self.last_error != reason:
            logger.warning(
                "hub: lost Redis at %s (%s); reconnecting with backoff", _redact(self.url), reason
            )
        was_up = self.connected
        self.connected = False
        self.last_error = reason
        if was_up and self._sink is not None:
            self._sink.backend_state(False, reason)

    async def _resync(self) -> list[tuple[str, str, int, str]]:
        """After (re)connecting: check that each watched channel's history is the one we were
        reading; a changed epoch means it was lost, and delivery restarts in the new one.
        Returns the resets to apply (channel, epoch, head, reason)."""
        resets = []
        self._command = "PING"
        await self._reader.ping()
        for channel in list(self._cursors):
            self._command = f"XREVRANGE {self._stream_key(channel)}"
            epoch, head = await self._head(self._reader, channel)
            known = self._epochs.get(channel, "")
            if channel not in self._cursors:
                continue
            if known and epoch != known:
                reason = f"the channel's history was reset (epoch {known!r} is gone)"
                resets.append((channel, epoch, 0, reason))
            elif head < self._cursors[channel]:
                resets.append((channel, epoch, 0, "the channel's history was reset (went back)"))
        return resets

    def _reset(self, channel: str, epoch: str, head: int, reason: str) -> None:
        logger.warning("hub: channel %s: %s", channel, reason)
        self._cursors[channel] = head
        self._epochs[channel] = epoch
        if self._sink is not None:
            self._sink.reset(channel, epoch, head, reason)

    async def _read_once(self) -> None:
        if not self._cursors:
            self._changed.clear()
            await self._changed.wait()
            return
        self._changed.clear()
        streams = {self._stream_key(c): f"0-{offset}" for c, offset in self._cursors.items()}
        self._command = f"XREAD BLOCK {int(self.block * 1000)} STREAMS {' '.join(streams)}"
        read = asyncio.ensure_future(
            self._reader.xread(streams, count=self.batch, block=int(self.block * 1000))
        )
        read.add_done_callback(_retrieve)
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({read, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not read.done():
                # The watched channels changed (or we are closing): ask again with the new set.
                read.cancel()
        if not read.done() or read.cancelled():
            return
        for key, entries in read.result() or ():
            channel = self._channel_of(key)
            batch: list[Message] = []
            for entry_id, fields in entries:
                if channel not in self._cursors:
                    break
                message, _ = self._entry(channel, entry_id, fields)
                known = self._epochs.get(channel, "")
                if known and message.epoch != known:
                    # Deliver what came before the reset first, then signal it.
                    await self._deliver(batch)
                    batch = []
                    self._reset(channel, message.epoch, 0, "the channel's history was reset")
                self._epochs[channel] = message.epoch
                self._cursors[channel] = message.offset
                self.delivered += 1
                batch.append(message)
            await self._deliver(batch)

    async def _deliver(self, batch: list[Message]) -> None:
        """Hand consecutive messages of one channel to the hub at once: it writes each
        connection once for all of them rather than once per message."""
        if batch and self._sink is not None:
            await self._sink.deliver_many(batch)
