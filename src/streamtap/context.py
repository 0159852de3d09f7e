"""The current run, carried by one :class:`contextvars.ContextVar`.

Nesting follows the context: a module called while another runs becomes its
child, across ``await``, ``asyncio.create_task``/``gather``, sync and async
generators, and threads started through :class:`Executor`, through a standard
:class:`~concurrent.futures.ThreadPoolExecutor` passed once to
:func:`propagate`, or through a function wrapped with :func:`wrap`.
``asyncio.to_thread`` copies the context by itself. A plain
``threading.Thread(target=fn)`` starts with an empty context: use
``threading.Thread(target=wrap(fn))``.

No thread ids and no global "current stream": two concurrent runs never see
each other's events because each carries its own :class:`RunContext`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import itertools
import logging
import threading
import time
import types
import typing as t
from contextvars import ContextVar

from . import bus
from .events import Chunk, Custom, End, ErrorInfo, Run, Start, Status, Timings, Tool, ToolPhase, Usage
from .exceptions import RunCancelled, UsageError

__all__ = ["CancelToken", "Executor", "RunContext", "current", "emit", "propagate", "wrap"]

log = logging.getLogger("streamtap.context")

_current: ContextVar[RunContext | None] = ContextVar("streamtap_run", default=None)

_tuple_new = tuple.__new__
_registry = bus.registry
_chunk_sig = bus.signals["chunk"]
_chunk_receivers = _chunk_sig.receivers
_start_sig = bus.signals["start"]
_tool_sig = bus.signals["tool"]
_custom_sig = bus.signals["custom"]
_end_sig = bus.signals["end"]
_EMPTY: t.Mapping[str, t.Any] = types.MappingProxyType({})

P = t.ParamSpec("P")
R = t.TypeVar("R")


class Sink(t.Protocol):
    """Where a run tree's events go besides the bus: a :class:`~streamtap.streams.RunStream`."""

    def put(self, event: t.Any) -> None:
        """Take one event. Called with the root's lock held; must not raise."""


def current() -> RunContext | None:
    """Return the run that is executing here, or ``None`` outside any module."""
    return _current.get()


def emit(name: str, data: t.Any = None) -> None:
    """Send a :class:`~streamtap.events.Custom` progress event from inside a module.

    Args:
        name: What the event is (``"progress"``, ``"retrieved"``...). Web
            front ends receive it as a ``data-<name>`` part.
        data: Any JSON-able payload.

    Raises:
        UsageError: when called outside a module run (there is no run to attach it to).
    """
    ctx = _current.get()
    if ctx is None:
        msg = (
            f"emit({name!r}) was called outside any module run, so there is no run to attach the event to. "
            "Call it from inside a ModuleBase.forward(), or check streamtap.current() first."
        )
        raise UsageError(msg)
    ctx.emit(name, data)


_TOKEN_LOCK = threading.Lock()  # guards the rare token mutations; tokens themselves stay allocation-free
_LAZY_LOCK = threading.Lock()  # guards the first use of a run's root state or token


class CancelToken:
    """A cancellation flag shared by a run tree (or a part of it).

    ``cancel()`` sets the flag, runs the callbacks registered with
    :meth:`add_callback` (each isolated: one that raises is logged and the
    rest still run) and cancels child tokens. Thread-safe.
    """

    __slots__ = ("_callbacks", "_children", "cancelled", "reason")

    def __init__(self) -> None:
        self.cancelled = False
        self.reason: str | None = None
        self._callbacks: list[t.Callable[[], t.Any]] | None = None
        self._children: list[CancelToken] | None = None

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel; returns ``False`` when it was already cancelled."""
        with _TOKEN_LOCK:
            if self.cancelled:
                return False
            self.cancelled = True
            self.reason = reason
            callbacks, self._callbacks = self._callbacks or [], None
            children = list(self._children or ())
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("A cancel callback of a streamtap run raised; the other callbacks still run")
        for child in children:
            child.cancel(reason)
        return True

    def add_callback(self, fn: t.Callable[[], t.Any]) -> t.Callable[[], None]:
        """Run ``fn`` when the token is cancelled (at once if it already is); returns a remover."""
        with _TOKEN_LOCK:
            if not self.cancelled:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)

                def remove() -> None:
                    with _TOKEN_LOCK:
                        if self._callbacks and fn in self._callbacks:
                            self._callbacks.remove(fn)

                return remove
        fn()
        return lambda: None

    def child(self) -> CancelToken:
        """A token cancelled with this one, that can also be cancelled alone."""
        token = CancelToken()
        with _TOKEN_LOCK:
            if not self.cancelled:
                if self._children is None:
                    self._children = []
                self._children.append(token)
                return token
        token.cancel(self.reason)
        return token

    def discard_child(self, token: CancelToken) -> None:
        """Forget a finished child token."""
        with _TOKEN_LOCK:
            if self._children and token in self._children:
                self._children.remove(token)


class _Root:
    """What every run of one tree shares: the lock that orders delivery and the ``seq`` counter."""

    __slots__ = ("acquire", "counter", "lock", "release")

    def __init__(self) -> None:
        # Re-entrant: a subscriber may call a module, whose events belong to the same root.
        self.lock = threading.RLock()
        self.acquire = self.lock.acquire
        self.release = self.lock.release
        self.counter = itertools.count()


class RunContext:
    """The live state of one run, current inside its module's ``forward()``.

    Get it with :func:`streamtap.current`. Through it a module streams chunks,
    reports tool calls and custom events, records attributes and usage for its
    :class:`~streamtap.events.End`, and checks for cancellation.
    """

    __slots__ = (
        "_root",
        "_t0",
        "_t_first",
        "attributes",
        "module",
        "run",
        "_token",
        "sinks",
        "started_at",
        "usage",
    )

    def __init__(
        self,
        run: Run,
        module: t.Any,
        root: _Root | None,
        sinks: tuple[Sink, ...],
        token: CancelToken | None,
    ) -> None:
        self.run = run
        """The :class:`~streamtap.events.Run` identity."""
        self.module = module
        """The module instance (the sender of every event of this run)."""
        self._root = root
        self.sinks = sinks
        """The run streams that receive this run's events (its own and its ancestors')."""
        # Both made on first use: a plain call that nobody listens to and nobody
        # can cancel never needs a lock, a seq counter or a cancel token.
        self._token = token
        self.attributes: dict[str, t.Any] = {}
        """What :meth:`annotate` recorded."""
        self.usage: Usage | None = None
        self.started_at = 0.0
        self._t0 = 0.0
        self._t_first: float | None = None

    # -- recording -------------------------------------------------------

    def annotate(self, **attributes: t.Any) -> None:
        """Record attributes for the run's ``End`` (e.g. ``response_model=...``, ``finish_reasons=[...]``)."""
        self.attributes.update(attributes)

    def add_usage(self, usage: Usage) -> None:
        """Add token usage; several calls add up."""
        self.usage = usage if self.usage is None else self.usage + usage

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from start to the first chunk so far, or ``None``."""
        return None if self._t_first is None else self._t_first - self._t0

    # -- cancellation ------------------------------------------------------

    @property
    def token(self) -> CancelToken:
        """The :class:`CancelToken` of this run (shared with its tree unless started with its own)."""
        return self._token or self._first_use("_token", CancelToken)

    def _root_state(self) -> _Root:
        return self._root or self._first_use("_root", _Root)

    def _first_use(self, slot: str, make: t.Callable[[], t.Any]) -> t.Any:
        with _LAZY_LOCK:  # two threads of one tree must get the same object
            value = getattr(self, slot)
            if value is None:
                value = make()
                setattr(self, slot, value)
        return value

    @property
    def cancelled(self) -> bool:
        """Whether the run has been asked to stop."""
        tok = self._token
        return tok is not None and tok.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~streamtap.exceptions.RunCancelled` if the run has been asked to stop.

        Long synchronous work (a tool, a loop) should call this now and then;
        chunks check it by themselves.
        """
        tok = self._token
        if tok is not None and tok.cancelled:
            raise RunCancelled(tok.reason or f"run {self.run.run_id} was cancelled")

    def on_cancel(self, fn: t.Callable[[], t.Any]) -> t.Callable[[], None]:
        """Call ``fn`` (from the cancelling thread) when the run is cancelled; returns a remover.

        An LLM module uses it to close its HTTP stream at once, even while
        blocked reading it.
        """
        return self.token.add_callback(fn)

    # -- emission ----------------------------------------------------------

    def chunk_first(self) -> None:
        """Note that the first chunk is being produced now (for time to first chunk)."""
        if self._t_first is None:
            self._t_first = time.perf_counter()

    def chunk(self, delta: t.Any, channel: str = "text", call_id: str | None = None) -> None:
        """Stream one piece of output. Cheap when nobody listens."""
        if self._t_first is None:
            self._t_first = time.perf_counter()
        tok = self._token
        if tok is not None and tok.cancelled:
            self.raise_if_cancelled()
        subs = _registry.chunk
        sinks = self.sinks
        if sinks or subs or _chunk_receivers:
            for sink in sinks:  # back-pressure outside the root lock: a consumer in the tree can still emit
                if len(sink._q) >= sink._limit:
                    sink.reserve()
            # The hot path: acquire()/release() cost half of a with-block here.
            root = self._root or self._root_state()
            root.acquire()
            try:
                ev = _tuple_new(Chunk, (self.run, next(root.counter), delta, channel, call_id))
                for sink in sinks:
                    sink.put(ev)
                for sub in subs:
                    sub.deliver(ev)
                if _chunk_receivers:
                    _chunk_sig.send(self.module, event=ev)
            finally:
                root.release()

    def tool(
        self,
        call_id: str,
        name: str,
        phase: ToolPhase,
        *,
        arguments: t.Any = None,
        result: t.Any = None,
        error: ErrorInfo | BaseException | str | None = None,
    ) -> None:
        """Report a tool call's progress on this run (``requested``, then ``result`` or ``error``)."""
        if phase not in ("requested", "result", "error"):
            msg = f"Tool phase must be 'requested', 'result' or 'error', not {phase!r}."
            raise UsageError(msg)
        if isinstance(error, BaseException):
            error = ErrorInfo.from_exception(error)
        elif isinstance(error, str):
            error = ErrorInfo("ToolError", error)
        subs = _registry.tool
        if self.sinks or subs or _tool_sig.receivers:
            self._reserve()
            root = self._root or self._root_state()
            with root.lock:
                ev = Tool(self.run, next(root.counter), call_id, name, phase, arguments, result, error)
                self._deliver(ev, subs, _tool_sig)

    def emit(self, name: str, data: t.Any = None) -> None:
        """Send a custom progress event (see :func:`streamtap.emit`)."""
        subs = _registry.custom
        if self.sinks or subs or _custom_sig.receivers:
            self._reserve()
            root = self._root or self._root_state()
            with root.lock:
                self._deliver(Custom(self.run, next(root.counter), name, data), subs, _custom_sig)

    def _reserve(self) -> None:
        for sink in self.sinks:
            if len(sink._q) >= sink._limit:
                sink.reserve()

    def _deliver(self, ev: t.Any, subs: tuple[t.Any, ...], sig: t.Any) -> None:
        # Called with the root's lock held, so that delivery order is seq order.
        for sink in self.sinks:
            sink.put(ev)
        for sub in subs:
            sub.deliver(ev)
        if sig.receivers:
            sig.send(self.module, event=ev)

    def _listened(self) -> bool:
        """Whether anything at all can receive this run's events."""
        return bool(self.sinks or _registry.chunk or _chunk_receivers)

    # -- lifecycle (called by ModuleBase only) -------------------------------

    def _start(self, inputs: t.Any) -> None:
        self.started_at = time.time()
        self._t0 = time.perf_counter()
        subs = _registry.start
        if self.sinks or subs or _start_sig.receivers:
            self._reserve()
            root = self._root or self._root_state()
            with root.lock:
                ev = _tuple_new(Start, (self.run, next(root.counter), inputs, self.started_at))
                self._deliver(ev, subs, _start_sig)

    def _end(self, status: Status, output: t.Any = None, error: ErrorInfo | None = None) -> End | None:
        subs = _registry.end
        if not (self.sinks or subs or _end_sig.receivers):
            return None
        now = time.perf_counter()
        timings = _tuple_new(Timings, (self.started_at, now - self._t0, self.time_to_first_chunk))
        attrs = self.attributes
        self._reserve()
        root = self._root or self._root_state()
        with root.lock:
            ev = _tuple_new(
                End, (self.run, next(root.counter), status, output, error, self.usage, timings, attrs or _EMPTY)
            )
            self._deliver(ev, subs, _end_sig)
        return ev

    def __repr__(self) -> str:
        return f"<RunContext {self.run.kind} {self.run.name!r} {self.run.run_id}>"


def wrap(fn: t.Callable[P, R]) -> t.Callable[P, R]:
    """Bind ``fn`` to a copy of the current context, for a thread or callback started by hand."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


class Executor(concurrent.futures.ThreadPoolExecutor):
    """A :class:`~concurrent.futures.ThreadPoolExecutor` whose tasks run in the submitter's context.

    Modules called in its tasks become children of the run that submitted
    them, and their chunks reach that run's streams.
    """

    def submit(self, fn: t.Callable[..., R], /, *args: t.Any, **kwargs: t.Any) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the caller's context."""
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


E = t.TypeVar("E", bound=concurrent.futures.Executor)


def propagate(executor: E) -> E:
    """Make an existing executor run its tasks in the submitter's context; returns it.

    The one call a standard executor needs::

        with propagate(ThreadPoolExecutor(4)) as pool:
            pool.map(tool, cities)   # each call nests under the current run

    ``submit`` and ``map`` of that instance are affected; nothing else is patched.
    """
    if getattr(executor, "_streamtap_propagates", False):
        return executor
    original = executor.submit

    def submit(fn: t.Callable[..., t.Any], /, *args: t.Any, **kwargs: t.Any) -> concurrent.futures.Future[t.Any]:
        return original(contextvars.copy_context().run, fn, *args, **kwargs)

    executor.submit = submit  # type: ignore[method-assign]
    executor._streamtap_propagates = True  # type: ignore[attr-defined]
    return executor
