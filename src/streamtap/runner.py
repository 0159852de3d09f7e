"""How one call of a module runs: the lifecycle around ``forward``, sync and async.

:class:`Runner` is the half of :class:`~streamtap.ModuleBase` that runs a
call: it opens the run (its :class:`~streamtap.RunContext`, the ``Start``
event, the scopes such as an OpenTelemetry span), drives ``forward`` in its
shape (:mod:`streamtap.shapes`), and closes the run with exactly one ``End``
on every path. :class:`~streamtap.ModuleBase` is the user-facing half, and
the views in :mod:`streamtap.views` (``with_options()``, ``buffered()``,
``begin()``) start calls through the ``_run*`` methods below: that is the
package's one internal protocol between a module and the ways to call it.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import contextlib
import contextvars
import inspect
import types
import typing as t

from . import bus
from .buffer import StreamBuffer
from .context import CancelToken, RunContext, default_executor
from .context import current_var as _current
from .dispatch import Tree
from .events import ERROR_DETAIL_PREFIX, ErrorInfo, Run, RunKind, Status
from .exceptions import RunCancelled, UsageError
from .ids import new_id, pool
from .options import RunOptions
from .shapes import (
    GENERATOR,
    PLAIN,
    Shape,
    capture,
    discard,
    emit_item,
    inputs_of,
    is_awaitable_type,
    output_of,
    returns_value,
)

__all__ = ["Call", "Runner", "Running", "status_of"]

_start_receivers = bus.signals["start"].receivers
_chunk_receivers = bus.signals["chunk"].receivers
_end_receivers = bus.signals["end"].receivers
_registry = bus.registry
_tuple_new = tuple.__new__
_scope_signal = bus.scope_signal


def status_of(exc: BaseException) -> Status:
    """The status a run ends with when ``exc`` leaves its ``forward``: ``cancelled``, ``interrupted`` or ``error``."""
    status = getattr(type(exc), "__streamtap_status__", None)
    if status in ("cancelled", "interrupted", "error"):
        return t.cast(Status, status)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)):
        return "cancelled"
    return "error"


class Call(t.NamedTuple):
    """One call of a module: its arguments, and how it was started (stream buffer, cancel token, run id, options)."""

    args: tuple[t.Any, ...]
    kwargs: dict[str, t.Any]
    sink: StreamBuffer | None = None
    token: CancelToken | None = None
    run_id: str | None = None
    options: RunOptions | None = None


class Running:
    """One run's lifecycle around ``forward``: current run, scopes (OTel span), then exactly one End.

    Shared by the sync and async paths; the caller stores the output in ``output``.
    """

    __slots__ = ("ctx", "output", "scopes", "stack", "var")

    def __init__(self, ctx: RunContext, scopes: t.Sequence[t.Callable[[], t.ContextManager[t.Any]]]) -> None:
        self.ctx = ctx
        self.scopes = scopes
        self.output: t.Any = None
        self.stack: t.ContextManager[t.Any] | None = None  # the scope entered, or an ExitStack of several

    def __enter__(self) -> Running:
        self.var = _current.set(self.ctx)
        scopes = self.scopes
        if scopes:
            try:
                if len(scopes) == 1:  # the usual case (one tracer): no ExitStack, a microsecond per run
                    scope = scopes[0]()
                    scope.__enter__()
                    self.stack = scope
                else:
                    stack = self.stack = contextlib.ExitStack()
                    for factory in scopes:
                        stack.enter_context(factory())
            except BaseException as exc:
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        try:
            if self.stack is not None:
                self.stack.__exit__(tp, exc, tb)
        finally:
            _current.reset(self.var)
            if exc is None:
                Runner._close(self.ctx, "ok", self.output, None)
            else:
                Runner._close(self.ctx, status_of(exc), self.output, exc)


class Runner:
    """Runs the calls of a module (mixed into :class:`~streamtap.ModuleBase`, which holds the options)."""

    name: str | None
    kind: RunKind
    tags: tuple[str, ...]
    metadata: t.Mapping[str, t.Any]
    blocking: bool
    join_output: bool
    _forward_shape: int
    _forward_returns: bool | None

    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Do the module's work (see :meth:`streamtap.ModuleBase.forward`)."""
        raise NotImplementedError

    def _run_name(self) -> str:
        return self.name or type(self).__name__

    def _open(
        self,
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
        sink: StreamBuffer | None = None,
        token: CancelToken | None = None,
        run_id: str | None = None,
        options: RunOptions | None = None,
    ) -> tuple[RunContext, t.Sequence[t.Callable[[], t.ContextManager[t.Any]]]]:
        parent = _current.get()
        try:
            rid = run_id or pool.pop()  # new_id(), inlined: this is the per-run hot path
        except IndexError:
            rid = new_id()
        if options is None:
            name = self.name or type(self).__name__
            tags = self.tags
            meta = self.metadata
        else:
            name = options.name or self.name or type(self).__name__
            tags = options.tags
            meta = self.metadata if options.metadata is None else options.metadata
        if parent is None:
            run = _tuple_new(Run, (rid, name, self.kind, None, rid, tags, meta, (name,)))
            sinks: tuple[t.Any, ...] = (sink,) if sink is not None else ()
            # Made now when the Start goes out (no other thread can see this run yet: no lock to take), else
            # on first use: a call nobody listens to never needs one.
            root = Tree() if sinks or _registry.start or _start_receivers else None
            tok = token  # None: made on first use; until then nobody can cancel this call
        else:
            prun = parent.run
            tags = prun.tags + tuple(x for x in tags if x not in prun.tags) if tags else prun.tags
            run = _tuple_new(Run, (rid, name, self.kind, prun.run_id, prun.root_id, tags, meta, (*prun.path, name)))
            root = parent.tree()
            sinks = (*parent.sinks, sink) if sink is not None else parent.sinks
            tok = token or parent.token
        ctx = RunContext(run, self, root, sinks, tok)  # starts the run's clocks
        if sinks or _registry.start or _start_receivers:  # the inputs are only built for someone who will see them
            ctx.send_start(inputs_of(args, kwargs))
        if not _scope_signal.receivers or _scope_signal.is_muted:
            return ctx, ()
        scopes: list[t.Callable[[], t.ContextManager[t.Any]]] = []
        try:
            for receiver in _scope_signal.receivers_for(self):  # what send() does, without its list of pairs
                factory = receiver(self, run=run, context=ctx)
                if factory is not None:
                    scopes.append(factory)
        except BaseException as exc:  # the run has started: it must still end
            self._close(ctx, status_of(exc), None, exc)
            raise
        return ctx, scopes

    @staticmethod
    def _close(ctx: RunContext, status: Status, output: t.Any, exc: BaseException | None) -> None:
        if exc is None:
            ctx.send_end(status, output, None)
            return
        error = ErrorInfo.from_exception(exc) if exc is not None and status == "error" else None
        if exc is not None and status == "cancelled" and not isinstance(exc, GeneratorExit):
            error = ErrorInfo.from_exception(exc)
            if not error.message and ctx.cancelled and ctx.token.reason:
                # A task cancelled through its token raises a bare CancelledError: the End says why, as RunCancelled does.
                error = ErrorInfo.from_exception(RunCancelled(ctx.token.reason))
        if exc is not None and status in ("interrupted", "error"):
            # the pause record of an interrupt; the partial answer of a broken model stream (LLMError.partial)
            output = getattr(exc, "streamtap_output", output)
        detail = getattr(exc, "detail", None) if error is not None else None
        if detail is not None and isinstance(detail, collections.abc.Mapping) and detail:
            # an exception's redacted detail (LLMError.detail): kept for spans and server logs, not for clients
            ctx.annotate(**{f"{ERROR_DETAIL_PREFIX}{key}": value for key, value in detail.items()})
        ctx.send_end(status, output, error)

    def _running(self, call: Call) -> Running:
        ctx, scopes = self._open(*call)
        return Running(ctx, scopes)

    def _call_async_from_sync(self, call: Call) -> t.Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            msg = (
                f"{self._run_name()}.forward is async and an event loop is running in this thread, so it cannot be "
                f"called synchronously. Use 'await module.acall(...)' instead of 'module(...)'."
            )
            raise UsageError(msg)

        async def main() -> t.Any:
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            assert task is not None
            token = call.token
            remove = token.add_callback(lambda: loop.call_soon_threadsafe(task.cancel)) if token else None
            try:
                return await self._run_async(call)
            except asyncio.CancelledError:
                if token is not None and token.cancelled:
                    # Sync callers get the same exception whatever the forward's shape.
                    raise RunCancelled(token.reason or "cancelled") from None
                raise
            finally:
                if remove:
                    remove()

        return asyncio.run(main())

    def _run_sync(self, call: Call) -> t.Any:
        return self._run(*call)

    def _run(
        self,
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
        sink: StreamBuffer | None = None,
        token: CancelToken | None = None,
        run_id: str | None = None,
        options: RunOptions | None = None,
    ) -> t.Any:
        """One synchronous run: the per-run hot path (the lifecycle of :class:`Running`, inlined)."""
        ctx, scopes = self._open(args, kwargs, sink, token, run_id, options)
        if scopes:  # an OpenTelemetry span to make current, say
            with Running(ctx, scopes) as running:
                running.output = self._forward_sync(ctx, args, kwargs)
                return running.output
        var = _current.set(ctx)
        try:
            output = self.forward(*args, **kwargs)
            if output.__class__ is GENERATOR:
                output = self._drive(ctx, output)
            elif output.__class__ not in PLAIN:
                output = self._returned(output)
        except BaseException as exc:
            _current.reset(var)
            Runner._close(ctx, status_of(exc), None, exc)
            raise
        _current.reset(var)
        # send_end() checks this too: skip the call when nobody listens.
        if ctx.sinks or _registry.end or _end_receivers:
            ctx.send_end("ok", output, None)
        return output

    def _steps(
        self, call: Call, outcome: list[concurrent.futures.Future[t.Any]], finish: t.Callable[[], None]
    ) -> t.Generator[None, None, None]:
        """The run of a generator ``forward`` as steps: one yield per batch of items (see :mod:`streamtap.driven`).

        Records the output or the exception in the future that ``outcome`` holds instead of raising
        it (the stream's reader learns of a failure from the ``End`` event, the caller from the
        handle). The future is taken out of ``outcome`` when it is settled: an exception's
        traceback keeps this generator's frame, and a frame that held the future would make a
        reference cycle (future, exception, traceback, frame) that only the cyclic collector frees.
        """
        try:
            with self._running(call) as running:
                ctx = running.ctx
                gen = self.forward(*call.args, **call.kwargs)
                parts: list[t.Any] = []
                box: list[t.Any] = []
                returns = self._forward_returns
                if returns is None:
                    returns = type(self)._forward_returns = returns_value(type(self).forward)
                try:
                    yield from ctx.chunks(
                        capture(gen, box) if returns else gen,
                        parts.append if self.join_output else None,
                        emit_item,
                        stepwise=True,
                    )
                finally:
                    gen.close()
                running.output = output_of(parts, box[0] if box else None)
        except BaseException as exc:
            future = outcome.pop()
            if not future.done():
                future.set_exception(exc)
            del future
            if isinstance(exc, (GeneratorExit, KeyboardInterrupt, SystemExit)):
                raise
        else:
            future = outcome.pop()
            if not future.done():
                future.set_result(running.output)
        finally:
            finish()

    def _forward_sync(self, ctx: RunContext, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
        result = self.forward(*args, **kwargs)
        cls = result.__class__
        if cls is GENERATOR:
            return self._drive(ctx, result)
        if cls in PLAIN:
            return result
        return self._returned(result)

    def _returned(self, result: t.Any) -> t.Any:
        """What a synchronous ``forward`` returned that is neither a generator nor a plain value: refuse an awaitable."""
        if is_awaitable_type(result.__class__):
            if inspect.iscoroutine(result):
                result.close()
            msg = (
                f"{self._run_name()}.forward returned an awaitable from a synchronous call. Declare it "
                "'async def forward' (then module(...) runs it with asyncio.run, or use 'await module.acall(...)')."
            )
            raise UsageError(msg)
        return result

    def _drive(self, ctx: RunContext, gen: t.Generator[t.Any, None, t.Any]) -> t.Any:
        parts: list[t.Any] = []
        join = self.join_output
        append = parts.append if join else discard
        sinks = ctx.sinks
        recv = _chunk_receivers
        try:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            ctx.chunk_first()
            returns = self._forward_returns
            if returns is None:
                returns = type(self)._forward_returns = returns_value(type(self).forward)
            if not (sinks or recv or _registry.chunk_calls or ctx.cancellable):
                # Nobody listens and nobody can cancel this call: let C consume the rest.
                append(item)
                if not returns:
                    if join:
                        parts.extend(gen)
                    else:
                        for _ in gen:
                            pass
                    return output_of(parts, None)
                box: list[t.Any] = []  # the generator's return value, if any
                if join:
                    parts.extend(capture(gen, box))
                else:
                    for _ in capture(gen, box):
                        pass
                return output_of(parts, box[0] if box else None)
            append(item)
            emit_item(ctx, item)
            box = []
            for _ in ctx.chunks(capture(gen, box) if returns else gen, parts.append if join else None, emit_item):
                pass
            return output_of(parts, box[0] if box else None)
        finally:
            gen.close()

    async def _run_async(self, call: Call) -> t.Any:
        shape = self._forward_shape
        if shape in (Shape.SYNC, Shape.GEN) and self.blocking:
            return await self._offload(call)
        args, kwargs = call.args, call.kwargs
        with self._running(call) as running:
            ctx = running.ctx
            if shape == Shape.AGEN:
                running.output = await self._adrive(ctx, self.forward(*args, **kwargs))
            elif shape == Shape.CORO:
                running.output = await self.forward(*args, **kwargs)
            else:
                running.output = self._forward_sync(ctx, args, kwargs)
            return running.output

    async def _offload(self, call: Call) -> t.Any:
        parent = _current.get()
        token = call.token
        # Our own token, so that cancelling this await stops the thread's run without
        # cancelling the rest of the tree; cancelling the tree still reaches it.
        base = token or (parent.token if parent is not None else None)
        own = base.child() if base is not None else CancelToken()
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(default_executor(), ctx.run, self._run_sync, call._replace(token=own))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            own.cancel("the awaiting task was cancelled")
            # The thread stops at its next chunk; wait for its End so that it stays last.
            with contextlib.suppress(BaseException):
                await asyncio.wait({fut})
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "Future exception was never retrieved" log
            raise
        finally:
            if base is not None:
                base.discard_child(own)

    async def _adrive(self, ctx: RunContext, agen: t.AsyncGenerator[t.Any, None]) -> t.Any:
        parts: list[t.Any] = []
        keep = parts.append if self.join_output else None
        chunk = ctx.chunk  # it checks for listeners and cancellation, and starts the first-chunk clock
        try:
            async for item in agen:
                if keep is not None:
                    keep(item)
                if chunk(item) if item.__class__ is str else emit_item(ctx, item):
                    await ctx.wait_for_room()  # a stream read on this loop is full
        finally:
            await agen.aclose()
        return output_of(parts, None)
