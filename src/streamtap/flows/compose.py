"""Sequential and parallel composition of any modules (value in, value out).

``Sequential(a, b, c)(x)`` is ``c(b(a(x)))``; ``Parallel(a, b)(x)`` is
``[a(x), b(x)]`` run concurrently (``Parallel(first=a, second=b)`` gives a
dict). Each step is a child run of the composition's run, so everything
streams with its identity. For nodes over a shared store, wire a graph
(:class:`~streamtap.flows.Flow`) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing as t

from ..context import Executor
from ..exceptions import UsageError
from ..interrupts._frames import answered, carried_entries, handing
from ..interrupts.errors import StalePauseError
from ..interrupts.records import Interrupt, snapshot
from ..module import Configured, ModuleBase
from ..steps import as_step
from ._base import BaseNode, call_async, call_sync
from ._container import Call, Container, check_member
from .transforms import run_segment, run_segment_async, segment_end

__all__ = ["AsyncParallel", "AsyncSequential", "Parallel", "Sequential"]


Step: t.TypeAlias = "ModuleBase | Configured"


def _timeout(step: Step) -> float | None:
    # Only nodes and flows carry a flow timeout (an LLM module's ``timeout`` is its HTTP timeout).
    return step.timeout if isinstance(step, BaseNode) else None


class Sequential(Container):
    """Run modules one after another, each on the previous one's output.

    A step may be a plain function (it becomes a run named after it, see
    :mod:`streamtap.steps`). A *stream transform* step -- a function whose
    first parameter is annotated ``Iterator[...]`` / ``AsyncIterator[...]``,
    or a :class:`~streamtap.parsers.JsonOutputParser` -- gets the previous
    step's live stream instead of its output, so
    ``Sequential(llm, JsonOutputParser(), extract)`` streams end to end
    (see :mod:`streamtap.flows.transforms`).

    Args:
        *steps: the modules or functions (at least one).
        name, store, version, timeout: as for :class:`~streamtap.flows.Flow`.
        tags, metadata: as for every module.
    """

    _frame_kind = "sequence"
    _sync = True

    def __init__(
        self,
        *steps: Step | t.Callable[..., t.Any],
        name: str | None = None,
        store: t.Any = None,
        version: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if not steps:
            msg = f"{type(self).__name__}() needs at least one step."
            raise UsageError(msg)
        owner = name or type(self).__name__
        self.steps: list[Step] = [as_step(s, owner) for s in steps]
        for step in self.steps:
            check_member(self, step, self._sync)
        self._configure(name, store, version, timeout)

    def _structure(self) -> t.Any:
        return [
            [_qualname(s), s._run_name(), s.flow_version() if isinstance(s, Container) else None] for s in self.steps
        ]

    def _start(self, call: Call) -> tuple[int, t.Any, t.Any]:
        frame = call.frame
        if frame is None:
            return 0, call.input, None
        at = frame.get("at")
        if not isinstance(at, int) or not 0 <= at < len(self.steps) or self.steps[at]._run_name() != frame.get("node"):
            msg = f"The pause record resumes {self._run_name()} at step {frame.get('node')!r} (#{at}), which it does not have there."
            raise StalePauseError(msg)
        return at, frame.get("value"), frame.get("child")

    def _paused(self, call: Call, exc: Interrupt, i: int, value: t.Any) -> Interrupt:
        value = snapshot(value, f"The input of {self.steps[i]._run_name()} in {self._run_name()}")
        state = {"kind": "sequence", "at": i, "node": self.steps[i]._run_name(), "value": value, "child": exc.state}
        return call.paused(exc, state, None)

    def forward(self, x: t.Any) -> t.Any:
        """Pipe ``x`` through the steps."""
        call = Call(self, x)
        with call, call.raising_timeouts():
            pipe = _Pipe(self, call)
            call.arm()
            while pipe.at < len(self.steps):
                end = segment_end(self.steps, pipe.at)
                with pipe.step(end) as step:
                    if end == pipe.at + 1:
                        pipe.value = call_sync(step, pipe.value, _timeout(step))
                    else:
                        pipe.value = run_segment(self.steps[pipe.at : end], pipe.value)
            return pipe.value


class AsyncSequential(Sequential):
    """:class:`Sequential` for async code (async and sync steps)."""

    _sync = False

    async def forward(self, x: t.Any) -> t.Any:
        """Pipe ``x`` through the steps."""
        call = Call(self, x)
        with call, call.raising_timeouts():
            pipe = _Pipe(self, call)
            call.arm_async()
            while pipe.at < len(self.steps):
                end = segment_end(self.steps, pipe.at)
                with pipe.step(end) as step:
                    if end == pipe.at + 1:
                        pipe.value = await call_async(step, pipe.value, _timeout(step))
                    else:
                        pipe.value = await run_segment_async(self.steps[pipe.at : end], pipe.value)
            return pipe.value


class _Pipe:
    """Where one run of a :class:`Sequential` is: everything of its ``forward`` but calling the steps."""

    __slots__ = ("_child", "at", "call", "owner", "value")

    def __init__(self, owner: Sequential, call: Call) -> None:
        self.owner = owner
        self.call = call
        self.at, self.value, self._child = owner._start(call)

    @contextlib.contextmanager
    def step(self, end: int | None = None) -> t.Iterator[Step]:
        """Run the current step (up to ``end``: a segment of transforms) in the ``with`` block, then go on."""
        try:
            with handing(self._child):
                yield self.owner.steps[self.at]
        except Interrupt as exc:
            raise self.owner._paused(self.call, exc, self.at, self.value) from None
        self._child = None
        self.at = end if end is not None else self.at + 1


class _Branches:
    """Which branches of a parallel run to run, reuse or carry, and the pause they make together."""

    def __init__(self, owner: Parallel, call: Call) -> None:
        self.owner = owner
        self.call = call
        frame = call.frame
        self.input = frame["input"] if frame else call.input
        self.done: dict[str, t.Any] = dict(frame["done"]) if frame else {}
        self.old: dict[str, t.Any] = frame["pending_branches"] if frame else {}
        self.pending: dict[str, t.Any] = {}
        self.entries: list[dict[str, t.Any]] = []
        self.outputs: dict[str, t.Any] = {}
        self.failure: BaseException | None = None

    def to_run(self) -> list[tuple[str, Step, t.Any]]:
        todo = []
        for key, step in self.owner.branches.items():
            if key in self.done:
                self.outputs[key] = self.done[key]
            elif key in self.old and not answered(self.old[key]):
                self.pending[key] = self.old[key]
                self.entries.extend(carried_entries(self.old[key]))
            else:
                todo.append((key, step, self.old.get(key)))
        return todo

    def result(self, key: str, outcome: BaseException | None, value: t.Any) -> None:
        """Record how a branch ended: its output, its pause, or a failure (the first one is raised by :meth:`finish`)."""
        if outcome is None:
            self.outputs[key] = value
        elif isinstance(outcome, Interrupt):
            self.pending[key] = outcome.state
            self.entries.extend(outcome.entries)
        else:
            self.failure = self.failure or outcome

    def raise_failure(self) -> None:
        """Raise the first failure of a branch, once every branch ended."""
        if self.failure is not None:
            raise self.failure

    def finish(self) -> t.Any:
        owner = self.owner
        if self.pending:
            done = {k: v for k, v in self.outputs.items() if k not in self.pending}
            state = {
                "kind": "parallel",
                "input": snapshot(self.input, f"The input of {owner._run_name()}"),
                "done": snapshot(done, f"The outputs of {owner._run_name()}'s finished branches"),
                "pending_branches": self.pending,
            }
            raise self.call.paused(Interrupt(self.entries, state), state, None)
        if owner.named:
            return {k: self.outputs[k] for k in owner.branches}
        return [self.outputs[k] for k in owner.branches]


class Parallel(Container):
    """Run modules concurrently on the same input; the output is the list (or dict) of their outputs.

    The sync version runs each branch in a thread that lives only during the
    call. Branches that interrupt pause together; a resume re-runs only the
    answered ones and reuses the others' outputs.

    Args:
        *steps: the branches (output: a list), or
        **named: named branches (output: a dict).
        name, store, version, timeout: as for :class:`~streamtap.flows.Flow`.
    """

    _frame_kind = "parallel"
    _sync = True

    def __init__(
        self,
        *steps: Step | t.Callable[..., t.Any],
        name: str | None = None,
        store: t.Any = None,
        version: str | None = None,
        timeout: float | None = None,
        **named: Step | t.Callable[..., t.Any],
    ) -> None:
        if steps and named:
            msg = "Give Parallel branches either positionally (a list out) or by name (a dict out), not both."
            raise UsageError(msg)
        if not steps and not named:
            msg = f"{type(self).__name__}() needs at least one branch."
            raise UsageError(msg)
        self.named = bool(named)
        owner = name or type(self).__name__
        given = dict(named) if named else {str(i): s for i, s in enumerate(steps)}
        self.branches: dict[str, Step] = {k: as_step(s, owner) for k, s in given.items()}
        for step in self.branches.values():
            check_member(self, step, self._sync)
        self._configure(name, store, version, timeout)

    def _structure(self) -> t.Any:
        return [
            [k, _qualname(s), s._run_name(), s.flow_version() if isinstance(s, Container) else None]
            for k, s in self.branches.items()
        ]

    def forward(self, x: t.Any) -> t.Any:
        """Run every branch on ``x`` in threads; wait for all."""
        call = Call(self, x)
        with call, call.raising_timeouts():
            br = _Branches(self, call)
            todo = br.to_run()
            call.arm()
            with Executor(max_workers=max(1, len(todo)), thread_name_prefix="streamtap-parallel") as pool:
                futs = []
                for key, step, frame in todo:
                    with handing(frame):
                        futs.append((key, pool.submit(call_sync, step, br.input, _timeout(step))))
                for key, fut in futs:
                    try:
                        value = fut.result()
                    except BaseException as exc:  # the first failure wins, after every branch ended
                        br.result(key, exc, None)
                    else:
                        br.result(key, None, value)
                br.raise_failure()
            return br.finish()


class AsyncParallel(Parallel):
    """:class:`Parallel` for async code: branches are tasks of the running loop."""

    _sync = False

    async def forward(self, x: t.Any) -> t.Any:
        """Run every branch on ``x`` as tasks; wait for all."""
        call = Call(self, x)
        with call, call.raising_timeouts():
            br = _Branches(self, call)
            todo = br.to_run()
            call.arm_async()
            tasks: list[tuple[str, asyncio.Task[t.Any]]] = []
            try:
                for key, step, frame in todo:
                    with handing(frame):
                        tasks.append((key, asyncio.ensure_future(call_async(step, br.input, _timeout(step)))))
                if tasks:
                    await asyncio.wait([tk for _, tk in tasks])
                for key, task in tasks:
                    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                    br.result(key, exc, None if exc is not None else task.result())
                br.raise_failure()
            except BaseException:
                pending = [tk for _, tk in tasks if not tk.done()]
                for tk in pending:
                    tk.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                raise
            return br.finish()


def _qualname(step: Step) -> str:
    """The class of a step (of the module behind a view), for the flow's version hash."""
    return type(step.module if isinstance(step, Configured) else step).__qualname__
