"""Run streams: iterate one call's whole run tree, from any thread or task.

``module.stream(x)`` / ``module.astream(x)`` start the call in the background
and return a :class:`RunStream` of its events: its own and those of every
module it calls, in any thread or task, in ``seq`` order. ``module.start(x)``
returns a :class:`RunHandle` to read the events, wait for the result, or
cancel.

Buffers are bounded. When the consumer lags, the stream's ``policy`` decides:

``"block"`` (default)
    back-pressure: a producing thread waits; an async producer on the
    consumer's own loop awaits at its next chunk. Nothing is lost.
``"drop_oldest"``
    the oldest buffered event is dropped and counted in :attr:`RunStream.dropped`.
``"error"``
    the stream stops taking events and the consumer gets
    :class:`~streamtap.exceptions.StreamOverflowError` after the buffered ones.

In every policy the run itself goes on, and memory does not grow with the
length of the stream. Leaving a stream before its end (``break``, ``close()``,
leaving its ``with`` block, or dropping it) cancels its run; use
:meth:`RunHandle.result` or ``module.start`` for a run that must finish anyway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import typing as t

from .answer import AnswerText
from .buffer import Policy, StreamBuffer
from .context import CancelToken
from .driven import DrivenRun
from .events import Chunk, Event
from .exceptions import RunCancelled, StreamOverflowError, UsageError

__all__ = ["CancelToken", "Policy", "RunHandle", "RunStream", "StreamBuffer", "StreamOverflowError", "StreamView"]


class _Iterable:
    """Sync and async iteration over a stream, with an optional predicate and mapping."""

    __slots__ = ()

    def _source(self) -> RunStream:
        raise NotImplementedError

    def _accept(self, event: Event) -> bool:
        return True

    def _map(self, event: Event) -> t.Any:
        return event

    def filter(
        self,
        *,
        kinds: t.Iterable[str] | str | None = None,
        channels: t.Iterable[str] | str | None = None,
        names: t.Iterable[str] | str | None = None,
        tags: t.Iterable[str] | str | None = None,
        run_kinds: t.Iterable[str] | str | None = None,
        exclude_names: t.Iterable[str] | str | None = None,
        under: str | tuple[str, ...] | None = None,
    ) -> StreamView:
        """Only the events that match every given criterion.

        Args:
            kinds: event kinds (``start``, ``chunk``, ``tool``, ``custom``, ``end``).
            channels: chunk channels (``text``, ``reasoning``, ``tool_args``...);
                events that are not chunks pass this criterion.
            names: names of the runs the events belong to.
            tags: the run has at least one of these tags (tags are inherited).
            run_kinds: kinds of the runs (``llm``, ``tool``, ``agent``, ``flow``, ``node``, ``module``).
            exclude_names: runs with these names are left out.
            under: the subtree of a run: a name (``under="Plan"``: the runs named
                ``Plan`` and every run inside them, at any depth) or a path from
                the root (``under=("plan_act", "Plan")``: :attr:`Run.path
                <streamtap.events.Run.path>` starts with it).

        Raises:
            UsageError: ``under`` is neither a non-empty string nor a tuple of strings.
        """

        def _set(v: t.Iterable[str] | str | None) -> frozenset[str] | None:
            return None if v is None else frozenset([v] if isinstance(v, str) else v)

        k, c, n, tg, rk, xn = map(_set, (kinds, channels, names, tags, run_kinds, exclude_names))
        if under is not None and not (
            (isinstance(under, str) and under)
            or (isinstance(under, tuple) and under and all(isinstance(x, str) for x in under))
        ):
            msg = f"filter(under={under!r}): give a run name (under='Plan') or a path from the root (under=('flow', 'Plan'))."
            raise UsageError(msg)
        prefix = under if isinstance(under, tuple) else None
        depth = len(prefix) if prefix is not None else 0

        def accept(ev: Event) -> bool:
            run = ev.run
            if under is not None and (run.path[:depth] != prefix if prefix is not None else under not in run.path):
                return False
            return (
                (k is None or ev.kind in k)
                and (c is None or ev.__class__ is not Chunk or ev.channel in c)
                and (n is None or run.name in n)
                and (xn is None or run.name not in xn)
                and (tg is None or not tg.isdisjoint(run.tags))
                and (rk is None or run.kind in rk)
            )

        return StreamView(self, accept, None)

    def text(self) -> StreamView:
        """The answer a user sees, as text pieces: the same rule as the web page (:mod:`streamtap.answer`).

        Text of tools and of the runs inside them is left out, as is a
        stream transform's input; a parent repeating its child's text is
        shown once; turns of different runs are separated by a blank line
        (``"\n\n"``); a root that returns a string without streaming gives
        it as one piece. Every ``text`` chunk of the tree, with nothing left
        out, is ``filter(kinds="chunk", channels="text")``.
        """
        return _AnswerView(self)

    def __iter__(self) -> t.Iterator[t.Any]:
        accept, mapper = self._accept, self._map
        for ev in self._source():
            if accept(ev):
                yield mapper(ev)

    async def _aiter(self) -> t.AsyncIterator[t.Any]:
        accept, mapper = self._accept, self._map
        async for ev in self._source():
            if accept(ev):
                yield mapper(ev)

    def __aiter__(self) -> t.AsyncIterator[t.Any]:
        return self._aiter()


class StreamView(_Iterable):
    """A filtered or mapped view of a :class:`RunStream`; iterate it sync or async.

    Views share their stream: reading one consumes the stream's events.
    """

    __slots__ = ("_accept_fn", "_map_fn", "_parent")

    def __init__(
        self,
        parent: _Iterable,
        accept: t.Callable[[Event], bool],
        mapper: t.Callable[[Event], t.Any] | None,
    ) -> None:
        self._parent = parent
        self._accept_fn = accept
        self._map_fn = mapper

    def _source(self) -> RunStream:
        return self._parent._source()

    def _accept(self, event: Event) -> bool:
        return self._parent._accept(event) and self._accept_fn(event)

    def _map(self, event: Event) -> t.Any:
        value = self._parent._map(event)
        return value if self._map_fn is None else self._map_fn(event)


def _always(ev: Event) -> bool:
    return True


class _AnswerView(StreamView):
    """:meth:`_Iterable.text`: maps events to the answer's pieces with :class:`~streamtap.answer.AnswerText`."""

    __slots__ = ("_pending", "_rule")

    def __init__(self, parent: _Iterable) -> None:
        super().__init__(parent, _always, None)
        self._rule = AnswerText(parent._source().handle.run_id)
        self._pending: str | None = None

    def _accept(self, event: Event) -> bool:
        if not self._parent._accept(event):
            return False
        self._pending = self._rule.answer(event)
        return self._pending is not None

    def _map(self, event: Event) -> t.Any:
        return self._pending

    def __iter__(self) -> t.Iterator[t.Any]:
        # The hot path of .text(): one call per event, straight from the source.
        src = self._source()
        parent = self._parent
        plain = parent is src  # stream.text(): nothing else to accept
        answer = self._rule.answer
        for ev in src:
            if plain or parent._accept(ev):
                out = answer(ev)
                if out is not None:
                    yield out


class RunStream(_Iterable):
    """The events of one call's run tree, in ``seq`` order; iterate it sync or async.

    Returned by ``module.stream(x)`` and ``module.astream(x)``. Iteration ends
    after the call's :class:`~streamtap.events.End`. Read :attr:`handle` for
    the result. Use it as a (async) context manager, or call :meth:`close`, to
    leave early; that cancels the run.
    """

    __slots__ = ("__weakref__", "_buf", "_owns_run", "handle")

    def __init__(self, buffer: StreamBuffer, handle: RunHandle, owns_run: bool = True) -> None:
        self._buf = buffer
        self._owns_run = owns_run
        self.handle = handle
        """The :class:`RunHandle` of the call."""

    def _source(self) -> RunStream:
        return self

    @property
    def dropped(self) -> int:
        """Events dropped under ``policy="drop_oldest"``."""
        return self._buf.dropped

    @property
    def maxsize(self) -> int:
        """How many events the stream buffers at most."""
        return self._buf.maxsize

    def __len__(self) -> int:
        """Events buffered now."""
        return len(self._buf)

    def __next__(self) -> Event:
        ev = self._buf.get()
        if ev is None:
            raise StopIteration
        return ev

    def __iter__(self) -> t.Iterator[Event]:
        return self._buf.events(self)

    def __anext__(self) -> t.Awaitable[Event]:
        return self._buf.anext()

    def __aiter__(self) -> RunStream:
        return self

    def result(self, timeout: float | None = None) -> t.Any:
        """Read the stream to its end (discarding events) and return the call's result."""
        for _ in self:
            pass
        return self.handle.result(timeout)

    async def aresult(self) -> t.Any:
        """Async :meth:`result`."""
        async for _ in self:
            pass
        return await self.handle

    def close(self) -> None:
        """Stop reading. Idempotent.

        For a stream from ``module.stream()`` / ``astream()``, which owns its
        run, an unfinished run is cancelled. A stream from
        :meth:`RunHandle.events` leaves the run to its handle.
        """
        buf = self._buf
        if not buf.closed:
            buf.close()
        # Even when the buffer is closed already (a view of handle.events() was closed first): the run is ours.
        if self._owns_run and not buf.finished:
            reason = "the stream was closed before the run ended"
            self.handle.cancel(reason)
            driven = self.handle._driven
            if driven is not None:
                driven.abandon(reason)

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __enter__(self) -> RunStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._owns_run:
            try:
                self.close()
            except Exception:  # noqa: S110 - never raise from __del__ (interpreter shutdown)
                pass

    def __repr__(self) -> str:
        return f"<RunStream run={self.handle.run_id} buffered={len(self)} dropped={self.dropped}>"


class RunHandle:
    """A call running in the background: its events, its result, and a way to stop it.

    Returned by ``module.start(x)`` / ``module.astart(x)`` and by
    :attr:`RunStream.handle`. Await it (``await handle``) or call
    :meth:`result` for the call's return value; the module's own exception is
    raised unchanged, :class:`~streamtap.exceptions.RunCancelled` if it was
    cancelled.
    """

    __slots__ = ("_buffer", "_driven", "_future", "run_id", "token")

    def __init__(self, run_id: str, token: CancelToken, buffer: StreamBuffer | None = None) -> None:
        self.run_id = run_id
        """The id the call's root run has (known before it starts)."""
        self.token = token
        self._future: concurrent.futures.Future[t.Any] | asyncio.Future[t.Any] | None = None
        # The buffer, not a RunStream: no reference cycle, so a dropped stream is collected at once.
        self._buffer = buffer
        self._driven: DrivenRun | None = None  # set for a same-thread stream (streamtap.driven)

    @property
    def buffer(self) -> StreamBuffer:
        """The buffer of the call's stream.

        Raises:
            UsageError: when the call was started without a stream.
        """
        if self._buffer is None:
            msg = "This run was started without a stream. Use module.start(...) or module.stream(...) to get one."
            raise UsageError(msg)
        return self._buffer

    def events(self) -> RunStream:
        """The stream of the call's events (every call reads the same buffer).

        Leaving this stream does not cancel the run: the handle's owner decides, with :meth:`cancel`.

        Raises:
            UsageError: when the call was started without a stream.
        """
        if self._buffer is None:
            msg = "This run was started without a stream. Use module.start(...) or module.stream(...) to get one."
            raise UsageError(msg)
        return RunStream(self._buffer, self, owns_run=False)

    def cancel(self, reason: str | None = None) -> bool:
        """Ask the run to stop, from any thread or task.

        Async code is cancelled at once (``CancelledError`` inside it);
        synchronous code stops at its next chunk or
        :meth:`~streamtap.RunContext.raise_if_cancelled`, and callbacks
        registered with :meth:`~streamtap.RunContext.on_cancel` run now (an
        LLM module closes its HTTP stream there). Every open run of the tree
        ends with status ``cancelled``. Returns ``False`` if already cancelled.
        """
        return self.token.cancel(reason or "cancelled by RunHandle.cancel()")

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self.token.cancelled

    def done(self) -> bool:
        """Whether the call has finished (in any way)."""
        return self._future is not None and self._future.done()

    def result(self, timeout: float | None = None) -> t.Any:
        """Wait for the call and return its output (sync).

        Raises:
            RunCancelled: the run was cancelled.
            TimeoutError: when ``timeout`` seconds pass first.
            UsageError: when the run is an unfinished asyncio task of the calling thread's own loop (await it instead).
        """
        fut: concurrent.futures.Future[t.Any] | asyncio.Future[t.Any] | None = self._future
        assert fut is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        driven = self._driven
        if driven is not None:
            # A run its reader took: nobody else advances it. Its steps stop at the deadline.
            driven.finish(deadline, self._buffer)
        try:
            if isinstance(fut, asyncio.Future):
                if fut.done():
                    return fut.result()
                fut = self._task_outcome(fut)
            return fut.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise RunCancelled(self.token.reason or "cancelled") from None
        except concurrent.futures.TimeoutError:
            if fut.done():  # the run itself raised a TimeoutError: report it unchanged
                raise
            raise TimeoutError(f"Run {self.run_id} did not finish within {timeout} s.") from None

    def _task_outcome(self, task: asyncio.Future[t.Any]) -> concurrent.futures.Future[t.Any]:
        """A thread-safe future of an unfinished task's outcome, to wait for from a thread other than the task's loop's."""
        loop = task.get_loop()
        buf = self._buffer
        if asyncio._get_running_loop() is loop or (buf is not None and buf._loop_thread == threading.get_ident()):
            msg = "This run is a task on an event loop: use 'await handle' rather than handle.result()."
            raise UsageError(msg)
        outcome: concurrent.futures.Future[t.Any] = concurrent.futures.Future()

        def copy(done: asyncio.Future[t.Any]) -> None:
            if done.cancelled():
                outcome.cancel()
            elif (exc := done.exception()) is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(done.result())

        try:
            loop.call_soon_threadsafe(task.add_done_callback, copy)
        except RuntimeError:  # the loop is closed
            if not task.done():
                msg = "This run is a task of an event loop that is closed: it will never finish."
                raise UsageError(msg) from None
            copy(task)
        return outcome

    async def wait(self) -> t.Any:
        """Await the call and return its output."""
        fut = self._future
        assert fut is not None
        try:
            if isinstance(fut, asyncio.Future):
                return await asyncio.shield(fut)
            return await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            if fut.done() and fut.cancelled() and self.token.cancelled:
                raise RunCancelled(self.token.reason or "cancelled") from None
            raise

    def __await__(self) -> t.Generator[t.Any, None, t.Any]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else ("cancelling" if self.cancelled else "running")
        return f"<RunHandle {self.run_id} {state}>"
