"""The ways to call a module besides calling it: a call site's options, a chosen stream buffer, a run begun by hand.

* :class:`Configured` -- ``module.with_options(name=..., tags=...)``: the same
  module, other run options, for one call site.
* :class:`Buffered` -- ``module.buffered(64, "drop_oldest")``: the stream
  buffer of the next call, and the background entry points (``start``,
  ``stream``, ``astart``, ``astream``).
* :class:`OpenRun` -- ``module.begin(...)``: a run started without
  ``forward()``, for bridges that see another framework's runs as separate
  start and end callbacks.

They start calls through the module's :class:`~streamtap.runner.Runner`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import typing as t

from .buffer import Policy, StreamBuffer
from .context import CancelToken, RunContext, default_claims, default_executor
from .context import current_var as _current
from .driven import DrivenRun
from .events import Run, RunKind, Status
from .exceptions import UsageError
from .ids import new_id
from .options import RunOptions
from .runner import Call, Runner, status_of
from .shapes import Shape
from .streams import RunHandle, RunStream

if t.TYPE_CHECKING:
    from .module import ModuleBase

__all__ = ["Buffered", "Configured", "OpenRun"]

_tuple_new = tuple.__new__


class Configured:
    """A module seen through :meth:`ModuleBase.with_options`: the same module, other run options.

    Call it like the module (``view(x)``, ``await view.acall(x)``,
    ``view.stream(x)``...) and put it wherever a module goes (flows'
    steps and branches). Its runs carry the options; the module itself is
    neither copied nor changed, so other call sites keep their own.
    """

    __slots__ = ("module", "options")

    def __init__(self, module: ModuleBase, options: RunOptions) -> None:
        self.module = module
        """The module being called."""
        self.options = options
        """The options the view's runs get."""

    @property
    def name(self) -> str:
        """The run name of the view's runs."""
        return self.options.name or self.module._run_name()

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags of the view's runs."""
        return self.options.tags

    @property
    def metadata(self) -> t.Mapping[str, t.Any]:
        """The metadata of the view's runs."""
        meta = self.options.metadata
        return self.module.metadata if meta is None else meta

    @property
    def kind(self) -> RunKind:
        """The module's run kind."""
        return self.module.kind

    def _run_name(self) -> str:
        return self.name

    def with_options(
        self,
        *,
        name: str | None = None,
        tags: str | t.Iterable[str] | None = None,
        metadata: t.Mapping[str, t.Any] | None = None,
    ) -> Configured:
        """These options, then the given ones on top (see :meth:`ModuleBase.with_options`)."""
        return Configured(self.module, self.module._merge_options(self.options, name, tags, metadata))

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call the module with these options (see :meth:`ModuleBase.__call__`)."""
        module = self.module
        call = Call(args, kwargs, None, None, None, self.options)
        if module._forward_shape & Shape.ASYNC:
            return module._call_async_from_sync(call)
        return module._run_sync(call)

    async def acall(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """See :meth:`ModuleBase.acall`."""
        return await self.module._run_async(Call(args, kwargs, None, None, None, self.options))

    def buffered(self, maxsize: int = 1024, policy: Policy = "block", *, run_id: str | None = None) -> Buffered:
        """See :meth:`ModuleBase.buffered`."""
        return Buffered(self.module, maxsize, policy, self.options, run_id=run_id)

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.stream`."""
        return self.buffered().stream(*args, **kwargs)

    def astream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.astream`."""
        return self.buffered().astream(*args, **kwargs)

    def start(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.start`."""
        return self.buffered().start(*args, **kwargs)

    def astart(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.astart`."""
        return self.buffered().astart(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self.module).__qualname__} {self.name!r} kind={self.kind} tags={list(self.tags)}>"


class Buffered:
    """A module with a chosen stream buffer; made by :meth:`ModuleBase.buffered`."""

    __slots__ = ("maxsize", "module", "options", "policy", "run_id")

    def __init__(
        self,
        module: ModuleBase,
        maxsize: int,
        policy: Policy,
        options: RunOptions | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        StreamBuffer.validate(maxsize, policy)  # now, with a clear error
        if run_id is not None and not (isinstance(run_id, str) and 0 < len(run_id) <= 128 and run_id.isprintable()):
            msg = f"run_id must be a non-empty printable string of at most 128 characters, got {run_id!r}."
            raise UsageError(msg)
        self.module = module
        self.maxsize = maxsize
        self.policy = policy
        self.options = options
        self.run_id = run_id

    def _prepare(self) -> tuple[StreamBuffer, RunHandle, CancelToken, t.Callable[[], None]]:
        parent = _current.get()
        buf = StreamBuffer(self.maxsize, self.policy)
        if parent is not None:
            token = parent.token.child()
            ptoken = parent.token

            def finish() -> None:
                buf.finish()
                ptoken.discard_child(token)

            token.add_callback(buf.release)
        else:
            token = CancelToken(buf.release)
            finish = buf.finish
        handle = RunHandle(self.run_id or new_id(), token, buf)
        return buf, handle, token, finish

    def start(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.start`."""
        buf, handle, token, finish = self._prepare()
        module = self.module
        target = module._call_async_from_sync if module._forward_shape & Shape.ASYNC else module._run_sync
        run_id = handle.run_id  # the work must not hold the handle, or a dropped stream could never be collected
        options = self.options

        def work() -> t.Any:
            try:
                return target(Call(args, kwargs, buf, token, run_id, options))
            finally:
                finish()

        handle._future = default_executor().submit(work)
        return handle

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.stream`.

        A synchronous generator ``forward`` is driven by the stream's reader
        when it reads first (see :mod:`streamtap.driven`); any other shape runs
        in the SDK's pool.
        """
        module = self.module
        if module._forward_shape != Shape.GEN:
            handle = self.start(*args, **kwargs)
            return RunStream(handle.buffer, handle)
        buf, handle, token, finish = self._prepare()
        future: concurrent.futures.Future[t.Any] = concurrent.futures.Future()
        call = _tuple_new(
            Call, (args, kwargs, buf, token, handle.run_id, self.options)
        )  # Call(...), without its Python __new__
        driven = DrivenRun(module._steps(call, [future], finish), future)
        buf.driver = driven
        handle._future = future
        handle._driven = driven
        default_claims().add(driven)
        return RunStream(buf, handle)

    def astart(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.astart`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = "astart()/astream() need a running event loop; from synchronous code use start()/stream()."
            raise UsageError(msg) from None
        buf, handle, token, finish = self._prepare()
        buf.bind_loop(loop)

        run_id = handle.run_id
        module = self.module
        options = self.options

        async def work() -> t.Any:
            try:
                return await module._run_async(Call(args, kwargs, buf, token, run_id, options))
            finally:
                finish()

        task = loop.create_task(work())
        task.add_done_callback(lambda _: finish())  # also when cancelled before its first step
        thread = threading.get_ident()

        def cancel_task() -> None:
            if threading.get_ident() == thread:
                task.cancel()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to cancel
                    loop.call_soon_threadsafe(task.cancel)

        remove = token.add_callback(cancel_task)
        task.add_done_callback(lambda _: remove())
        handle._future = task
        return handle

    def astream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.astream`."""
        handle = self.astart(*args, **kwargs)
        return RunStream(handle.buffer, handle)


class OpenRun:
    """A run begun with :meth:`ModuleBase.begin`; it ends exactly once, with :meth:`end`.

    Stream through :attr:`context` (``chunk``, ``tool``, ``emit``,
    ``annotate``, ``add_usage``). :meth:`activate` makes it the current run in
    a ``with`` block, so that modules called there nest under it.
    """

    __slots__ = ("context", "ended")

    def __init__(self, context: RunContext) -> None:
        self.context = context
        """The run's :class:`~streamtap.RunContext`."""
        self.ended = False
        """Whether :meth:`end` was called."""

    @property
    def run(self) -> Run:
        """The run's identity."""
        return self.context.run

    @contextlib.contextmanager
    def activate(self) -> t.Iterator[RunContext]:
        """Make this the current run inside the block (:func:`streamtap.current` returns it)."""
        var = _current.set(self.context)
        try:
            yield self.context
        finally:
            _current.reset(var)

    def end(self, output: t.Any = None, *, error: BaseException | None = None, status: Status | None = None) -> bool:
        """Emit the run's ``End``; later calls do nothing. Returns whether this call ended it.

        Args:
            output: the run's output.
            error: the exception it failed with; its status (``error``,
                ``cancelled`` for :class:`~streamtap.RunCancelled`,
                ``interrupted``) is derived as for a module.
            status: force a status (default ``ok``, or derived from ``error``).
        """
        if self.ended:
            return False
        self.ended = True
        Runner._close(self.context, status or (status_of(error) if error is not None else "ok"), output, error)
        return True

    def __repr__(self) -> str:
        return f"<OpenRun {self.run.kind} {self.run.name!r} {self.run.run_id}{' ended' if self.ended else ''}>"
