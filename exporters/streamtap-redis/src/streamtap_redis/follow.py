"""One ``XREAD BLOCK`` per process for every waiting reader, so 1,000 live streams hold one Redis connection, not 1,000.

The follower keeps, for each run log a reader waited on recently, the id of
the last entry it has seen, and blocks in a single ``XREAD`` over all of them
(on a connection of its own), each from its own cursor, so that Redis only
returns what is new. When a log grows, the readers waiting past an older
position are woken; a reader asking to wait at a position the follower has
already seen passed returns at once. A log nobody waited on for a while is
dropped from the ``XREAD``. A reader waiting on a log the blocked ``XREAD``
does not cover interrupts it (``CLIENT UNBLOCK``), once per new log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import typing as t

from .tasks import cancel_and_wait, raise_if_cancelling

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["Follower"]

log = logging.getLogger("streamtap_redis")

Position = tuple[int, int]


class Follower:
    """Wakes readers when their run log grows.

    Args:
        client: the shared client (its pool's settings are copied for the follower's own connection).
        block: seconds one ``XREAD BLOCK`` waits at most.
        idle: seconds a log stays followed after its last waiter.
        count: entries read per log per ``XREAD`` at most.
    """

    def __init__(self, client: aioredis.Redis, *, block: float = 5.0, idle: float = 10.0, count: int = 500) -> None:
        self.client = client
        self.block = block
        self.idle = idle
        self.count = count
        self._waiters: dict[str, list[tuple[Position, asyncio.Future[bool]]]] = {}
        self._cursors: dict[str, Position] = {}  # the last entry id seen per followed log
        self._used: dict[str, float] = {}  # when a reader last waited on the log
        self._task: asyncio.Task[None] | None = None
        self._own: aioredis.Redis | None = None
        self._own_id: int | None = None
        self._covered: frozenset[str] = frozenset()  # the logs of the XREAD now blocked
        self._reading = False
        # The entries the follower read, per log (readers take them from here instead of asking Redis again),
        # and the position they follow without a hole.
        self._cache: dict[str, collections.deque[tuple[Position, t.Any, t.Any]]] = {}
        self._cache_from: dict[str, Position] = {}

    def cached(self, key: str, after: int) -> list[tuple[t.Any, t.Any]] | None:
        """The entries past ``{after}-1`` the follower read, or ``None`` when it cannot tell (not followed from there)."""
        start = self._cache_from.get(key)
        if start is None or start > (after, 1):
            return None
        return [(entry_id, fields) for position, entry_id, fields in self._cache.get(key, ()) if position > (after, 1)]

    async def wait(self, key: str, after: int, timeout: float) -> bool:
        """Wait until ``key`` has an entry past ``{after}-1``; ``False`` after ``timeout`` seconds."""
        position: Position = (after, 1)
        self._used[key] = time.monotonic()
        seen = self._cursors.get(key)
        if seen is not None and seen > position:
            return True  # the follower saw the log go past this position already
        if seen is None or seen < position:
            self._cursors[key] = position  # the reader has everything up to here
            self._cache_from[key] = position
            self._cache[key] = collections.deque(maxlen=self.count)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (position, fut)
        self._waiters.setdefault(key, []).append(entry)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="streamtap-redis-follower")
        elif key not in self._covered:
            await self._unblock(key)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(entry)
                if not waiting:
                    del self._waiters[key]

    async def aclose(self) -> None:
        """Stop the follower task and close its connection."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._own is not None:
            await self._own.aclose()
            self._own = None

    async def _unblock(self, key: str) -> None:
        # CLIENT UNBLOCK does nothing until the XREAD is blocked on the server: retry briefly.
        for _ in range(50):
            if self._own_id is None or not self._reading or key in self._covered:
                return
            try:
                if await self.client.client_unblock(self._own_id):
                    return
            except Exception:
                return
            await asyncio.sleep(0.001)

    async def _connection(self) -> aioredis.Redis:
        if self._own is None:
            import redis.asyncio as aioredis

            kwargs = dict(self.client.connection_pool.connection_kwargs)
            pool = aioredis.ConnectionPool(
                connection_class=self.client.connection_pool.connection_class, max_connections=1, **kwargs
            )
            self._own = aioredis.Redis(connection_pool=pool)
            self._own_id = int(await self._own.client_id())
        return self._own

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key in [k for k, used in self._used.items() if now - used > self.idle and k not in self._waiters]:
            del self._used[key]
            self._cursors.pop(key, None)
            self._cache.pop(key, None)
            self._cache_from.pop(key, None)

    async def _run(self) -> None:
        while True:
            self._forget_idle()
            if not self._cursors:
                return
            try:
                own = await self._connection()
                streams = {key: f"{ms}-{sq}" if ms >= 0 else "0-0" for key, (ms, sq) in self._cursors.items()}
                self._covered = frozenset(streams)
                self._reading = True
                found: t.Any = await own.xread(
                    t.cast(t.Any, streams), count=self.count, block=max(1, int(self.block * 1000))
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.debug("The follower's XREAD failed; readers re-read", exc_info=True)
                self._wake(lambda key, position: True)
                if self._own is not None:
                    with contextlib.suppress(Exception):
                        await self._own.aclose()
                self._own, self._own_id = None, None
                await asyncio.sleep(0.1)
                continue
            finally:
                self._covered = frozenset()
                self._reading = False
            grown: dict[str, Position] = {}
            for key, entries in found or []:
                if not entries:
                    continue
                name = key.decode() if isinstance(key, bytes) else str(key)
                cache = self._cache.get(name)
                position = (-1, 0)
                for entry_id, fields in entries:
                    position = _position(entry_id)
                    if cache is not None:
                        if len(cache) == cache.maxlen:
                            self._cache_from[name] = cache[0][0]  # the oldest is dropped: the cache starts after it
                        cache.append((position, entry_id, fields))
                if position > self._cursors.get(name, (-1, 0)):
                    self._cursors[name] = position
                grown[name] = position
            if grown:
                self._wake(_grown(grown))

    def _wake(self, due: t.Callable[[str, Position], bool]) -> None:
        for key, waiting in self._waiters.items():
            for position, fut in waiting:
                if not fut.done() and due(key, position):
                    fut.set_result(True)


def _position(entry_id: t.Any) -> Position:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, sq = text.partition("-")
    return (int(ms), int(sq or 0))


def _grown(grown: dict[str, Position]) -> t.Callable[[str, Position], bool]:
    return lambda key, position: key in grown and grown[key] > position
