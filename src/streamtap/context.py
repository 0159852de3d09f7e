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
import logging
import os
import threading
import time
import typing as t
from contextvars import ContextVar

from .bus import Sink
from .dispatch import Emitter, Tree
from .driven import ClaimTimer
from .events import Run, Usage
from .exceptions import RunCancelled, UsageError

__all__ = [
    "CancelToken",
    "Executor",
    "RunContext",
    "current",
    "current_var",
    "default_claims",
    "default_executor",
    "emit",
    "propagate",
    "wrap",
]

log = logging.getLogger("streamtap.context")

current_var: ContextVar[RunContext | None] = ContextVar("streamtap_run", default=None)
"""The one variable that holds the run executing here (``None`` outside any module).

:class:`~streamtap.ModuleBase` sets and resets it around ``forward()``; read it with :func:`current`."""
_current = current_var  # the name the rest of the package has used

P = t.ParamSpec("P")
R = t.TypeVar("R")


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
_LAZY_LOCK = threading.Lock()  # guards the first use of a run's token
_perf_counter = time.perf_counter  # a run's clock starts in every RunContext: one global load, not two


class CancelToken:
    """A cancellation flag shared by a run tree (or a part of it).

    ``cancel()`` sets the flag, runs the callbacks registered with
    :meth:`add_callback` (each isolated: one that raises is logged and the
    rest still run) and cancels child tokens. Thread-safe.

    Args:
        callback: a first callback to run on :meth:`cancel`, as if given to
            :meth:`add_callback` (without a remover).
    """

    __slots__ = ("_callbacks", "_children", "cancelled", "reason")

    def __init__(self, callback: t.Callable[[], t.Any] | None = None) -> None:
        self.cancelled = False
        self.reason: str | None = None
        self._callbacks: list[t.Callable[[], t.Any]] | None = None if callback is None else [callback]
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


class RunContext(Emitter):
    """The live state of one run, current inside its module's ``forward()``.

    Get it with :func:`streamtap.current`. Through it a module streams chunks
    (:meth:`chunk`), reports tool calls (:meth:`tool`) and custom events
    (:meth:`emit`), records attributes and usage for its
    :class:`~streamtap.events.End`, and checks for cancellation. The emission
    methods come from :class:`streamtap.dispatch.Emitter`, where delivery
    lives; this class holds the state.
    """

    __slots__ = (
        "_token",
        "attributes",
        "module",
        "run",
        "sinks",
        "usage",
    )

    def __init__(
        self,
        run: Run,
        module: t.Any,
        tree: Tree | None,
        sinks: tuple[Sink, ...],
        token: CancelToken | None,
    ) -> None:
        self.run = run
        """The :class:`~streamtap.events.Run` identity."""
        self.module = module
        """The module instance (the sender of every event of this run)."""
        self._tree = tree
        self.sinks = sinks
        """The run streams' buffers that receive this run's events (its own and its ancestors')."""
        # Made on first use: a plain call that nobody can cancel never needs a cancel token.
        self._token = token
        self.attributes: dict[str, t.Any] = {}
        """What :meth:`annotate` recorded."""
        self.usage: Usage | None = None
        """Token usage added with :meth:`add_usage`, or ``None``."""
        self._t0 = _perf_counter()
        self._started_at: float | None = None  # read from the wall clock when first asked for (see started_at)
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

    def chunk_first(self) -> None:
        """Note that the first chunk is being produced now (for time to first chunk)."""
        if self._t_first is None:
            self._t_first = time.perf_counter()

    # -- cancellation ------------------------------------------------------

    @property
    def token(self) -> CancelToken:
        """The :class:`CancelToken` of this run (shared with its tree unless started with its own)."""
        tok = self._token
        if tok is None:
            with _LAZY_LOCK:  # two threads of one tree must get the same token
                tok = self._token
                if tok is None:
                    tok = self._token = CancelToken()
        return t.cast(CancelToken, tok)

    @property
    def cancellable(self) -> bool:
        """Whether anyone can cancel this run yet (a token exists); ``False`` for a plain call nobody holds."""
        return self._token is not None

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


@functools.lru_cache(maxsize=1)
def default_executor() -> Executor:
    """The SDK's thread pool (created on first use), whose tasks keep the submitter's context.

    Background runs of synchronous modules (``start``, ``stream``, and
    ``acall`` of a blocking module) run here.
    """
    return Executor(max_workers=max(32, (os.cpu_count() or 1) * 8), thread_name_prefix="streamtap")


@functools.lru_cache(maxsize=1)
def default_claims() -> ClaimTimer:
    """The timer that hands a same-thread stream's run to :func:`default_executor` when nobody reads it."""
    return ClaimTimer(default_executor().submit)


def _after_fork_in_child() -> None:
    # A forked child has none of its parent's threads: the pool and the timer are made again on first use.
    default_executor.cache_clear()
    default_claims.cache_clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
