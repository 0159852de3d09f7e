"""Any process can publish: a bus subscriber writing the events of every run started in this process to Redis.

::

    from streamtap_redis import RedisPublisher

    with RedisPublisher("redis://127.0.0.1:6379/0"):
        batch_job()          # every root run's events go to {prefix}:run:{root_id}

A web process on the same Redis (``create_redis_app`` / ``RedisEventStore``)
then shows them live and replays them: ``GET /api/runs/{root_id}/events``.

The subscriber runs in the producing thread and only hands the event to the
publisher's own thread (its event loop and its :class:`~streamtap_redis.RunLog`),
so a slow or unreachable Redis never holds a run: its events are buffered
(bounded per run) and flushed on reconnect, what is dropped is counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import typing as t

from streamtap.bus import subscribe

from .connection import client_for
from .keys import Keys
from .log import RunLog

if t.TYPE_CHECKING:  # pragma: no cover
    from streamtap.events import Event

__all__ = ["RedisPublisher"]


class RedisPublisher:
    """Writes every run's events to its Redis log while subscribed (a context manager).

    Args:
        url: the Redis URL (``redis://``, ``rediss://``).
        prefix: the key prefix.
        maxlen, ttl, max_buffered: the :class:`~streamtap_redis.RunLog` settings.
        flush_timeout: seconds :meth:`close` waits for the buffered events.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "streamtap",
        maxlen: int = 10_000,
        ttl: float = 600.0,
        max_buffered: int = 10_000,
        flush_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.flush_timeout = flush_timeout
        self._settings = {"maxlen": maxlen, "ttl": ttl, "max_buffered": max_buffered}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="streamtap-redis-publisher", daemon=True)
        self._log: RunLog | None = None
        self._subscription: t.Any = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._log = RunLog(client_for(self.url), self.keys, **self._settings)  # type: ignore[arg-type]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> RedisPublisher:
        """Start the publisher's thread and subscribe to the bus."""
        self._thread.start()
        self._ready.wait(10)
        self._subscription = subscribe(self._on_event)
        return self

    def _on_event(self, event: Event) -> None:
        data = event.to_dict()
        root = event.run.root_id
        ending = event.kind == "end" and event.run.run_id == root
        status = getattr(event, "status", None) if ending else None
        self._loop.call_soon_threadsafe(self._deliver, root, data, ending, status)

    def _deliver(self, root: str, data: dict[str, t.Any], ending: bool, status: str | None) -> None:
        assert self._log is not None
        self._log.append(root, data)
        if ending:
            self._loop.create_task(self._log.finish(root, status=status))

    def stats(self) -> t.Any:
        """The :class:`~streamtap_redis.log.LogStats` of the publisher's writer."""
        assert self._log is not None
        return self._log.stats()

    def close(self) -> None:
        """Unsubscribe, write what is buffered (at most ``flush_timeout`` seconds), stop the thread."""
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        if self._log is not None:
            future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            with_timeout = self.flush_timeout + 5
            try:
                future.result(with_timeout)
            except (concurrent.futures.TimeoutError, TimeoutError):
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        assert self._log is not None
        await self._log.aclose(self.flush_timeout)
        await self._log.client.aclose()

    def __enter__(self) -> RedisPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
