"""Worker processes: take run requests from the Redis stream, run them, write their events to the run's log.

Requests are read with a consumer group (``XREADGROUP``, group ``workers``)
and acknowledged (``XACK``) when the run ended. While a run goes on, its
worker keeps the claim fresh (``XCLAIM ... JUSTID`` every ``claim_timeout /
3`` seconds), so a long run is never taken from a healthy worker; a request
whose worker died (no heartbeat for ``claim_timeout`` seconds) is taken over
by another worker (``XAUTOCLAIM``) and run again as a new attempt: the log
shows a ``streamtap.attempt`` event, then the new attempt's events (their
``seq`` continue the log's). That is at-least-once: a tool with side effects
may run twice when a worker dies mid-run.

A request that cannot be parsed, whose module cannot be built, or that failed
``max_attempts`` times goes to the dead-letter stream (``{prefix}:dead``,
fields ``reason`` and ``request``) and is acknowledged; its chat gets an error.

Stop: a key ``{prefix}:stop:{run_id}`` (checked before a run starts, so an
early stop wins) and a message on the ``{prefix}:stop`` channel (cancels a
running run at once: its model stream closes, every run of the tree ends
``cancelled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import typing as t

from streamtap import ModuleBase, propagation
from streamtap.events import End, ErrorInfo, Run, Start
from streamtap.web.service import STOP_REQUEST

from .keys import Keys
from .requests import BadRunRequest, RunRequest, parse_request
from .state import ChatState, as_text
from .store import RedisEventStore
from .tasks import cancel_and_wait, raise_if_cancelling, settle

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

    from streamtap.streams import RunHandle

__all__ = ["ATTEMPT", "GROUP", "Worker"]

log = logging.getLogger("streamtap_redis.worker")

GROUP = "workers"
"""The consumer group of the requests stream."""
ATTEMPT = "streamtap.attempt"
"""The custom event that starts a retried attempt of a request in its run's log."""

Target = ModuleBase | t.Callable[[], ModuleBase]
_DRAIN = 5.0  # seconds a cancelled serving task waits for its run's End


class Worker:
    """Runs requests from ``{prefix}:requests``.

    Args:
        target: a module (shared by every request) or a zero-argument factory (a module per request).
        client: a ``redis.asyncio.Redis`` client.
        keys: key names (prefix).
        concurrency: runs going at once at most.
        claim_timeout: seconds without heartbeat after which another worker takes a request over (at most 30 by default).
        heartbeat: seconds between claim refreshes (default ``claim_timeout / 3``).
        max_attempts: deliveries of one request before it goes to the dead-letter stream.
        consumer: this worker's consumer name (default ``host-pid-random``).
        stream_buffer: events buffered between a run and the log writer.
        grace: seconds :meth:`aclose` waits for runs going before it cancels them.
    """

    def __init__(
        self,
        target: Target,
        client: aioredis.Redis,
        keys: Keys | None = None,
        *,
        concurrency: int = 8,
        claim_timeout: float = 30.0,
        heartbeat: float | None = None,
        max_attempts: int = 3,
        consumer: str | None = None,
        stream_buffer: int = 1024,
        grace: float = 10.0,
        store: RedisEventStore | None = None,
    ) -> None:
        if not isinstance(target, ModuleBase) and not callable(target):
            msg = f"A worker needs a ModuleBase or a zero-argument function returning one, got {target!r}."
            raise TypeError(msg)
        if not isinstance(concurrency, int) or concurrency < 1:
            msg = f"concurrency must be a whole number of at least 1, got {concurrency!r}."
            raise ValueError(msg)
        if not claim_timeout > 0:
            msg = f"claim_timeout must be a positive number of seconds, got {claim_timeout!r}."
            raise ValueError(msg)
        self.target = target
        self.client = client
        self.keys = keys or Keys()
        self.store = store if store is not None else RedisEventStore(client, self.keys)
        self.state = ChatState(client, self.keys)
        self.concurrency = concurrency
        self.claim_timeout = float(claim_timeout)
        self.heartbeat = float(heartbeat) if heartbeat is not None else self.claim_timeout / 3
        self.max_attempts = max_attempts
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stream_buffer = stream_buffer
        self.grace = grace
        self.running: dict[str, RunHandle] = {}
        self._serving: set[bytes] = set()  # entry ids of the requests this worker runs now
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self.completed = 0
        """Requests this worker finished (acknowledged)."""

    # -- the loop -------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the requests stream and its consumer group when missing."""
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(self.keys.requests, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Take and run requests until :meth:`aclose` (or cancellation)."""
        await self.ensure_group()
        listener = asyncio.ensure_future(self._listen_for_stops())
        reclaimer = asyncio.ensure_future(self._reclaim_loop())
        try:
            while not self._closing.is_set():
                await self._slots.acquire()
                if self._closing.is_set():
                    self._slots.release()
                    break
                got: t.Any
                try:
                    got = await self.client.xreadgroup(
                        GROUP, self.consumer, {self.keys.requests: ">"}, count=1, block=500
                    )
                except asyncio.CancelledError:
                    self._slots.release()
                    raise
                except Exception:
                    self._slots.release()
                    raise_if_cancelling()
                    log.warning("Reading run requests failed; retrying", exc_info=True)
                    await asyncio.sleep(0.5)
                    continue
                entries = [entry for _, batch in got or [] for entry in batch]
                if not entries or self._closing.is_set():
                    # Closing: a request read just now stays pending; another worker reclaims it after claim_timeout.
                    self._slots.release()
                    continue
                for entry_id, fields in entries:
                    self._spawn(self._serve(entry_id, fields, 1))
        finally:
            listener.cancel()
            reclaimer.cancel()
            for task in (listener, reclaimer):
                await cancel_and_wait(task)

    def _spawn(self, coro: t.Coroutine[t.Any, t.Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Take no new requests; wait ``grace`` seconds for runs going, then cancel them; flush the log."""
        self._closing.set()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=self.grace)
            if late:
                for handle in list(self.running.values()):
                    handle.cancel("the worker is shutting down")
                await asyncio.wait(late, timeout=5)
        await self.store.log.flush(5)

    # -- one request ------------------------------------------------------------------

    async def _serve(self, entry_id: bytes, fields: t.Mapping[bytes, bytes], attempt: int) -> None:
        self._serving.add(entry_id)
        try:
            await self._run_request(entry_id, fields, attempt)
        except Exception:
            log.exception("Request %s failed in the worker", entry_id)
        finally:
            self._serving.discard(entry_id)
            self._slots.release()

    async def _run_request(self, entry_id: bytes, fields: t.Mapping[bytes, bytes], attempt: int) -> None:
        raw = fields.get(b"r", b"")
        try:
            request = parse_request(raw)
        except BadRunRequest as exc:
            await self._dead(entry_id, raw, exc.reason, exc.run_id, exc.chat_id)
            return
        if attempt > self.max_attempts:
            reason = (
                f"the request was tried {attempt - 1} times (max_attempts={self.max_attempts}); its workers kept dying"
            )
            await self._dead(entry_id, raw, reason, request.run_id, request.chat_id)
            return
        try:
            module = self._module()
        except Exception as exc:
            reason = f"the worker's target could not build a module ({type(exc).__name__}: {exc})"
            await self._dead(entry_id, raw, reason, request.run_id, request.chat_id)
            return
        base = 0
        if attempt > 1:
            upto = await self.client.hget(self.keys.meta(request.run_id), "upto")
            base = int(upto) + 1 if upto is not None else 0
            await self.store.append(request.run_id, _attempt_event(request.run_id, base, attempt))
            base += 1
        beat = asyncio.ensure_future(self._heartbeat(entry_id, request.run_id))
        try:
            await self._execute(module, request, base)
        finally:
            # Not ``suppress(CancelledError)``: when this task is cancelled meanwhile, that must propagate (and the
            # request stays pending, to be reclaimed) rather than be taken for the heartbeat's and acknowledged.
            await cancel_and_wait(beat)
        await self.client.xack(self.keys.requests, GROUP, entry_id)
        self.completed += 1

    def _module(self) -> ModuleBase:
        if isinstance(self.target, ModuleBase):
            return self.target
        module = self.target()
        if not isinstance(module, ModuleBase):
            msg = f"the factory returned {module!r}, not a ModuleBase"
            raise TypeError(msg)
        return module

    async def _execute(self, module: ModuleBase, request: RunRequest, base: int) -> None:
        rid = request.run_id
        runner = module.buffered(self.stream_buffer, "block", run_id=rid)
        with propagation.continue_trace(request.trace):
            if request.resume is not None:
                from streamtap.interrupts import Resume

                answer = request.resume["answer"]
                if isinstance(answer, dict) and set(answer) == {"answers"} and isinstance(answer["answers"], dict):
                    handle = runner.astart(Resume(request.resume["record"], answers=answer["answers"]))
                else:
                    handle = runner.astart(Resume(request.resume["record"], answer))
            else:
                handle = runner.astart(request.input)
        self.running[rid] = handle
        written: dict[str, str | None] = {"status": None}
        drain: float | None = None  # wait for the run's end as long as it takes, unless this task was cancelled
        try:
            if await self.client.exists(self.keys.stop(rid)):  # a stop that came before the worker did
                handle.cancel(STOP_REQUEST)
            await self._write(handle, request, base, written)
        except asyncio.CancelledError:
            # The task serving this run was cancelled (a loop shutting down): stop the run too, and give its
            # cancelled End a moment to reach the log, rather than wait for the run to finish by itself.
            handle.cancel("the worker task serving this run was cancelled")
            drain = _DRAIN
            await settle(self._write(handle, request, base, written), timeout=drain)
            raise
        finally:
            self.running.pop(rid, None)
            await settle(handle, timeout=drain)
            await self.store.finish(rid, status=written["status"])
            if request.chat_id is not None:
                await self.state.release(request.chat_id, rid)

    async def _write(self, handle: RunHandle, request: RunRequest, base: int, written: dict[str, str | None]) -> None:
        """Append the run's events to its log (its ``seq`` shifted by ``base``); the root's status into ``written``."""
        rid = request.run_id
        async for ev in handle.events():
            data = ev.to_dict()
            if base:
                data["seq"] += base
            if isinstance(ev, End) and ev.run.run_id == rid:
                written["status"] = ev.status
                if request.chat_id is not None:  # the chat's state settled before any reader can see the End
                    await self._chat_outcome(request, ev)
                    await self.state.release(request.chat_id, rid)
            await self.store.append(rid, data)

    async def _chat_outcome(self, request: RunRequest, end: End) -> None:
        assert request.chat_id is not None
        if end.status == "interrupted":
            out = end.output
            await self.state.set_pending(request.chat_id, out if isinstance(out, dict) else {"value": out})
        elif end.status == "error" and request.resume is not None and end.error and ".interrupts." in end.error.type:
            await self.state.set_pending(request.chat_id, request.resume["record"])  # the answer was refused

    async def _heartbeat(self, entry_id: bytes, run_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                info = await self.client.xpending_range(self.keys.requests, GROUP, entry_id, entry_id, 1)
                owner: t.Any = info[0]["consumer"] if info else None
                if owner is not None and as_text(owner) != self.consumer:
                    # This worker stalled past the claim timeout and another took the request over: give way.
                    log.warning("Run %s was taken over by worker %s; cancelling it here", run_id, as_text(owner))
                    handle = self.running.get(run_id)
                    if handle is not None:
                        handle.cancel("another worker took this request over")
                    return
                await self.client.xclaim(self.keys.requests, GROUP, self.consumer, 0, [entry_id], justid=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.debug("Refreshing the claim of %s failed; retrying", run_id, exc_info=True)

    async def _dead(self, entry_id: bytes, raw: bytes, reason: str, run_id: str | None, chat_id: str | None) -> None:
        log.error("Run request %s goes to the dead-letter stream: %s", entry_id.decode(), reason)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.keys.dead,
            {"reason": reason, "request": raw[:100_000], "entry": entry_id, "at": str(time.time())},
            maxlen=10_000,
            approximate=True,
        )
        pipe.xack(self.keys.requests, GROUP, entry_id)
        await pipe.execute()
        if run_id is not None:
            upto = await self.client.hget(self.keys.meta(run_id), "upto")
            base = int(upto) + 1 if upto is not None else 0
            run = Run(run_id, "request", "module", None, run_id)
            error = ErrorInfo("streamtap_redis.RequestRejected", f"The worker could not run this request: {reason}.")
            await self.store.append(run_id, Start(run, base, None, time.time()).to_dict())
            await self.store.append(run_id, End(run, base + 1, "error", None, error, None, None, {}).to_dict())
            await self.store.finish(run_id, status="error")
            if chat_id is not None:
                await self.state.release(chat_id, run_id)

    # -- reclaiming and stopping -------------------------------------------------------

    async def _reclaim_loop(self) -> None:
        interval = max(0.05, min(self.claim_timeout / 2, 5.0))
        while not self._closing.is_set():
            await asyncio.sleep(interval)
            try:
                await self.reclaim()
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.warning("Reclaiming requests failed; retrying", exc_info=True)

    async def reclaim(self) -> int:
        """Take over requests idle for ``claim_timeout`` seconds (their worker died); returns how many."""
        taken = 0
        while not self._closing.is_set() and not self._slots.locked():
            # JUSTID: claiming does not count a delivery. Our own request (idle because our heartbeat
            # fell behind on a busy machine) is then only refreshed; a dead worker's is claimed again
            # below, counted, since the delivery count is the attempt number and what max_attempts checks.
            ids = await self.client.xautoclaim(
                self.keys.requests, GROUP, self.consumer, int(self.claim_timeout * 1000), "0-0", count=1, justid=True
            )
            if not ids:
                return taken
            for entry_id in ids:
                if entry_id in self._serving:
                    continue  # ours: running it again would duplicate it
                claimed = t.cast(
                    "list[tuple[bytes, dict[bytes, bytes] | None]]",
                    await self.client.xclaim(self.keys.requests, GROUP, self.consumer, 0, [entry_id]),
                )  # redis-py types every reply shape at once; without JUSTID it is (id, fields) pairs
                fields = next((f for e, f in claimed if e == entry_id and f is not None), None)
                if fields is None:
                    await self.client.xack(self.keys.requests, GROUP, entry_id)  # the entry was trimmed away
                    continue
                info = await self.client.xpending_range(self.keys.requests, GROUP, entry_id, entry_id, 1)
                deliveries = int(info[0]["times_delivered"]) if info else 2
                log.warning(
                    "Taking over run request %s (attempt %d): its worker stopped responding",
                    entry_id.decode(),
                    deliveries,
                )
                await self._slots.acquire()
                self._spawn(self._serve(entry_id, fields, deliveries))
                taken += 1
        return taken

    async def _listen_for_stops(self) -> None:
        while not self._closing.is_set():
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.keys.stop_channel)
                # A stop published while not subscribed: the key says so.
                for rid, handle in list(self.running.items()):
                    if await self.client.exists(self.keys.stop(rid)):
                        handle.cancel(STOP_REQUEST)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    rid = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
                    found = self.running.get(rid)
                    if found is not None:
                        found.cancel(STOP_REQUEST)
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.warning("The stop channel was lost; resubscribing", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py types PubSub.aclose from 8.2 on, not before: the cast holds for both
                    await t.cast("t.Callable[[], t.Awaitable[None]]", pubsub.aclose)()


def _attempt_event(run_id: str, seq: int, attempt: int) -> dict[str, t.Any]:
    run = Run(run_id, "", "module", None, run_id).to_dict()  # the run the log belongs to, as on the wire
    data = {"attempt": attempt, "reason": "the worker running this request stopped responding; it is run again"}
    return {"kind": "custom", "seq": seq, "run": run, "name": ATTEMPT, "data": data}
