"""What flows share: resuming from a pause record, pause stores, versions, their own timeout."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import json
import threading
import typing as t

from ..context import RunContext, current
from ..exceptions import RunCancelled, UsageError
from ..interrupts import PauseStore
from ..interrupts._frames import prefixed, resuming, take_frame
from ..interrupts.errors import ResumeError, StalePauseError
from ..interrupts.records import _MISSING, Interrupt, Resume, check_record, make_record, resolve_answers, snapshot
from ..interrupts.signing import sign_record, signing_key, verify_record
from ._base import BaseNode, FlowTimeout

__all__ = ["Container"]

_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("streamtap_inside_flow", default=False)


class Container(BaseNode):
    """Base of every flow (graph, sequential, parallel): a node that runs other modules.

    Attributes:
        kind: ``"flow"``.
        store: a :class:`~streamtap.interrupts.PauseStore`; when set, the
            outermost flow saves every pause record there and a resume claims
            its record (so it cannot be resumed twice).
        version: identifies the flow's shape in pause records (default: a hash
            of its structure). A record made by another version is refused.
    """

    kind = "flow"
    store: PauseStore | None = None
    version: str | None = None
    _frame_kind = ""

    # -- to override ------------------------------------------------------

    def _structure(self) -> t.Any:
        """A JSON description of the flow's shape (hashed into the default version)."""
        raise NotImplementedError

    def _configure(self, name: str | None, store: t.Any, version: str | None, timeout: float | None) -> None:
        """Set the constructor options every container takes (``None`` keeps the class default)."""
        if name is not None:
            self.name = name
        if store is not None:
            self.store = store
        if version is not None:
            self.version = version
        if timeout is not None:
            self.timeout = timeout

    # -- public -----------------------------------------------------------

    def flow_version(self) -> str:
        """The version written into pause records: ``version`` or a hash of the structure."""
        if self.version:
            return self.version
        text = json.dumps([type(self).__qualname__, self._run_name(), self._structure()], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resume(
        self, record: dict[str, t.Any] | str, answer: t.Any = _MISSING, *, answers: t.Mapping[str, t.Any] | None = None
    ) -> t.Any:
        """Continue a paused run with the human's answer; returns the flow's output.

        Args:
            record: the pause record (``End.output`` / ``Interrupt.record``), or its id when the flow has a store.
            answer: the answer, when exactly one interrupt is pending.
            answers: ``{interrupt_id: answer}`` for any of several pending interrupts.

        Raises:
            ResumeError: (and its subclasses) the record is not a pause record, an id is
                unknown, the record is stale, its signature does not check out
                (:class:`~streamtap.interrupts.TamperedRecordError`), or an answer fails its schema. Nothing changes.
            Interrupt: the flow paused again (a new record).
        """
        return self(Resume(record, answer, answers=answers))

    async def aresume(
        self, record: dict[str, t.Any] | str, answer: t.Any = _MISSING, *, answers: t.Mapping[str, t.Any] | None = None
    ) -> t.Any:
        """Async :meth:`resume`."""
        return await self.acall(Resume(record, answer, answers=answers))

    def run(self, shared: t.Any) -> t.Any:
        """PocketFlow's spelling of ``flow(shared)``."""
        return self(shared)

    def _identity(self) -> dict[str, t.Any]:
        return {"name": self._run_name(), "class": type(self).__qualname__, "version": self.flow_version()}


class Call:
    """One run of a container: resolves a :class:`Resume`, saves records, arms the flow's own timeout."""

    __slots__ = (
        "_resuming",
        "_timer",
        "_tokens",
        "answers",
        "ctx",
        "fired",
        "flow",
        "frame",
        "input",
        "outermost",
        "reason",
        "record",
        "thread",
    )

    def __init__(self, flow: Container, arg: t.Any) -> None:
        self.flow = flow
        ctx = current()
        assert ctx is not None
        self.ctx: RunContext = ctx
        self.outermost = not _inside.get()
        self.record: dict[str, t.Any] | None = None
        self.thread: str | None = None
        self._resuming: resuming | None = None
        self._tokens: list[t.Any] = []
        self._timer: t.Any = None
        self.fired = False
        self.reason = ""
        if isinstance(arg, Resume):
            self._open_resume(arg)
        else:
            self.input = arg
            self.frame = take_frame(flow._frame_kind)

    def _open_resume(self, arg: Resume) -> None:
        flow = self.flow
        record: t.Any = arg.record
        if isinstance(record, str):
            if flow.store is None:
                msg = f"Resuming {flow._run_name()} from the pause id {record!r} needs the flow's store (Flow(..., store=...)); or pass the record itself."
                raise ResumeError(msg)
            record = flow.store.load(record)
        record = check_record(record)
        ident = record.get("flow") or {}
        if ident.get("name") != flow._run_name():
            msg = f"Pause {record['id']} belongs to flow {ident.get('name')!r}, not {flow._run_name()!r}; resume it with that flow."
            raise StalePauseError(msg)
        if ident.get("version") != flow.flow_version():
            msg = (
                f"Pause {record['id']} was made by version {ident.get('version')} of flow {flow._run_name()!r}, "
                f"but this flow is version {flow.flow_version()}: its nodes or wiring changed, so the record is stale. "
                "Resume it with the flow that made it, or set the same Flow(version=...) if the change is compatible."
            )
            raise StalePauseError(msg)
        verify_record(record, signing_key(flow.store))  # before anything reads shared, state or answers
        if record["state"].get("kind") != flow._frame_kind:
            msg = f"Pause {record['id']} does not hold a {flow._frame_kind!r} state for {flow._run_name()!r}."
            raise StalePauseError(msg)
        answers = resolve_answers(record, arg.answers)
        self.thread = record.get("thread") or record.get("run_id")
        self.input = json.loads(json.dumps(record["shared"]))
        self.frame = record["state"]
        self._resuming = resuming(record, answers)
        if flow.store is not None:
            flow.store.claim(record["id"])  # last: only one resume of a record gets past here
        self.record = record
        arg.shared = self.input

    def __enter__(self) -> Call:
        self._tokens.append(_inside.set(True))
        if self._resuming is not None:
            self._resuming.__enter__()
        return self

    def __exit__(self, exc_type: t.Any, exc: BaseException | None, tb: t.Any) -> None:  # noqa: PYI036 - the arguments are passed on untouched
        self.disarm()
        if self._resuming is not None:
            self._resuming.__exit__(exc_type, exc, tb)
        for tok in reversed(self._tokens):
            _inside.reset(tok)
        store = self.flow.store
        if self.record is not None and store is not None:
            if exc is None or isinstance(exc, Interrupt):
                store.done(self.record["id"])
            else:
                store.release(self.record["id"])

    def paused(self, exc: Interrupt, state: dict[str, t.Any], shared: t.Any) -> Interrupt:
        """The Interrupt this container raises: its name in the paths, its state, a full record."""
        flow = self.flow
        entries = prefixed(exc.entries, flow._run_name())
        snap = None if shared is None else snapshot(shared, f"The shared store of {flow._run_name()}")
        record = make_record(entries, state, flow._identity(), snap, self.ctx.run.run_id)
        record["thread"] = self.thread or self.ctx.run.run_id
        sign_record(record, signing_key(flow.store))
        if self.outermost and flow.store is not None:
            flow.store.save(record)
        return Interrupt(entries, state, record)

    # -- the flow's own timeout (a root run only; an enclosing flow enforces it otherwise) ------

    def arm(self) -> None:
        """Start the root flow's timer (sync flows)."""
        timeout = self.flow.timeout
        if timeout is None or self.ctx.run.parent_id is not None:
            return
        self.reason = f"{self.flow._run_name()} timed out after {timeout} s"
        timer = threading.Timer(timeout, self._fire)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def arm_async(self) -> None:
        """Start the root flow's timer (async flows)."""
        timeout = self.flow.timeout
        if timeout is None or self.ctx.run.parent_id is not None:
            return
        self.reason = f"{self.flow._run_name()} timed out after {timeout} s"
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._fire()
            if task is not None:
                task.cancel(self.reason)

        self._timer = loop.call_later(timeout, fire)

    def _fire(self) -> None:
        self.fired = True
        self.ctx.token.cancel(self.reason)

    def disarm(self) -> None:
        """Stop the timer (and join its thread)."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        timer.cancel()
        if isinstance(timer, threading.Timer) and timer is not threading.current_thread():
            timer.join()

    def raising_timeouts(self) -> _RaisingTimeouts:
        """A ``with`` block that raises :class:`FlowTimeout` instead of the cancellation the flow's own timer caused."""
        return _RaisingTimeouts(self)

    def timed_out(self, exc: BaseException) -> FlowTimeout | None:
        """The FlowTimeout to raise instead of ``exc`` when the flow's own timer cancelled it."""
        if not self.fired or not isinstance(exc, (RunCancelled, asyncio.CancelledError)):
            return None
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
        return FlowTimeout(f"{self.reason}; every open run of it was cancelled.")


class _RaisingTimeouts:
    """See :meth:`Call.raising_timeouts`."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            timeout = self._call.timed_out(exc)
            if timeout is not None:
                raise timeout from None


def check_member(owner: Container, node: t.Any, sync: bool) -> None:
    """Refuse members a container cannot run (with what to do instead)."""
    from ..module import Configured, ModuleBase

    if isinstance(node, Configured):
        node = node.module
    if not isinstance(node, ModuleBase):
        msg = f"{owner._run_name()} got {node!r}; flows run modules (ModuleBase instances: nodes, flows, LLMs, tools) or plain functions."
        raise UsageError(msg)
    fwd = type(node).forward
    if sync and isinstance(node, BaseNode) and (inspect.iscoroutinefunction(fwd) or inspect.isasyncgenfunction(fwd)):
        msg = (
            f"{owner._run_name()} is synchronous but {node._run_name()} is async; "
            f"use the async variant of {type(owner).__name__} (Async{type(owner).__name__}) to run it."
        )
        raise UsageError(msg)
