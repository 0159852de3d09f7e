"""A run's event log on Redis Streams: pipelined appends that survive a Redis outage.

:class:`RunLog` is the writing side. ``append()`` never waits for Redis: it
puts the event in a bounded buffer and a background task writes what has
gathered in one pipelined ``MULTI``/``EXEC`` (``XADD`` per event, ``MAXLEN ~``
trimmed; the user-facing text ``APPEND``\\ ed to the snapshot key; the last
``seq`` written). A fast producer is so bound by Redis' throughput, not by
round trips.

Each event's stream entry id is ``{seq}-1``: the resume position is the
event's own ``seq``, which means the same on every process (and the log stays
ordered even when it is re-created after a Redis restart). ``finish()`` adds
an end marker (``{next seq}-0``, field ``f``) and sets the keys to expire
``ttl`` seconds later.

When Redis is unreachable the run goes on: events wait in the buffer (at most
``max_buffered`` per run; beyond it the oldest are dropped and counted), and
are flushed once Redis answers again. What could not be delivered is counted
in the run's ``lost`` field; readers see the missing ``seq`` range as a gap event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import typing as t

from .keys import Keys
from .tasks import cancel_and_wait, raise_if_cancelling

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["LogStats", "RunLog"]

log = logging.getLogger("streamtap_redis")

StoredEvent = t.Mapping[str, t.Any]

_MAX_TEXT = 1_000_000  # characters of undelivered text kept for the snapshot during an outage


class LogStats(t.NamedTuple):
    """Counters of a :class:`RunLog` (for tests, benchmarks and health checks)."""

    written: int
    """Events written to Redis."""
    lost: int
    """Events that could not be delivered (buffer overflow during an outage, refused entries)."""
    buffered: int
    """Events waiting to be written."""
    outages: int
    """Times a flush failed because Redis could not be reached."""


class _Pending:
    __slots__ = ("done", "events", "finish", "hidden", "lost", "status", "text", "text_size", "unreported")

    def __init__(self) -> None:
        self.events: collections.deque[StoredEvent] = collections.deque()
        self.text: list[str] = []
        self.text_size = 0  # characters in ``text``
        self.hidden: dict[str, bool] = {}  # run id -> under a tool (its text is not the message's)
        self.lost = 0
        self.unreported = 0  # lost events not yet counted in Redis
        self.finish = False
        self.status: str | None = None
        self.done: asyncio.Event = asyncio.Event()


class RunLog:
    """Writes run events to their Redis streams, batched and pipelined.

    Use it from one event loop. Each run's events must come in ``seq`` order.

    Args:
        client: a ``redis.asyncio.Redis`` client.
        keys: the key names (prefix).
        maxlen: entries kept per run log at most (``MAXLEN ~``: Redis may keep a few more).
        ttl: seconds a finished run's log stays readable.
        running_ttl: seconds a run's keys live without news (a producer that died never finishes).
        max_buffered: events buffered per run while Redis is unreachable; the oldest are dropped beyond it.
        batch: events written in one pipeline at most.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys | None = None,
        *,
        maxlen: int = 10_000,
        ttl: float = 600.0,
        running_ttl: float = 86_400.0,
        max_buffered: int = 10_000,
        batch: int = 2_000,
    ) -> None:
        for name, value in (("maxlen", maxlen), ("max_buffered", max_buffered), ("batch", batch)):
            if not isinstance(value, int) or value < 1:
                msg = f"RunLog {name} must be a whole number of at least 1, got {value!r}."
                raise ValueError(msg)
        for name, number in (("ttl", ttl), ("running_ttl", running_ttl)):
            if not number > 0:
                msg = f"RunLog {name} must be a positive number of seconds, got {number!r}."
                raise ValueError(msg)
        self.client = client
        self.keys = keys or Keys()
        self.maxlen = maxlen
        self.ttl = ttl
        self.running_ttl = running_ttl
        self.max_buffered = max_buffered
        self.batch = batch
        self._runs: dict[str, _Pending] = {}
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._writing = False  # a batch taken from the buffer is being written
        self._task: asyncio.Task[None] | None = None
        self._written = 0
        self._lost = 0
        self._outages = 0
        self._down = False
        self._outage_logged = False

    # -- the producer's side ------------------------------------------------------

    async def put(self, run_id: str, event: StoredEvent) -> None:
        """Buffer one event, waiting for room while Redis is up and the run's buffer is full (back-pressure).

        While Redis is unreachable it never waits: the oldest buffered events are dropped and counted.
        """
        pending = self._runs.get(run_id)
        while pending is not None and len(pending.events) >= self.max_buffered and not self._down:
            self._kick()
            await self._room_event().wait()
            pending = self._runs.get(run_id)
        self.append(run_id, event)

    def _room_event(self) -> asyncio.Event:
        if self._room is None:
            self._room = asyncio.Event()
        return self._room

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def append(self, run_id: str, event: StoredEvent) -> None:
        """Buffer one event (``seq`` order) for writing; never waits (a full buffer drops its oldest, counted)."""
        pending = self._runs.get(run_id)
        if pending is None:
            pending = self._runs[run_id] = _Pending()
        if pending.finish:
            return
        self._track_text(pending, event)
        pending.events.append(event)
        if len(pending.events) > self.max_buffered:
            pending.events.popleft()
            pending.lost += 1
            pending.unreported += 1
            self._lost += 1
        self._kick()

    async def finish(self, run_id: str, *, status: str | None = None, timeout: float = 5.0) -> bool:
        """Write what is buffered, then the end marker; the keys expire ``ttl`` seconds later.

        Waits at most ``timeout`` seconds (Redis may be down: the writing goes on
        in the background); returns whether the log was completed in time.
        """
        pending = self._runs.get(run_id)
        if pending is None:
            pending = self._runs[run_id] = _Pending()
        pending.finish = True
        pending.status = status
        self._kick()
        try:
            await asyncio.wait_for(pending.done.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything buffered is written (``False`` after ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._writing or any(p.events or p.finish for p in self._runs.values()):
            self._kick()
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.002)  # the writer task empties the buffer; it offers nothing finer to wait on
        return True

    def stats(self) -> LogStats:
        """Counters so far."""
        buffered = sum(len(p.events) for p in self._runs.values())
        return LogStats(self._written, self._lost, buffered, self._outages)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush (at most ``timeout`` seconds), then stop the writer task."""
        await self.flush(timeout)
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # -- the writer task -------------------------------------------------------

    def _kick(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="streamtap-redis-log")

    @staticmethod
    def _track_text(pending: _Pending, event: StoredEvent) -> None:
        kind = event.get("kind")
        run = event.get("run") or {}
        if kind == "start":
            parent = run.get("parent_id")
            pending.hidden[run.get("run_id", "")] = run.get("kind") == "tool" or pending.hidden.get(parent or "", False)
        elif (
            kind == "chunk" and event.get("channel") == "text" and not pending.hidden.get(run.get("run_id", ""), False)
        ):
            delta = event.get("delta")
            if isinstance(delta, str) and delta and pending.text_size < _MAX_TEXT:
                pending.text.append(delta)
                pending.text_size += len(delta)

    async def _writer(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        assert self._wake is not None
        backoff = 0.02
        while True:
            await self._wake.wait()
            self._wake.clear()
            while any(p.events or p.finish for p in self._runs.values()):
                try:
                    await self._write_once()
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    raise_if_cancelling()
                    if not self._down:
                        self._down = self._outage_logged = True
                        self._outages += 1
                        log.warning(
                            "Redis is unreachable (%s); run events are buffered until it is back", type(exc).__name__
                        )
                    self._made_room()  # producers waiting for room now drop their oldest instead
                    with contextlib.suppress(Exception):  # idle pooled connections are stale too: reconnect them all
                        await self.client.connection_pool.disconnect(inuse_connections=False)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                except Exception:
                    log.exception("Writing run events to Redis failed; they are counted as lost")
                    for pending in self._runs.values():
                        n = len(pending.events)
                        pending.events.clear()
                        pending.lost += n
                        pending.unreported += n
                        self._lost += n
                    await asyncio.sleep(backoff)
                    continue
                if self._outage_logged:
                    self._outage_logged = False
                    log.warning("Redis is reachable again; buffered run events were written")
                backoff = 0.02

    async def _write_once(self) -> None:
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)  # each script is atomic: the snapshot matches its upto
        taken: list[tuple[str, _Pending, list[StoredEvent], list[str], int, bool]] = []
        budget = self.batch
        dumps = _dumps
        appends: list[int] = []  # positions of the append scripts in the pipeline
        for run_id, pending in list(self._runs.items()):
            if budget <= 0:
                break
            if not pending.events and not pending.finish:
                continue
            n = min(len(pending.events), budget)
            events = [pending.events.popleft() for _ in range(n)]
            budget -= n
            text, pending.text, pending.text_size = pending.text, [], 0
            closing = pending.finish and not pending.events
            unreported, pending.unreported = pending.unreported, 0
            taken.append((run_id, pending, events, text, unreported, closing))
            stream, meta, text_key = keys.run(run_id), keys.meta(run_id), keys.text(run_id)
            ttl = max(1, int(self.ttl if closing else self.running_ttl))
            args: list[t.Any] = [self.maxlen, ttl, "".join(text), unreported]
            for ev in events:
                args.append(f"{ev['seq']}-1")
                args.append(dumps(ev))
            if events or text or unreported:
                appends.append(len(pipe))
                pipe.eval(_APPEND, 3, stream, meta, text_key, *args)
            if closing:
                last = events[-1]["seq"] if events else None
                pipe.eval(_FINISH, 2, stream, meta, -1 if last is None else last, pending.status or "")
                for key in (stream, meta, text_key):
                    pipe.expire(key, ttl)
        if not taken:
            return
        try:
            self._writing = True
            results = await pipe.execute(raise_on_error=False)
            self._down = False
        except BaseException:
            for run_id, pending, events, text, unreported, _ in reversed(taken):  # noqa: B007 - the key is unpacked for clarity
                pending.events.extendleft(reversed(events))
                pending.text[:0] = text
                pending.text_size += sum(map(len, text))
                pending.unreported += unreported
                while len(pending.events) > self.max_buffered:  # appended while this write was failing
                    pending.events.popleft()
                    pending.lost += 1
                    pending.unreported += 1
                    self._lost += 1
            raise
        finally:
            self._writing = False
        failed = [r for r in results if isinstance(r, Exception)]
        refused = sum(int(results[i]) for i in appends if isinstance(results[i], int))
        if failed or refused:
            # An entry id not above the log's last one: another writer wrote this run (a retried attempt).
            self._lost += len(failed) + refused
            log.warning(
                "Redis refused %d run-log entries/commands: %s",
                len(failed) + refused,
                failed[0] if failed else "ids not above the log's last",
            )
        self._made_room()
        for run_id, pending, events, _, _, closing in taken:
            self._written += len(events)
            if closing:
                pending.done.set()
                del self._runs[run_id]


def _dumps(event: StoredEvent) -> str:
    return json.dumps(event, separators=(",", ":"))


# Appends a batch of events (one command per batch, not per event), the snapshot text, the counters.
# KEYS: stream, meta, text. ARGV: maxlen, ttl, text, lost, then entry id and JSON for each event.
# Returns the number of entries refused (an id not above the log's last one).
_APPEND = """
local refused, last = 0, nil
for i = 5, #ARGV, 2 do
  local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], 'e', ARGV[i + 1])
  if type(ok) == 'table' and ok.err then refused = refused + 1 else last = ARGV[i] end
end
if last then redis.call('HSET', KEYS[2], 'upto', string.match(last, '^(%d+)')) end
if ARGV[3] ~= '' then redis.call('APPEND', KEYS[3], ARGV[3]) end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[2], 'lost', ARGV[4]) end
for k = 1, 3 do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('EXPIRE', KEYS[k], ARGV[2]) end
end
return refused
"""


# Adds the end marker after the log's last entry (or the last seq written), marks the run done.
# KEYS: stream, meta. ARGV: last seq of this batch (-1: none), status.
_FINISH = """
local upto = tonumber(ARGV[1])
if upto < 0 then
  upto = tonumber(redis.call('HGET', KEYS[2], 'upto') or '-1')
end
local ms, sq = upto + 1, 0
if ms == 0 then sq = 1 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last ~= nil then
  local lms, lsq = string.match(last[1], '(%d+)-(%d+)')
  lms, lsq = tonumber(lms), tonumber(lsq)
  if lms > ms or (lms == ms and lsq >= sq) then ms, sq = lms + 1, 0 end
end
redis.call('XADD', KEYS[1], ms .. '-' .. sq, 'f', '1')
redis.call('HSET', KEYS[2], 'done', '1')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'status', ARGV[2]) end
return 1
"""
