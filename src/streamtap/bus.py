"""The event bus: one private :class:`blinker.Namespace`, one signal per event kind.

Every event is sent on the signal named after its ``kind`` (``start``,
``chunk``, ``tool``, ``custom``, ``end``), with the emitting module instance as
the sender. Anything may listen:

* :func:`subscribe` takes a plain callable ``fn(event)`` (or an ``async def``)
  and isolates failures: a subscriber that raises never breaks the producer
  or the other subscribers; its first failure is logged with its name on the
  ``streamtap.bus`` logger and every failure is counted
  (:attr:`Subscription.errors`).
* The raw blinker signals in :data:`signals` are there for those who want
  blinker itself, e.g. ``signals["chunk"].connect(fn, sender=my_module)``.
  Such receivers get ``(sender, event=...)`` and, as in blinker, their
  exceptions propagate into the producer: prefer :func:`subscribe`.

No event is built when nobody listens: producers check for subscribers and
receivers first. Subscriptions that take every sender are called directly
from a tuple (much cheaper than ``Signal.send``); those filtered by sender are
connected to the blinker signal and use its sender index. Subscribers run synchronously in the producing thread, in the order of
``seq``; they must not block. Async subscribers run on the event loop they
were subscribed from, one event at a time, in order.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
import typing as t

import blinker

from .events import Event
from .exceptions import UsageError

__all__ = [
    "KINDS",
    "FailureLog",
    "Sink",
    "Subscriber",
    "Subscription",
    "registry",
    "signals",
    "subscribe",
    "unsubscribe",
]

log = logging.getLogger("streamtap.bus")

KINDS: tuple[str, ...] = ("start", "chunk", "tool", "custom", "end")
"""The event kinds, in lifecycle order."""

_namespace = blinker.Namespace()

signals: t.Mapping[str, blinker.NamedSignal] = {kind: _namespace.signal(kind) for kind in KINDS}
"""The blinker signal of each event kind. Receivers are called as ``receiver(sender, event=event)``."""

scope_signal = _namespace.signal("scope")
"""Sent once when a run starts, with ``run=``. A receiver may return a callable
that returns a context manager; the run enters it around ``forward()``. The
tracing subscriber uses it to make the run's span current."""


class FailureLog:
    """The failure policy of everything the bus calls: log the first failure, count the rest.

    One per subscriber, hook or receiver set. Its owner catches the exception
    and calls :meth:`record`; the producer goes on.

    Args:
        owner: who failed, as the log line names it (``"streamtap subscriber my_fn"``).
        logger: where the first failure is logged (at ``ERROR``, with its traceback).
        later: the end of the log line, saying what happens to later failures.
    """

    __slots__ = ("_later", "_logger", "count", "owner")

    def __init__(
        self,
        owner: str,
        logger: logging.Logger | None = None,
        later: str = "later failures are only counted",
    ) -> None:
        self.owner = owner
        self._logger = logger or log
        self._later = later
        self.count = 0
        """How many failures were recorded."""

    def record(self, exc: BaseException) -> None:
        """Count ``exc``; log it if it is the first. Never raises."""
        self.count += 1
        if self.count == 1:
            self._logger.error(
                "%s raised %s; the run goes on, %s", self.owner, type(exc).__name__, self._later, exc_info=exc
            )


class Sink(t.Protocol):
    """Where a run tree's events go besides the subscribers: the buffer of a run stream.

    Producers (:mod:`streamtap.dispatch`) use these three methods and nothing
    else. A third party can feed its own buffer to a run the same way.
    """

    @property
    def put(self) -> t.Callable[[Event], bool | None]:
        """Take one event, in ``seq`` order; never blocks, never raises.

        May be called with the tree's lock held. Returns ``True`` when the
        buffer is now full and the producer should call :meth:`wait_for_room`
        (after delivery, outside any lock) before its next event. (A callable
        attribute, so that a buffer can make it a bare ``deque.append``.)
        """
        ...

    def wait_for_room(self) -> None:
        """Block the calling (producing) thread until the buffer has room again, or return at once.

        Returns at once when blocking is not the buffer's policy, when the
        run has been cancelled or the consumer left, and when the caller is
        the consumer's own event-loop thread (it awaits :meth:`room` instead).
        """
        ...

    def room(self) -> t.Awaitable[None] | None:
        """For an async producer on the consumer's loop: something to await until there is room, or ``None``."""
        ...


Subscriber = t.Callable[[Event], t.Any]
"""A subscriber: a plain callable that takes one event. It may be ``async def``."""

Calls = tuple[tuple[Subscriber, t.Callable[[BaseException], None]], ...]
"""Subscribers as ``(call, on_failure)`` pairs: call ``call(event)``; if it raises, ``on_failure(exc)``."""


class _Registry:
    """The subscriptions that take every sender, per kind, as tuples replaced on change.

    Producers call them directly (one Python call each), which is several times
    cheaper than ``blinker.Signal.send``; subscriptions filtered by sender go
    through blinker, whose sender index does the filtering.
    """

    __slots__ = (
        "_lock",
        "chunk",
        "chunk_calls",
        "custom",
        "custom_calls",
        "end",
        "end_calls",
        "start",
        "start_calls",
        "tool",
        "tool_calls",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.start: tuple[Subscription, ...] = ()
        self.chunk: tuple[Subscription, ...] = ()
        self.tool: tuple[Subscription, ...] = ()
        self.custom: tuple[Subscription, ...] = ()
        self.end: tuple[Subscription, ...] = ()
        # Each kind's subscribers as ``(call, on_failure)`` pairs: producers call them without a method hop.
        self.start_calls: Calls = ()
        self.chunk_calls: Calls = ()
        self.tool_calls: Calls = ()
        self.custom_calls: Calls = ()
        self.end_calls: Calls = ()

    def add(self, kind: str, sub: Subscription) -> None:
        """Add ``sub`` to the subscribers of ``kind``."""
        with self._lock:
            self._set(kind, (*getattr(self, kind), sub))

    def remove(self, kind: str, sub: Subscription) -> None:
        """Remove ``sub`` from the subscribers of ``kind``."""
        with self._lock:
            self._set(kind, tuple(s for s in getattr(self, kind) if s is not sub))

    def _set(self, kind: str, subs: tuple[Subscription, ...]) -> None:
        # The pairs first: a producer that sees a new subscription in `kind` finds its call too.
        setattr(self, f"{kind}_calls", tuple(s.direct_call() for s in subs))
        setattr(self, kind, subs)

    def calls(self, kind: str) -> Calls:
        """The subscribers of ``kind`` as ``(call, on_failure)`` pairs."""
        return t.cast(Calls, getattr(self, f"{kind}_calls"))


registry = _Registry()
"""The direct subscribers of each kind (``registry.chunk`` is a tuple of subscriptions)."""


F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def _name_of(fn: t.Callable[..., t.Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


class Subscription:
    """A subscriber connected to the bus.

    Returned by :func:`subscribe`. Use it as a context manager to unsubscribe
    on exit, call :meth:`unsubscribe`, or keep it for its failure counter.
    Calling it calls the subscriber, so ``@subscribe`` keeps the function usable.
    """

    __slots__ = ("__weakref__", "_async", "_connected", "failures", "fn", "kinds", "name", "sender")

    def __init__(
        self,
        fn: Subscriber,
        kinds: tuple[str, ...],
        sender: t.Any,
        loop: asyncio.AbstractEventLoop | None,
        maxsize: int,
    ) -> None:
        self.fn = fn
        self.kinds = kinds
        self.sender = sender
        self.name = _name_of(fn)
        self.failures = FailureLog(
            f"streamtap subscriber {self.name}", log, "later failures of this subscriber are only counted"
        )
        """The subscriber's failures: the first is logged, all are counted."""
        self._async = _AsyncDelivery(self, loop, maxsize) if loop is not None else None
        self._connected = False

    @property
    def errors(self) -> int:
        """How many times the subscriber raised."""
        return self.failures.count

    @property
    def dropped(self) -> int:
        """Events an async subscriber lost because it lagged more than ``maxsize`` behind (oldest first)."""
        return self._async.dropped if self._async is not None else 0

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call the subscriber itself."""
        return self.fn(*args, **kwargs)

    def direct_call(self) -> tuple[Subscriber, t.Callable[[BaseException], None]]:
        """``(call, on_failure)``: what a producer calls per event, and what it calls when that raises."""
        if self._async is not None:
            return self._async.put, self.failures.record
        return self.fn, self.failures.record

    def _receive(self, sender: t.Any, /, *, event: Event, **_: t.Any) -> None:
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        """Give one event to the subscriber, isolating its failure."""
        if self._async is not None:
            self._async.put(event)
            return
        try:
            self.fn(event)
        except Exception as exc:
            self.failures.record(exc)

    def _connect(self) -> None:
        for kind in self.kinds:
            if self.sender is blinker.ANY:
                registry.add(kind, self)
            else:
                signals[kind].connect(self._receive, sender=self.sender, weak=False)
        self._connected = True

    def unsubscribe(self) -> None:
        """Disconnect the subscriber. Calling it twice is harmless."""
        if self._connected:
            for kind in self.kinds:
                if self.sender is blinker.ANY:
                    registry.remove(kind, self)
                else:
                    signals[kind].disconnect(self._receive)
            self._connected = False
        if self._async is not None:
            self._async.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<Subscription {self.name} kinds={list(self.kinds)} {state} errors={self.errors}>"


class _AsyncDelivery:
    """Feeds an async subscriber from any thread, in order, one event at a time."""

    __slots__ = ("_closed", "_lock", "_loop", "_queue", "_running", "dropped", "maxsize", "sub")

    def __init__(self, sub: Subscription, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self.sub = sub
        self._loop = loop
        self._queue: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self.maxsize = maxsize
        self.dropped = 0

    def put(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            if self._running:
                return
            self._running = True
        try:
            self._loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop is closed: nobody can receive any more
            self.close()

    def _start(self) -> None:
        self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._closed:
                    self._running = False
                    return
                event = self._queue.popleft()
            try:
                await self.sub.fn(event)
            except Exception as exc:
                self.sub.failures.record(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.clear()


def subscribe(
    fn: Subscriber | None = None,
    *,
    kinds: t.Iterable[str] | None = None,
    sender: t.Any = blinker.ANY,
    loop: asyncio.AbstractEventLoop | None = None,
    maxsize: int = 10_000,
) -> t.Any:
    """Connect ``fn`` to the bus so that it receives every event.

    Args:
        fn: A callable taking one event. An ``async def`` function is run on
            ``loop`` (default: the running loop of the caller), one event at a
            time in ``seq`` order.
        kinds: Only these event kinds (``start``, ``chunk``, ``tool``,
            ``custom``, ``end``); default all.
        sender: Only events emitted by this module instance.
        loop: For async subscribers subscribed outside a running loop.
        maxsize: For async subscribers: events kept while the subscriber lags;
            past it the oldest are dropped and counted.

    Returns:
        A :class:`Subscription` (a context manager that unsubscribes on exit).
        Called without ``fn`` it returns a decorator, so ``@subscribe(kinds=["end"])``
        works; the decorated name is then bound to the subscription, which is callable.

    Raises:
        UsageError: an unknown kind, or an async subscriber with no loop.
    """
    if fn is None:

        def decorator(f: Subscriber) -> Subscription:
            return t.cast(Subscription, subscribe(f, kinds=kinds, sender=sender, loop=loop, maxsize=maxsize))

        return decorator
    if not callable(fn):
        msg = f"subscribe() takes a callable that accepts one event, not {fn!r}."
        raise UsageError(msg)
    chosen = tuple(KINDS if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))
    unknown = [k for k in chosen if k not in signals]
    if unknown:
        msg = f"Unknown event kind(s) {unknown!r} for subscribe(); choose from {list(KINDS)}."
        raise UsageError(msg)
    if maxsize < 1:
        msg = f"maxsize must be at least 1, got {maxsize!r}."
        raise UsageError(msg)
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004 - an object whose __call__ is async
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                msg = (
                    f"The async subscriber {_name_of(fn)} needs an event loop to run on. Subscribe it from inside "
                    "a running loop (in an async function), or pass loop=."
                )
                raise UsageError(msg) from None
    else:
        loop = None
    sub = Subscription(fn, chosen, sender, loop, maxsize)
    sub._connect()
    return sub


def unsubscribe(target: Subscription | Subscriber) -> None:
    """Disconnect a subscription, or every subscription of a subscriber function.

    Unknown targets are ignored, so unsubscribing twice is harmless.
    """
    if isinstance(target, Subscription):
        target.unsubscribe()
        return
    for kind in KINDS:
        for sub in getattr(registry, kind):
            if sub.fn is target:
                sub.unsubscribe()
    for sig in signals.values():
        # subscribe() connects with weak=False, so blinker holds the bound method itself.
        for receiver in list(sig.receivers.values()):
            owner = getattr(receiver, "__self__", None)
            if isinstance(owner, Subscription) and owner.fn is target:
                owner.unsubscribe()
