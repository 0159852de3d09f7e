"""Nodes in the PocketFlow shape: ``prep(shared)`` -> ``exec(prep_res)`` -> ``post(shared, prep_res, exec_res)``.

``post`` returns the action that picks the next node (``None`` = ``"default"``);
the node's run output is what ``exec`` returned. An ``exec`` that is a
generator streams: each item is a chunk of the node's run (a ``str`` on the
``text`` channel, a :class:`~streamtap.Delta` on its channel), and its
result is the generator's return value, else the joined text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
import types
import typing as t
from collections.abc import Sized

from ..context import Executor, current
from ..exceptions import RunCancelled, UsageError
from ..interrupts._frames import answered, carried_entries, node_scope, take_frame
from ..interrupts.records import Interrupt, snapshot
from ..module import Delta
from ._base import BaseNode, _Slot, check_action, take_slot

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BatchNode",
    "Node",
    "ParallelBatchNode",
]

_NOTHING: t.Any = object()


def _finish(node: BaseNode, action: t.Any, slot: _Slot | None) -> None:
    action = check_action(node, action)
    if slot is not None:
        slot.action = action
    ctx = current()
    if ctx is not None and action is not None:
        ctx.annotate(action=action)


class _Acc:
    """Builds a streaming exec's result: its return value, else the joined text, else the last item."""

    __slots__ = ("last", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.last: t.Any = _NOTHING

    def add(self, item: t.Any) -> None:
        if item.__class__ is str:
            self.texts.append(item)
        elif item.__class__ is Delta:
            if item.channel == "text" and isinstance(item.delta, str):
                self.texts.append(item.delta)
        else:
            self.last = item

    def result(self, returned: t.Any) -> t.Any:
        if returned is not None:
            return returned
        if self.texts:
            return "".join(self.texts)
        return None if self.last is _NOTHING else self.last


def _relay(gen: t.Generator[t.Any, None, t.Any]) -> t.Generator[t.Any, None, t.Any]:
    acc = _Acc()
    try:
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                return acc.result(stop.value)
            acc.add(item)
            yield item
    finally:
        gen.close()


def _emit(item: t.Any) -> None:
    ctx = current()
    if ctx is None:
        return
    if item.__class__ is str:
        ctx.chunk(item)
    elif item.__class__ is Delta:
        ctx.chunk(item.delta, item.channel, item.call_id)
    else:
        ctx.chunk(item, "data")


_SYNC_METHODS = ("prep", "exec", "post", "exec_fallback")


class Node(BaseNode):
    """A synchronous flow node (PocketFlow's ``Node``).

    Override ``prep``, ``exec`` and ``post``. ``exec`` may be a generator to
    stream. A failing ``exec`` is retried ``max_retries`` times ``wait``
    seconds apart, then ``exec_fallback`` decides (default: re-raise).

    Example::

        class Summarise(Node):
            def prep(self, shared):
                return shared["text"]
            def exec(self, text):
                yield from llm.stream(text).text()      # streams with this node's identity
            def post(self, shared, prep_res, summary):
                shared["summary"] = summary
                return "done"
    """

    max_retries: int = 1
    wait: float = 0.0

    def __init__(
        self, max_retries: int = 1, wait: float = 0.0, *, name: str | None = None, timeout: float | None = None
    ) -> None:
        if not isinstance(max_retries, int) or max_retries < 1:
            msg = f"max_retries must be a whole number >= 1 (1 = no retry), got {max_retries!r}."
            raise UsageError(msg)
        self.max_retries = max_retries
        self.wait = wait
        if name is not None:
            self.name = name
        if timeout is not None:
            self.timeout = timeout

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        for meth in _SYNC_METHODS:
            fn = cls.__dict__.get(meth)
            if fn is not None and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
                msg = (
                    f"{cls.__qualname__}.{meth} is async, but {cls.__mro__[1].__name__} is synchronous. "
                    f"Subclass AsyncNode and name it {meth}_async."
                )
                raise UsageError(msg)

    def prep(self, shared: t.Any) -> t.Any:
        """Read what ``exec`` needs from the shared store."""
        return None

    def exec(self, prep_res: t.Any) -> t.Any:
        """Do the work (no access to the shared store); may be a generator to stream."""
        return None

    def exec_fallback(self, prep_res: t.Any, exc: Exception) -> t.Any:
        """Called when every retry failed; returns ``exec``'s result instead, or raises (default)."""
        raise exc

    def post(self, shared: t.Any, prep_res: t.Any, exec_res: t.Any) -> str | None:
        """Write results to the shared store; return the next action (``None`` = ``"default"``)."""
        return None

    def forward(self, shared: t.Any) -> t.Any:
        """Run prep, exec (streaming), post; the output is ``exec``'s result."""
        slot = take_slot()  # now, before exec can call other nodes
        with node_scope(self._run_name()):
            p = self.prep(shared)
            r = yield from self._exec_retrying(p)
            action = self.post(shared, p, r)
        _finish(self, action, slot)
        return r

    def _exec_retrying(self, p: t.Any) -> t.Generator[t.Any, None, t.Any]:
        for attempt in range(self.max_retries):
            try:
                res = self.exec(p)
                if res.__class__ is types.GeneratorType:
                    res = yield from _relay(res)
                return res
            except (Interrupt, RunCancelled):  # a pause or a stop is not a failure to retry
                raise
            except Exception as exc:
                if attempt == self.max_retries - 1:
                    return self.exec_fallback(p, exc)
                if self.wait:
                    _sleep(self.wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _sleep(seconds: float) -> None:
    ctx = current()
    if ctx is None:
        time.sleep(seconds)
        return
    ev = threading.Event()
    remove = ctx.on_cancel(ev.set)
    try:
        ev.wait(seconds)
    finally:
        remove()
    ctx.raise_if_cancelled()


class AsyncNode(BaseNode):
    """An asynchronous flow node (PocketFlow's ``AsyncNode``): ``prep_async``, ``exec_async``, ``post_async``.

    ``exec_async`` may be an async generator to stream. Runs in an
    :class:`~streamtap.flows.AsyncFlow`.
    """

    max_retries: int = 1
    wait: float = 0.0

    def __init__(
        self, max_retries: int = 1, wait: float = 0.0, *, name: str | None = None, timeout: float | None = None
    ) -> None:
        Node.__init__(self, max_retries, wait, name=name, timeout=timeout)  # type: ignore[arg-type]

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        for meth in _SYNC_METHODS:
            if meth in cls.__dict__ and f"{meth}_async" not in cls.__dict__:
                msg = f"{cls.__qualname__} is an AsyncNode: define {meth}_async (async def), not {meth}."
                raise UsageError(msg)

    async def prep_async(self, shared: t.Any) -> t.Any:
        """Read what ``exec_async`` needs from the shared store."""
        return None

    async def exec_async(self, prep_res: t.Any) -> t.Any:
        """Do the work; may be an async generator to stream."""
        return None

    async def exec_fallback_async(self, prep_res: t.Any, exc: Exception) -> t.Any:
        """Called when every retry failed; default re-raises."""
        raise exc

    async def post_async(self, shared: t.Any, prep_res: t.Any, exec_res: t.Any) -> str | None:
        """Write results; return the next action."""
        return None

    async def forward(self, shared: t.Any) -> t.Any:
        """Run prep, exec (streaming), post; the output is ``exec_async``'s result."""
        slot = take_slot()  # now, before exec can call other nodes
        with node_scope(self._run_name()):
            p = await self.prep_async(shared)
            r = await self._exec_retrying(p)
            action = await self.post_async(shared, p, r)
        _finish(self, action, slot)
        return r

    async def _exec_retrying(self, p: t.Any) -> t.Any:
        for attempt in range(self.max_retries):
            try:
                res = self.exec_async(p)
                if inspect.isasyncgen(res):
                    acc = _Acc()
                    try:
                        async for item in res:
                            acc.add(item)
                            await _aemit(item)
                    finally:
                        await res.aclose()
                    return acc.result(None)
                return await res
            except (Interrupt, RunCancelled):  # a pause or a stop is not a failure to retry
                raise
            except Exception as exc:
                if attempt == self.max_retries - 1:
                    return await self.exec_fallback_async(p, exc)
                if self.wait:
                    await asyncio.sleep(self.wait)
        raise AssertionError("unreachable")  # pragma: no cover


async def _aemit(item: t.Any) -> None:
    """Emit a chunk from async code, waiting for room in a stream read on this loop (back-pressure)."""
    _emit(item)
    ctx = current()
    if ctx is not None:
        await ctx.wait_for_room()


# -- batches ---------------------------------------------------------------------


class _Progress:
    """A batch's ``progress`` events: ``{"done": n, "total": N}`` on the node's run, throttled.

    One at the start (``done`` 0), then as items finish: every item up to
    100 items, every 1 % beyond (about 100 events whatever the size), and
    the last count at the end. ``total`` is ``None`` while it is unknown
    (``prep`` returned an iterator); then the steps grow tenfold (every item
    up to 10, every 10th up to 100, ...) and the last event gives ``total``
    as the count. The terminal view and the web page draw them as progress bars.
    """

    __slots__ = ("ctx", "done", "next_at", "sent", "total")

    def __init__(self, items: t.Any) -> None:
        self.ctx = current()
        self.total: int | None = len(items) if isinstance(items, Sized) else None
        self.done = 0
        self.sent = -1
        self.next_at = 0
        self._send(self.total)

    def _send(self, total: int | None) -> None:
        if self.ctx is not None:
            self.ctx.emit("progress", {"done": self.done, "total": total})
        self.sent = self.done
        if self.total is not None:
            step = 1 if self.total <= 100 else self.total // 100
        else:
            step = 10 ** (len(str(max(1, self.done))) - 1)
        self.next_at = self.done + step

    def advance(self) -> None:
        """One more item finished (run, or carried over from before a resume)."""
        self.done += 1
        if self.done >= self.next_at:
            self._send(self.total)

    def finish(self) -> None:
        """The batch is over: send the last count if it was not sent yet (``total`` known by now)."""
        if self.sent != self.done or self.total is None:
            self._send(self.done if self.total is None else self.total)


class _Batch:
    """The bookkeeping of one batch run: results, interrupted items, and what a resume brings back."""

    __slots__ = ("done", "entries", "name", "old_pending", "pending", "results")

    def __init__(self, name: str) -> None:
        frame = take_frame("batch")
        self.name = name
        self.done: dict[str, t.Any] = frame["done"] if frame else {}
        self.old_pending: dict[str, t.Any] = frame["pending_branches"] if frame else {}
        self.results: list[t.Any] = []
        self.entries: list[dict[str, t.Any]] = []
        self.pending: dict[str, t.Any] = {}

    def plan(self, i: int) -> tuple[str, t.Any]:
        """``("done", result)``, ``("carry", None)`` (still unanswered) or ``("run", frame or None)``."""
        key = str(i)
        if key in self.done:
            return "done", self.done[key]
        if key in self.old_pending:
            frame = self.old_pending[key]
            if answered(frame):
                return "run", frame
            self.pending[key] = frame
            self.entries.extend(carried_entries(frame))
            return "carry", None
        return "run", None

    def item_name(self, i: int) -> str:
        return f"{self.name}[{i}]"

    def interrupted(self, i: int, exc: Interrupt) -> None:
        self.pending[str(i)] = exc.state
        self.entries.extend(exc.entries)

    def finish(self) -> list[t.Any]:
        if self.pending:
            done = {str(i): r for i, r in enumerate(self.results) if str(i) not in self.pending}
            state = {
                "kind": "batch",
                "done": snapshot(done, f"the results of {self.name}'s finished items"),
                "pending_branches": self.pending,
            }
            raise Interrupt(self.entries, state)
        return self.results


class BatchNode(Node):
    """A node whose ``prep`` returns items and whose ``exec`` runs once per item, in order.

    ``post`` receives the list of results. Items may come from a generator;
    the orchestration is a flat loop (100,000 items run with a flat stack).
    Items that call :func:`~streamtap.interrupts.interrupt` pause together:
    the others finish first, and a resume re-runs only the answered ones.
    """

    def forward(self, shared: t.Any) -> t.Any:
        """Prep -> exec per item (streaming) -> post."""
        slot = take_slot()
        batch = _Batch(self._run_name())
        ctx = current()
        p = self.prep(shared)
        progress = _Progress(p or ())
        for i, item in enumerate(p or ()):
            if ctx is not None and ctx.token.cancelled:
                ctx.raise_if_cancelled()
            what, value = batch.plan(i)
            if what != "run":
                batch.results.append(value)
                progress.advance()
                continue
            try:
                with node_scope(batch.item_name(i), value):
                    r = yield from self._exec_retrying(item)
            except Interrupt as exc:
                batch.interrupted(i, exc)
                r = None
            batch.results.append(r)
            progress.advance()
        progress.finish()
        results = batch.finish()
        action = self.post(shared, p, results)
        _finish(self, action, slot)
        return results


class ParallelBatchNode(Node):
    """A :class:`BatchNode` whose items run concurrently in up to ``max_workers`` threads.

    The threads live only during the node's run. Chunks of an item's
    generator ``exec`` stream on the node's run as they come.
    """

    max_workers: int = 8

    def forward(self, shared: t.Any) -> t.Any:
        """Prep -> exec per item in a bounded thread pool -> post."""
        slot = take_slot()
        batch = _Batch(self._run_name())
        ctx = current()
        p = self.prep(shared)

        failed = threading.Event()

        def work(i: int, item: t.Any, frame: t.Any) -> t.Any:
            if ctx is not None:
                ctx.raise_if_cancelled()
            if failed.is_set():
                return None
            with node_scope(batch.item_name(i), frame):
                gen = self._exec_retrying(item)
                while True:
                    try:
                        _emit(next(gen))
                    except StopIteration as stop:
                        return stop.value

        window: dict[concurrent.futures.Future[t.Any], int] = {}
        progress = _Progress(p or ())
        with Executor(max_workers=self.max_workers, thread_name_prefix="streamtap-batch") as pool:
            try:
                for i, item in enumerate(p or ()):
                    what, value = batch.plan(i)
                    batch.results.append(value)
                    if what != "run":
                        progress.advance()
                        continue
                    window[pool.submit(work, i, item, value)] = i
                    if len(window) >= self.max_workers:
                        self._collect(batch, window, concurrent.futures.FIRST_COMPLETED, progress)
                self._collect(batch, window, concurrent.futures.ALL_COMPLETED, progress)
                progress.finish()
            except BaseException:
                failed.set()
                for fut in window:
                    fut.cancel()
                raise
        results = batch.finish()
        action = self.post(shared, p, results)
        _finish(self, action, slot)
        return results

    @staticmethod
    def _collect(
        batch: _Batch, window: dict[concurrent.futures.Future[t.Any], int], when: str, progress: _Progress
    ) -> None:
        done, _ = concurrent.futures.wait(window, return_when=when)
        for fut in done:
            i = window.pop(fut)
            try:
                batch.results[i] = fut.result()
            except Interrupt as exc:
                batch.interrupted(i, exc)
            progress.advance()


class AsyncBatchNode(AsyncNode):
    """:class:`BatchNode` for async code: ``exec_async`` runs once per item, in order."""

    concurrency: int = 1

    async def forward(self, shared: t.Any) -> t.Any:
        """prep_async -> exec_async per item -> post_async."""
        slot = take_slot()
        batch = _Batch(self._run_name())
        p = await self.prep_async(shared)
        items = enumerate(p or ())
        n = max(1, int(self.concurrency))
        ctx = current()
        progress = _Progress(p or ())

        async def worker() -> None:
            for i, item in items:  # shared iterator: each item is taken by one worker
                what, value = batch.plan(i)
                batch.results.append(None)
                if what != "run":
                    batch.results[i] = value
                    progress.advance()
                    continue
                try:
                    with node_scope(batch.item_name(i), value):
                        batch.results[i] = await self._exec_retrying(item)
                except Interrupt as exc:
                    batch.interrupted(i, exc)
                progress.advance()

        if n == 1:
            await worker()
        else:
            tasks = [asyncio.ensure_future(worker()) for _ in range(n)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        if ctx is not None:
            ctx.raise_if_cancelled()
        progress.finish()
        results = batch.finish()
        action = await self.post_async(shared, p, results)
        _finish(self, action, slot)
        return results


class AsyncParallelBatchNode(AsyncBatchNode):
    """:class:`AsyncBatchNode` with items running concurrently, at most ``concurrency`` at a time (default 16)."""

    concurrency: int = 16
