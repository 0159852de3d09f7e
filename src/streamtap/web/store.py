"""Per-run event buffers behind a small interface, so another store can replace the in-memory one.

The web endpoints never touch a run's events directly: the run's pump
:meth:`~EventStore.append`\\ s them, every reader (the chat stream, a resume
after reload, the plain events endpoint) reads from a position with
:meth:`~EventStore.read` and waits for more with :meth:`~EventStore.wait`.
A store kept in another process (Redis Streams: ``XADD`` / ``XRANGE`` /
``XREAD BLOCK``, a later exporter) implements the same five methods; the
endpoints do not change.

Events are stored as :meth:`Event.to_dict` dicts (the JSON wire form), keyed
by their ``seq`` (gap-free within a root run, starting at 0).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import typing as t

__all__ = ["EXPIRED", "EventStore", "MemoryEventStore", "ReadResult", "follow"]

StoredEvent = t.Mapping[str, t.Any]


class ReadResult(t.NamedTuple):
    """What :meth:`EventStore.read` found."""

    events: list[StoredEvent]
    """Events with ``seq`` greater than the position asked for, in order."""
    finished: bool
    """No more events will come for this run (it ended, or its buffer was closed)."""
    first_seq: int
    """The oldest ``seq`` still held (older ones were dropped because the run outgrew its bound)."""


@t.runtime_checkable
class EventStore(t.Protocol):
    """Where the web app keeps each run's events while readers come and go."""

    async def create(self, run_id: str) -> None:
        """Make an empty buffer for a new run."""

    async def append(self, run_id: str, event: StoredEvent) -> None:
        """Add one event (``seq`` order) and wake the waiting readers."""

    async def finish(self, run_id: str) -> None:
        """Mark the run's stream complete: readers drain what is left and stop."""

    async def read(self, run_id: str, after: int = -1, limit: int = 1000) -> ReadResult | None:
        """Events with ``seq > after`` (at most ``limit``), or ``None`` for an unknown or expired run."""

    async def wait(self, run_id: str, after: int, timeout: float) -> bool:
        """Wait until an event with ``seq > after`` exists or the run finished; ``False`` on timeout."""

    async def expire(self, now: float | None = None) -> int:
        """Drop finished runs older than the store's time to live; returns how many were dropped."""


EXPIRED = "the run's events expired; it can no longer be replayed"
"""Why a stream ended early: the store forgot the run (its time to live, or its bound on runs)."""

_WAIT = 3600.0  # seconds one wait for new events may last (it ends at once when an event comes)


async def follow(store: EventStore, run_id: str, after: int = -1) -> t.AsyncGenerator[list[StoredEvent] | None, None]:
    """Read a run from ``store``: each batch of events after seq ``after`` as it comes, until the run finished.

    Yields ``None`` once, last, when the store forgot the run (unknown or
    expired) before it finished. Every reader of a run (the UI message stream,
    AG-UI, the events endpoint) follows it this way; close the iterator
    (``contextlib.aclosing``) when leaving early.
    """
    while True:
        res = await store.read(run_id, after)
        if res is None:
            yield None
            return
        if res.events:
            after = res.events[-1]["seq"]
            yield res.events
            continue
        if res.finished:
            return
        await store.wait(run_id, after, _WAIT)


class _Buffer:
    __slots__ = ("events", "finished", "finished_at", "first_seq", "next_seq", "waiters")

    def __init__(self) -> None:
        self.events: collections.deque[StoredEvent] = collections.deque()
        self.first_seq = 0
        self.next_seq = 0
        self.finished = False
        self.finished_at = 0.0
        self.waiters: list[asyncio.Future[bool]] = []

    def wake(self) -> None:
        """Resolve every waiting reader's future (each wakes on the loop's next iteration)."""
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(True)


def _time_out(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class MemoryEventStore:
    """An in-process :class:`EventStore`: bounded per run, finished runs expire.

    Use it from one event loop (the web app's).

    Args:
        max_events_per_run: events kept per run; the oldest are dropped beyond
            it (a replay then starts later; the stream stays valid).
        ttl: seconds a finished run's events stay readable (a reload after the
            answer completed can still fetch it within this time).
        max_runs: runs kept at most; the oldest finished runs go first.
    """

    def __init__(self, *, max_events_per_run: int = 50_000, ttl: float = 600.0, max_runs: int = 1000) -> None:
        for name, value in (("max_events_per_run", max_events_per_run), ("max_runs", max_runs)):
            if not isinstance(value, int) or value < 1:
                msg = f"MemoryEventStore {name} must be a whole number of at least 1, got {value!r}."
                raise ValueError(msg)
        if not ttl > 0:
            msg = f"MemoryEventStore ttl must be a positive number of seconds, got {ttl!r}."
            raise ValueError(msg)
        self.max_events_per_run = max_events_per_run
        self.ttl = float(ttl)
        self.max_runs = max_runs
        self._runs: dict[str, _Buffer] = {}

    def __len__(self) -> int:
        return len(self._runs)

    async def create(self, run_id: str) -> None:
        """See :meth:`EventStore.create`."""
        await self.expire()
        if len(self._runs) >= self.max_runs:
            finished = sorted((b.finished_at, rid) for rid, b in self._runs.items() if b.finished)
            for _, rid in finished[: len(self._runs) - self.max_runs + 1]:
                del self._runs[rid]
        self._runs[run_id] = _Buffer()

    async def append(self, run_id: str, event: StoredEvent) -> None:
        """See :meth:`EventStore.append`."""
        buf = self._runs.get(run_id)
        if buf is None or buf.finished:
            return
        buf.events.append(event)
        buf.next_seq = event["seq"] + 1
        if len(buf.events) > self.max_events_per_run:
            buf.events.popleft()
            buf.first_seq = buf.events[0]["seq"]
        if buf.waiters:
            buf.wake()

    async def finish(self, run_id: str) -> None:
        """See :meth:`EventStore.finish`."""
        buf = self._runs.get(run_id)
        if buf is None or buf.finished:
            return
        buf.finished = True
        buf.finished_at = time.monotonic()
        buf.wake()

    async def read(self, run_id: str, after: int = -1, limit: int = 1000) -> ReadResult | None:
        """See :meth:`EventStore.read`."""
        buf = self._runs.get(run_id)
        if buf is None:
            return None
        events = buf.events
        start = max(0, after + 1 - buf.first_seq)
        if start >= len(events):
            return ReadResult([], buf.finished, buf.first_seq)
        end = min(len(events), start + limit)
        out = list(itertools.islice(events, start, end))
        return ReadResult(out, buf.finished and end == len(events), buf.first_seq)

    async def wait(self, run_id: str, after: int, timeout: float) -> bool:
        """See :meth:`EventStore.wait`."""
        buf = self._runs.get(run_id)
        if buf is None:
            return True
        if buf.next_seq > after + 1 or buf.finished:
            return True
        # A bare future, resolved by append() or by the timer: the reader wakes on the
        # loop's next iteration (asyncio.wait_for would add a task, one iteration more,
        # per event under load).
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        buf.waiters.append(fut)
        timer = loop.call_later(timeout, _time_out, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            if fut in buf.waiters:  # timed out or cancelled: append() did not take it
                buf.waiters.remove(fut)

    async def expire(self, now: float | None = None) -> int:
        """See :meth:`EventStore.expire`."""
        now = time.monotonic() if now is None else now
        dead = [rid for rid, b in self._runs.items() if b.finished and now - b.finished_at > self.ttl]
        for rid in dead:
            del self._runs[rid]
        return len(dead)
