"""Dispatch: how one run's events reach its sinks and the bus's subscribers, in ``seq`` order.

This is the one place events are built and delivered. The data runs one way:
a module's :class:`~streamtap.RunContext` (run state, :mod:`streamtap.context`)
calls the emission methods of :class:`Emitter`, which number the event with
its tree's :class:`Tree` counter and hand it to

1. the run's *sinks* (the buffers of the run streams reading this tree,
   through the small :class:`~streamtap.bus.Sink` interface), then
2. the subscriptions that take every sender (:data:`streamtap.bus.registry`,
   called directly), then
3. the raw blinker signal of its kind, when it has receivers.

Ordering without a lock per event: while a single thread produces into a
tree, nothing is locked; ``seq`` comes from an :func:`itertools.count` and
delivery happens in that thread, so delivery order is ``seq`` order. The first
time another thread emits into the tree, the tree becomes *shared*: that
thread, and any other that comes before the owner is out, waits for the
owner to finish the emission it is in (a handshake on flags, sequentially
consistent under the GIL), and from then on every emission, the owner's
included, numbers and delivers under the tree's re-entrant lock. ``seq`` stays strictly increasing and gap-free across
threads either way.

Back-pressure happens outside any lock: :meth:`Sink.put <streamtap.bus.Sink.put>`
says when a buffer is full, and the producing thread then calls
:meth:`~streamtap.bus.Sink.wait_for_room` after delivery. Async producers
running on a stream consumer's own loop await
:meth:`Emitter.wait_for_room` instead (a thread wait there would deadlock).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
import types
import typing as t

from . import bus
from .events import Chunk, Custom, End, ErrorInfo, Event, Run, Start, Status, Timings, Tool, ToolPhase, Usage
from .exceptions import RunCancelled, UsageError

__all__ = ["Emitter", "Tree", "relaying"]

_relaying: contextvars.ContextVar[bool] = contextvars.ContextVar("streamtap_relaying", default=False)


def relaying() -> bool:
    """Whether the event being delivered right now was relayed from another process (see :meth:`Emitter.relay`).

    Subscribers run in the delivering thread, so one that must not handle such
    events twice (the tracing subscriber: the other process exports its own
    spans) checks this.
    """
    return _relaying.get()


_tuple_new = tuple.__new__
_get_ident = threading.get_ident
_registry = bus.registry
_chunk_sig = bus.signals["chunk"]
_chunk_receivers = _chunk_sig.receivers
_start_sig = bus.signals["start"]
_tool_sig = bus.signals["tool"]
_custom_sig = bus.signals["custom"]
_end_sig = bus.signals["end"]
_EMPTY: t.Mapping[str, t.Any] = types.MappingProxyType({})
_LAZY_LOCK = threading.Lock()  # guards the first use of a run's tree or token
_NO_LOCK: t.ContextManager[t.Any] = contextlib.nullcontext()  # a tree's lock until it is shared (never entered)


class Tree:
    """What every run of one tree shares: the ``seq`` counter and the ordering state.

    Made by the thread that first emits into the tree (its *owner*), which
    emits without locking until :meth:`share` is called by another thread.
    """

    __slots__ = ("busy", "counter", "drained", "lock", "owner", "shared")

    def __init__(self) -> None:
        self.counter = itertools.count()
        """The tree's ``seq`` numbers (``next()`` is atomic)."""
        # Made by share(), before `shared` is set: a tree one thread emits into never needs it.
        self.lock: t.ContextManager[t.Any] = _NO_LOCK
        """Taken around numbering and delivery once the tree is shared (re-entrant: a subscriber may
        call a module, whose events belong to the same tree)."""
        self.owner = _get_ident()
        """The thread that emits without the lock while the tree is not shared."""
        self.shared = False
        """Whether a second thread has emitted into the tree (then every emission locks)."""
        self.busy = 0
        """How deep the owner is in unlocked emissions (written by the owner only)."""
        self.drained = False
        """Whether the owner's last unlocked emission has ended since the tree was shared (then only locked
        emissions remain). A thread other than the owner calls :meth:`share` until it is set: seeing
        ``shared`` is not enough, the owner may still be inside the emission it began before."""

    def share(self) -> None:
        """Called by a thread other than the owner before its first emission: switch the tree to locking.

        Waits (yielding the GIL) until the owner has finished the unlocked
        emission it may be in; the owner sees ``shared`` at its next one.
        """
        with _LAZY_LOCK:  # the first of several sharing threads makes the lock; all then use it
            if self.lock is _NO_LOCK:
                self.lock = threading.RLock()
        self.shared = True
        # The owner raised `busy` before reading `shared`; we set `shared` before reading `busy`:
        # one of the two sees the other, so no unlocked emission overlaps a locked one.
        while self.busy:
            time.sleep(0)
        self.drained = True


class _Cancellable(t.Protocol):
    """What an emitter reads of its run's cancel token."""

    cancelled: bool
    reason: str | None


class Emitter:
    """The emission methods of a run (mixed into :class:`~streamtap.RunContext`, which holds the state).

    Subclasses provide ``run``, ``module``, ``sinks``, ``_token``,
    ``attributes`` and ``usage``; the emitter keeps the tree and the clocks.
    """

    # The ordering and clock state that dispatch writes; the rest of the run state is the subclass's.
    __slots__ = ("_started_at", "_t0", "_t_first", "_tree")

    run: Run
    module: t.Any
    sinks: tuple[bus.Sink, ...]
    attributes: dict[str, t.Any]
    usage: Usage | None
    _started_at: float | None
    _tree: Tree | None
    _token: _Cancellable | None
    _t0: float
    _t_first: float | None

    @property
    def started_at(self) -> float:
        """Wall-clock start of the run (seconds since the epoch).

        Read when first asked for -- at the ``Start`` of a run someone listens
        to -- as the wall clock now less the run's monotonic age, so a run
        nobody listens to never reads the wall clock.
        """
        at = self._started_at
        if at is None:
            at = self._started_at = time.time() - (time.perf_counter() - self._t0)
        return at

    def tree(self) -> Tree:
        """This run's :class:`Tree` (made on first use: a call nobody listens to never needs one)."""
        tree = self._tree
        if tree is None:
            with _LAZY_LOCK:  # two threads of one tree must get the same object
                tree = self._tree
                if tree is None:
                    tree = self._tree = Tree()
        return tree

    def chunk(self, delta: t.Any, channel: str = "text", call_id: str | None = None) -> bool:
        """Stream one piece of output. Cheap when nobody listens.

        Returns whether a stream's buffer is full now: a synchronous producer
        has already waited for room here; a coroutine on the stream reader's
        own loop cannot wait here and should ``await`` :meth:`wait_for_room`.

        Raises:
            RunCancelled: the run has been asked to stop.
        """
        if self._t_first is None:
            self._t_first = time.perf_counter()
        tok = self._token
        if tok is not None and tok.cancelled:
            msg = tok.reason or f"run {self.run.run_id} was cancelled"
            raise RunCancelled(msg)
        calls = _registry.chunk_calls
        sinks = self.sinks
        if not (sinks or calls or _chunk_receivers):
            return False
        tree = self._tree or self.tree()
        full = done = False
        if tree.owner == _get_ident():
            # The hot path: the owner thread, no lock (see the module docstring).
            tree.busy += 1
            try:
                if not tree.shared:
                    ev = _tuple_new(Chunk, (self.run, next(tree.counter), delta, channel, call_id))
                    for sink in sinks:
                        if sink.put(ev):
                            full = True
                    for call, failed in calls:
                        try:
                            call(ev)
                        except Exception as exc:
                            failed(exc)
                    if _chunk_receivers:
                        _chunk_sig.send(self.module, event=ev)
                    done = True
            finally:
                tree.busy -= 1
        elif not tree.drained:
            tree.share()
        if not done:
            with tree.lock:
                ev = _tuple_new(Chunk, (self.run, next(tree.counter), delta, channel, call_id))
                for sink in sinks:
                    if sink.put(ev):
                        full = True
                for call, failed in calls:
                    try:
                        call(ev)
                    except Exception as exc:
                        failed(exc)
                if _chunk_receivers:
                    _chunk_sig.send(self.module, event=ev)
        if full:
            self._wait_for_room_sync()
        return full

    def chunks(
        self,
        items: t.Iterable[t.Any],
        keep: t.Callable[[t.Any], t.Any] | None,
        other: t.Callable[[t.Any, t.Any], object],
        stepwise: bool = False,
    ) -> t.Generator[None, None, None]:
        """Stream every item of ``items``: the one inlined fast path of a generator ``forward``.

        A ``str`` item is a ``text`` chunk, numbered and delivered right here
        while this thread owns an unshared tree; anything else goes to
        ``other(self, item)``, and every case this loop does not handle to
        :meth:`chunk`. ``keep(item)``, when given, is called first for each
        (to build the output).

        A generator. Unless ``stepwise`` it never yields (drive it with
        ``for _ in ...: pass``). ``stepwise``, it yields after every item: a
        same-thread stream hands its reader the events so far at each yield
        (see :mod:`streamtap.driven`), so no item waits for the next one,
        however long the generator then takes (a tool call, a stalled model).

        Raises:
            RunCancelled: the run has been asked to stop.
        """
        run = self.run
        module = self.module
        sinks = self.sinks
        tree = self._tree or self.tree()
        counter = tree.counter
        # Read per resumption, not per item: the thread may change between two of them.
        mine = tree.owner == _get_ident()
        for item in items:
            if keep is not None:
                keep(item)
            if item.__class__ is not str:
                other(self, item)
            else:
                tok = self._token
                if tok is not None and tok.cancelled:
                    msg = tok.reason or f"run {run.run_id} was cancelled"
                    raise RunCancelled(msg)
                calls = _registry.chunk_calls
                if not mine or not (sinks or calls or _chunk_receivers):
                    self.chunk(item)  # another thread's tree, or nobody listens any more
                else:
                    full: bool | None = False
                    tree.busy += 1
                    try:
                        if tree.shared:  # another thread shared the tree: from now on, under its lock
                            full = None
                        else:
                            ev = _tuple_new(Chunk, (run, next(counter), item, "text", None))
                            for sink in sinks:
                                if sink.put(ev):
                                    full = True
                            for call, failed in calls:
                                try:
                                    call(ev)
                                except Exception as exc:
                                    failed(exc)
                            if _chunk_receivers:
                                _chunk_sig.send(module, event=ev)
                    finally:
                        tree.busy -= 1
                    if full is None:
                        self.chunk(item)
                        mine = False
                    elif full:
                        self._wait_for_room_sync()
            if stepwise:
                yield
                mine = tree.owner == _get_ident()

    def relay(self, event: Event) -> Event:
        """Deliver ``event``, an event of a run of another process, into this run's tree; returns it as delivered.

        The event keeps its own run (give it one whose ``parent_id`` leads to
        this tree) and gets this tree's next ``seq``, so ordering and
        gap-freeness stay this process's job. It reaches this tree's streams
        and the bus's subscribers like any event; while it is delivered,
        :func:`relaying` is true. Used by :class:`streamtap.propagation.Relay`.
        """
        kind = event.kind
        token = _relaying.set(True)
        try:
            return t.cast(
                Event,
                self._send(type(event), tuple(event)[2:], _registry.calls(kind), bus.signals[kind], event.run),
            )
        finally:
            _relaying.reset(token)

    def _send(
        self,
        cls: type[t.Any],
        fields: tuple[t.Any, ...],
        calls: bus.Calls,
        sig: t.Any,
        run: Run | None = None,
    ) -> t.Any:
        """Number, build and deliver one event of ``cls`` (``fields`` are those after ``run, seq``) to the sinks, ``calls`` and ``sig``."""
        run = self.run if run is None else run
        tree = self._tree or self.tree()
        sinks = self.sinks
        full = done = False
        ev: t.Any = None
        if tree.owner == _get_ident():
            tree.busy += 1
            try:
                if not tree.shared:
                    ev = _tuple_new(cls, (run, next(tree.counter), *fields))
                    for sink in sinks:
                        if sink.put(ev):
                            full = True
                    for call, failed in calls:
                        try:
                            call(ev)
                        except Exception as exc:
                            failed(exc)
                    if sig.receivers:
                        sig.send(self.module, event=ev)
                    done = True
            finally:
                tree.busy -= 1
        elif not tree.drained:
            tree.share()
        if not done:
            with tree.lock:
                ev = _tuple_new(cls, (run, next(tree.counter), *fields))
                for sink in sinks:
                    if sink.put(ev):
                        full = True
                for call, failed in calls:
                    try:
                        call(ev)
                    except Exception as exc:
                        failed(exc)
                if sig.receivers:
                    sig.send(self.module, event=ev)
        if full:
            self._wait_for_room_sync()
        return ev

    def _wait_for_room_sync(self) -> None:
        for sink in self.sinks:
            sink.wait_for_room()

    async def wait_for_room(self) -> None:
        """Back-pressure for async producers: await while a stream read on this event loop is full.

        A synchronous producer waits by itself inside :meth:`chunk`; a
        coroutine on the consumer's own loop cannot (that would block the
        consumer), so it awaits this after emitting. Returns at once when
        every stream has room.
        """
        for sink in self.sinks:
            waiter = sink.room()
            if waiter is not None:
                await waiter

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
        """Report a tool call's progress on this run (``requested``, then ``result`` or ``error``).

        Raises:
            UsageError: an unknown ``phase``.
        """
        if phase not in ("requested", "result", "error"):
            msg = f"Tool phase must be 'requested', 'result' or 'error', not {phase!r}."
            raise UsageError(msg)
        if isinstance(error, BaseException):
            error = ErrorInfo.from_exception(error)
        elif isinstance(error, str):
            error = ErrorInfo("ToolError", error)
        calls = _registry.tool_calls
        if self.sinks or calls or _tool_sig.receivers:
            self._send(Tool, (call_id, name, phase, arguments, result, error), calls, _tool_sig)

    def emit(self, name: str, data: t.Any = None) -> None:
        """Send a custom progress event (see :func:`streamtap.emit`)."""
        calls = _registry.custom_calls
        if self.sinks or calls or _custom_sig.receivers:
            self._send(Custom, (name, data), calls, _custom_sig)

    def send_start(self, inputs: t.Any) -> None:
        """Send the run's :class:`~streamtap.events.Start` (called by ModuleBase only; the run's clocks started with it)."""
        calls = _registry.start_calls
        if self.sinks or calls or _start_sig.receivers:
            self._send(Start, (inputs, self.started_at), calls, _start_sig)

    def send_end(self, status: Status, output: t.Any = None, error: ErrorInfo | None = None) -> End | None:
        """Send the run's one :class:`~streamtap.events.End` (called by ModuleBase only); ``None`` if nobody listens."""
        calls = _registry.end_calls
        if not (self.sinks or calls or _end_sig.receivers):
            return None
        now = time.perf_counter()
        first = None if self._t_first is None else self._t_first - self._t0
        timings = _tuple_new(Timings, (self.started_at, now - self._t0, first))
        fields = (status, output, error, self.usage, timings, self.attributes or _EMPTY)
        return t.cast(End, self._send(End, fields, calls, _end_sig))

    def listened(self) -> bool:
        """Whether anything at all can receive this run's chunks (a stream, a subscriber, a receiver)."""
        return bool(self.sinks or _registry.chunk_calls or _chunk_receivers)
