"""One ``XREAD BLOCK`` per process for every waiting reader, so 1,000 live streams hold one Redis connection, not 1,000.

Readers register ``(stream key, after seq)``; a single task blocks in
``XREAD BLOCK`` over all the keys waited on (each from its smallest position)
on a connection of its own, and wakes the readers whose stream got an entry
past their position. A reader waiting on a key the blocked ``XREAD`` does not
cover yet interrupts it (``CLIENT UNBLOCK``) so that it is included at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["Follower"]

log = logging.getLogger("streamtap_redis")


class Follower:
    """Wakes readers when their run log grows.

    Args:
        client: the shared client (its connection pool's settings are copied for the follower's own connection).
        block: seconds one ``XREAD BLOCK`` waits at most.
    """

    def __init__(self, client: aioredis.Redis, *, block: float = 5.0) -> None:
        self.client = client
        self.block = block
        self._waiters: dict[str, list[tuple[int, asyncio.Future[bool]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._own: aioredis.Redis | None = None
        self._own_id: int | None = None
        self._covered: dict[str, int] = {}  # key -> position of the XREAD now blocked
        self._reading = False

    async def wait(self, key: str, after: int, timeout: float) -> bool:
        """Wait until ``key`` has an entry past ``{after}-1``; ``False`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (after, fut)
        self._waiters.setdefault(key, []).append(entry)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="streamtap-redis-follower")
        elif key not in self._covered or after < self._covered[key]:
            await self._unblock(key, after)
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own is not None:
            await self._own.aclose()
            self._own = None

    async def _unblock(self, key: str, after: int) -> None:
        # CLIENT UNBLOCK is a no-op until the XREAD is blocked on the server: retry briefly.
        for _ in range(50):
            if self._own_id is None or not self._reading or (key in self._covered and after >= self._covered[key]):
                return
            try:
                if await self.client.client_unblock(self._own_id):
                    return
            except Exception:  # noqa: BLE001 - the follower's own XREAD slice ends anyway
                return
            await asyncio.sleep(0.001)

    async def _connection(self) -> aioredis.Redis:
        if self._own is None:
            import redis.asyncio as aioredis

            kwargs = dict(self.client.connection_pool.connection_kwargs)
            pool = aioredis.ConnectionPool(connection_class=self.client.connection_pool.connection_class, max_connections=1, **kwargs)
            self._own = aioredis.Redis(connection_pool=pool)
            self._own_id = int(await self._own.client_id())
        return self._own

    async def _run(self) -> None:
        while self._waiters:
            try:
                own = await self._connection()
                cursors = {key: min(a for a, _ in waiting) for key, waiting in self._waiters.items() if waiting}
                if not cursors:
                    return
                streams = {key: f"{a}-1" if a >= 0 else "0-0" for key, a in cursors.items()}
                self._covered = cursors
                self._reading = True
                found: t.Any = await own.xread(t.cast(t.Any, streams), count=1, block=max(1, int(self.block * 1000)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("The follower's XREAD failed; readers re-read", exc_info=True)
                self._wake_all()
                if self._own is not None:
                    with contextlib.suppress(Exception):
                        await self._own.aclose()
                self._own, self._own_id = None, None
                await asyncio.sleep(0.1)
                continue
            finally:
                self._covered = {}
                self._reading = False
            for key, entries in found or []:
                name = key.decode() if isinstance(key, bytes) else str(key)
                if not entries:
                    continue
                last = entries[-1][0]
                text = last.decode() if isinstance(last, bytes) else str(last)
                ms, _, sq = text.partition("-")
                position = (int(ms), int(sq or 0))
                for after, fut in list(self._waiters.get(name, ())):
                    if position > (after, 1) and not fut.done():
                        fut.set_result(True)

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for _, fut in waiting:
                if not fut.done():
                    fut.set_result(True)
