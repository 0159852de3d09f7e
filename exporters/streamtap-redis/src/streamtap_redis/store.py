"""A Redis :class:`~streamtap.web.store.EventStore`: every web process reads every run's log.

Readers ``XRANGE`` from the position asked for, then ``XREAD BLOCK`` for
live entries; positions are event ``seq`` numbers (entry ids are ``{seq}-1``),
so a ``Last-Event-ID`` given to one process resumes on any other.

When the position asked for is older than the log still holds (trimmed by
``MAXLEN``, or events lost while Redis was unreachable, or a log re-created
after a Redis restart), the reader gets, instead of a silent jump:

1. a gap event -- ``{"kind": "custom", "name": "streamtap.gap", "seq": <last
   missing seq>, "data": {"from", "to", "lost", "reason"}}``;
2. a snapshot of the message so far -- ``{"kind": "custom", "name":
   "streamtap.snapshot", "seq": <upto>, "data": {"text", "upto"}}``: the
   user-facing text of the run up to ``seq`` ``upto``;

then the events after ``upto``. Both carry the root run, so the UI stream
shows them as ``data-streamtap-gap`` / ``data-streamtap-snapshot`` parts.
"""

from __future__ import annotations

import asyncio
import json
import typing as t

from streamtap.events import Run
from streamtap.web.store import ReadResult

from .follow import Follower
from .keys import Keys
from .log import RunLog
from .tasks import raise_if_cancelling

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["GAP", "SNAPSHOT", "RedisEventStore"]

GAP = "streamtap.gap"
"""The name of the custom event announcing a range of ``seq`` a reader will not get."""
SNAPSHOT = "streamtap.snapshot"
"""The name of the custom event carrying the message's text up to a ``seq``."""

StoredEvent = t.Mapping[str, t.Any]

_BLOCK_SLICE = 2.0  # seconds one XREAD BLOCK waits at most (a lost connection is noticed within it)


class RedisEventStore:
    """The web tier's event store on Redis Streams (implements :class:`~streamtap.web.store.EventStore`).

    Args:
        client: a ``redis.asyncio.Redis`` client (see :func:`~streamtap_redis.connect`).
        keys: key names (prefix); default prefix ``streamtap``.
        log: the writer for ``append``/``finish`` (default: a :class:`RunLog` on ``client``).
        retry: seconds a read keeps retrying while Redis is unreachable before it raises.
    """

    def __init__(
        self, client: aioredis.Redis, keys: Keys | None = None, *, log: RunLog | None = None, retry: float = 10.0
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.log = log if log is not None else RunLog(client, self.keys)
        self.retry = retry
        self.follower = Follower(client)

    async def create(self, run_id: str) -> None:
        """See :meth:`EventStore.create`: the run's metadata (``upto = -1``), so readers find it."""
        meta = self.keys.meta(run_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(meta, "upto", -1)
        pipe.expire(meta, int(self.log.running_ttl))
        await pipe.execute()

    async def append(self, run_id: str, event: StoredEvent) -> None:
        """See :meth:`EventStore.append` (buffered and pipelined by :class:`RunLog`; waits when its buffer is full)."""
        await self.log.put(run_id, event)

    async def finish(self, run_id: str, status: str | None = None) -> None:
        """See :meth:`EventStore.finish`: the end marker goes after the last event."""
        await self.log.finish(run_id, status=status)

    async def read(self, run_id: str, after: int = -1, limit: int = 1000) -> ReadResult | None:
        """See :meth:`EventStore.read`; a gap event and a snapshot stand for events no longer held."""
        return await self._retrying(lambda: self._read(run_id, after, limit))

    async def _read(self, run_id: str, after: int, limit: int) -> ReadResult | None:
        stream, meta = self.keys.run(run_id), self.keys.meta(run_id)
        entries: t.Any = []
        if limit > 0:  # the common case -- events past the position, contiguous -- is one command, or none
            cached = self.follower.cached(stream, after)
            if cached == []:
                return ReadResult([], False, after + 1)  # followed from here, nothing newer yet: wait() will say
            entries = (
                cached[: limit + 1]
                if cached
                else await self.client.xrange(stream, f"{after + 1}-0", "+", count=limit + 1)
            )
            if entries and _position(entries[0][0]) == after + 1:
                events, finished = self._contiguous(entries, after, limit)
                return ReadResult(events, finished, after + 1)  # first_seq: at most this; only its bound matters here
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(meta, "upto", "lost", "done")
        pipe.xrange(stream, "-", "+", count=1)
        (upto, lost, done), head = await pipe.execute()
        if upto is None and not head:
            return None
        first_seq = _position(head[0][0]) if head else after + 1
        if entries and _position(entries[0][0]) > after + 1:  # events missing before the first entry held
            return ReadResult(
                await self._gap(run_id, after + 1, _position(entries[0][0]) - 1, int(lost or 0)), False, first_seq
            )
        finished = not entries and done is not None and not head  # the log expired or was lost, the run is over
        return ReadResult([], finished, first_seq)

    @staticmethod
    def _contiguous(entries: list[t.Any], after: int, limit: int) -> tuple[list[StoredEvent], bool]:
        """The events of ``entries`` up to the first gap or the end marker; whether the marker was reached."""
        events: list[StoredEvent] = []
        expected = after + 1
        for entry_id, fields in entries:
            if _position(entry_id) != expected:
                break  # a gap: the next read reports it
            if b"f" in fields:
                return events, True
            if len(events) >= limit:
                break
            events.append(json.loads(fields[b"e"]))
            expected += 1
        return events, False

    async def _gap(self, run_id: str, first: int, last: int, lost: int) -> list[StoredEvent]:
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.text(run_id))
        pipe.hget(self.keys.meta(run_id), "upto")
        text, upto = await pipe.execute()
        run = Run(run_id, "", "module", None, run_id).to_dict()  # the run the log belongs to, as on the wire
        reason = (
            f"events {first}..{last} of this run are not in its log any more (trimmed, or lost while Redis was "
            f"unreachable: {lost} undelivered); the snapshot stands for them"
        )
        out: list[StoredEvent] = [
            {
                "kind": "custom",
                "seq": last,
                "run": run,
                "name": GAP,
                "data": {"from": first, "to": last, "lost": lost, "reason": reason},
            }
        ]
        upto_n = int(upto) if upto is not None else last
        upto_n = max(upto_n, last)
        out.append(
            {
                "kind": "custom",
                "seq": upto_n,
                "run": run,
                "name": SNAPSHOT,
                "data": {"text": (text or b"").decode("utf-8", "replace"), "upto": upto_n},
            }
        )
        return out

    async def wait(self, run_id: str, after: int, timeout: float) -> bool:
        """See :meth:`EventStore.wait` (one shared ``XREAD BLOCK`` per store wakes every waiting reader)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stream = self.keys.run(run_id)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            if await self.follower.wait(stream, after, min(left, _BLOCK_SLICE)):
                return True
            try:
                if not await self.client.exists(self.keys.meta(run_id), stream):
                    return True  # the run is gone: let the reader find out
            except Exception:
                return False

    async def expire(self, now: float | None = None) -> int:
        """See :meth:`EventStore.expire`: Redis expires finished logs itself (``ttl``); returns 0."""
        return 0

    async def aclose(self) -> None:
        """Flush the writer, stop the follower."""
        await self.log.aclose()
        await self.follower.aclose()

    async def _retrying(self, call: t.Callable[[], t.Awaitable[ReadResult | None]]) -> ReadResult | None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry
        delay = 0.05
        while True:
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                raise_if_cancelling()  # redis-py can turn a cancellation that lands in its read timeout into this
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


def _position(entry_id: bytes | str) -> int:
    """The ``seq`` an entry id stands for (``{seq}-1`` for an event, ``{next seq}-0`` for the end marker)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])
