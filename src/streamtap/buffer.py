"""The buffer behind a run stream: bounded, thread-safe, one policy for a slow consumer.

A :class:`StreamBuffer` is the :class:`~streamtap.bus.Sink` a
:class:`~streamtap.streams.RunStream` reads. Producers talk to it through the
sink interface only (``put``, ``wait_for_room``, ``room``), from
:mod:`streamtap.dispatch`; the stream reads it with :meth:`StreamBuffer.get`
or :meth:`StreamBuffer.aget`.

Hand-over is batched both ways: a waiting consumer is woken once per wait,
not once per event, and a blocked producer is let go only once half the
buffer is free.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import typing as t

from .events import Event
from .exceptions import StreamOverflowError, UsageError

__all__ = ["Driver", "Policy", "StreamBuffer"]

Policy = t.Literal["block", "drop_oldest", "error"]
"""What a stream does when its consumer lags (see :mod:`streamtap.streams`)."""

_POLICIES = ("block", "drop_oldest", "error")
_LAZY_LOCK = threading.Lock()  # guards the first use of a buffer's condition


class Driver(t.Protocol):
    """A run its reader can advance (:class:`streamtap.driven.DrivenRun`)."""

    @property
    def pumping(self) -> int | None:
        """The thread advancing the run right now, or ``None``."""
        ...

    def step(self, buffer: StreamBuffer | None = None) -> bool:
        """Advance the run by one step; ``False`` when the calling thread cannot.

        Once :attr:`pumping` is set, and before the step produces anything, it calls
        ``buffer.stepping()`` if producers wait for room in ``buffer``.
        """
        ...


class StreamBuffer:
    """The sink half of a run stream: bounded, thread-safe, wakes sync or async consumers.

    Implements :class:`streamtap.bus.Sink` for producers (:meth:`put`,
    :meth:`wait_for_room`, :meth:`room`) and :meth:`get` / :meth:`aget` for
    the one :class:`~streamtap.streams.RunStream` that reads it. See
    :mod:`streamtap.streams` for the policies.

    Args:
        maxsize: events held at most while the consumer lags.
        policy: ``"block"``, ``"drop_oldest"`` or ``"error"``.

    Raises:
        UsageError: a ``maxsize`` below 1 or an unknown ``policy``.
    """

    __slots__ = (
        "_async_waiters",
        "_block_at",
        "_cond_obj",
        "_consumer_waiting",
        "_limit",
        "_loop",
        "_loop_thread",
        "_producers_waiting",
        "_q",
        "_room_waiter",
        "closed",
        "driver",
        "dropped",
        "error",
        "finished",
        "maxsize",
        "policy",
        "put",
        "released",
    )

    def __init__(self, maxsize: int, policy: Policy) -> None:
        self.validate(maxsize, policy)
        self.maxsize = maxsize
        self.policy = policy
        self._limit = maxsize  # 0 once the stream takes no more events (closed, or overflowed)
        self._block_at = maxsize - 1 if policy == "block" else maxsize + 1  # put() says "full" from here
        self._q: collections.deque[Event] = collections.deque()
        self._cond_obj: threading.Condition | None = None  # made by the first who waits or wakes (see _cond)
        self._consumer_waiting = False
        self._producers_waiting = 0
        self._async_waiters: list[asyncio.Future[None]] = []  # one per async reader waiting
        self._room_waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.dropped = 0
        self.error: BaseException | None = None
        self.finished = False  # the producer is done: no more events will come
        self.closed = False  # the consumer left: events are discarded
        self.released = False  # the run was cancelled: producers no longer wait for room
        self.put: t.Callable[[Event], bool | None] = self._put
        """Take one event, in ``seq`` order (the :class:`~streamtap.bus.Sink` method). ``True``: the buffer is
        full, call :meth:`wait_for_room`. While the reader drives the run itself, a bare append."""
        self.driver: Driver | None = None
        """Set when the reader may advance the run itself (a same-thread stream, :mod:`streamtap.driven`)."""

    @staticmethod
    def validate(maxsize: int, policy: Policy) -> None:
        """Check a buffer's settings.

        Raises:
            UsageError: a ``maxsize`` below 1 or an unknown ``policy``, naming it.
        """
        if not isinstance(maxsize, int) or maxsize < 1:
            msg = f"A stream's maxsize must be a whole number of at least 1, got {maxsize!r}."
            raise UsageError(msg)
        if policy not in _POLICIES:
            msg = f"Unknown stream policy {policy!r}; choose one of {list(_POLICIES)}."
            raise UsageError(msg)

    # -- producer side -------------------------------------------------

    def _put(self, event: Event) -> bool:
        """Take one event (see :meth:`streamtap.bus.Sink.put`); ``True``: full, call :meth:`wait_for_room`."""
        q = self._q
        n = len(q)
        if n < self._limit:  # the hot path: one comparison
            q.append(event)
            if self._consumer_waiting:
                self._wake()
            return n >= self._block_at
        return self._put_slow(event)

    def __len__(self) -> int:
        """Events buffered now."""
        return len(self._q)

    def _put_slow(self, event: Event) -> bool:
        if self.closed or self.error is not None:
            return False
        q = self._q
        if self.policy == "block":
            pass  # the producer waits in wait_for_room() after delivery, outside any lock; it may go over by a few
        elif self.policy == "drop_oldest":
            try:
                q.popleft()
            except IndexError:  # the consumer took it meanwhile
                pass
            else:
                self.dropped += 1
        else:
            self.error = StreamOverflowError(self.maxsize)
            self._limit = 0
            self._wake()
            return False
        if self.closed:
            return False
        q.append(event)
        if self._consumer_waiting:
            self._wake()
        return self.policy == "block"

    def _wait_for_room(self) -> None:
        driver = self.driver
        if driver is not None and driver.pumping is not None:
            return  # the reader is producing: nobody else would make room (see streamtap.driven)
        if self._loop_thread is not None and self._loop_thread == threading.get_ident():
            # The producer runs on the async consumer's own loop: blocking would
            # deadlock. It goes over by one; the module awaits room at its next chunk.
            return
        with self._cond:
            while len(self._q) > self.maxsize >> 1 and not self.closed and not self.released:
                if self._consumer_waiting:
                    self._wake_locked()
                # The consumer resets the count when it notifies: one notification per wait,
                # not one per event it pops while this thread is still waking up.
                self._producers_waiting += 1
                # Looked at after the count is raised: a reader that enters a step from now on sees the
                # count and wakes this thread (stepping), one that entered before is seen here.
                if driver is not None and driver.pumping is not None:
                    return  # the reader is producing: it cannot make room until its step returns
                self._cond.wait()

    def wait_for_room(self) -> None:
        """Block a producing thread while the buffer is full (see :meth:`streamtap.bus.Sink.wait_for_room`)."""
        if len(self._q) >= self.maxsize and self.policy == "block" and not self.closed:
            self._wait_for_room()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Note that the stream is fed by tasks of ``loop``, running in this thread (``astart``)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def room(self) -> t.Awaitable[None] | None:
        """For an async producer on the consumer's loop: an awaitable until there is room, else ``None``."""
        return self._await_room() if self._over() else None

    def _over(self) -> bool:
        return (
            len(self._q) >= self.maxsize
            and not self.closed
            and self.policy == "block"
            and self._loop_thread == threading.get_ident()
            and not self.released
        )

    async def _await_room(self) -> None:
        while self._over():
            with self._cond:
                if not self._over():
                    return
                fut = self._room_waiter
                if fut is None or fut.done():
                    fut = self._room_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(fut)

    def finish(self) -> None:
        """Mark the run tree finished and wake the reader; events put from now on are ignored."""
        self.finished = True
        # No reference from the buffer to itself or to its run is left: it is freed without the cyclic collector.
        self.put = _ignore
        self.driver = None
        if self._cond_obj is not None:
            # Someone waits, or has waited. A reader that is about to wait made the condition
            # first and reads `finished` under it, so it sees the flag or gets this wake.
            self._wake()

    @property
    def _cond(self) -> threading.Condition:
        """The condition readers and blocked producers wait on, made on first use (most streams never wait)."""
        cond = self._cond_obj
        if cond is None:
            with _LAZY_LOCK:
                cond = self._cond_obj
                if cond is None:
                    # An RLock's Condition: built in half the time of a Lock's.
                    cond = self._cond_obj = threading.Condition()
        return cond

    def _wake(self) -> None:
        with self._cond:
            self._wake_locked()

    def _wake_locked(self) -> None:
        # Wake once per wait: a consumer that is waking up (waiting for the GIL)
        # must not be notified again for every event the producer adds meanwhile.
        self._consumer_waiting = False
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for fut in waiters:
            _resolve(fut)

    # -- consumer side -----------------------------------------------------

    def stepping(self) -> None:
        """The reader has entered a step: producers waiting for room go on (it cannot make room while it produces)."""
        with self._cond:
            self._cond.notify_all()

    def _made_room(self) -> None:
        if self._producers_waiting or self._room_waiter is not None:
            with self._cond:
                self._producers_waiting = 0
                self._cond.notify_all()
                fut = self._room_waiter
                if fut is not None:
                    self._room_waiter = None
                    if self._loop_thread == threading.get_ident():
                        if not fut.done():
                            fut.set_result(None)
                    else:
                        try:
                            fut.get_loop().call_soon_threadsafe(_set_done, fut)
                        except RuntimeError:
                            pass

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or ``None`` at the end of the stream.

        Raises:
            StreamOverflowError: under the ``"error"`` policy, once the buffered events are read.
            TimeoutError: no event within ``timeout`` seconds.
            UsageError: the stream is fed by a task of this thread's own event loop.
        """
        q = self._q
        if q and not self._producers_waiting and self._room_waiter is None:
            try:
                return q.popleft()  # the hot path
            except IndexError:
                pass
        while True:
            if q:
                try:
                    ev = q.popleft()
                except IndexError:  # a drop_oldest producer took it meanwhile
                    continue
                # Hysteresis: wake a blocked producer only once half the buffer is free,
                # so that producer and consumer hand over in batches, not per event.
                if (self._producers_waiting or self._room_waiter is not None) and len(q) <= self.maxsize >> 1:
                    self._made_room()
                return ev
            if self.error is not None:
                raise StreamOverflowError(self.maxsize)
            if self.finished or self.closed:
                return None
            if self._loop_thread == threading.get_ident():
                msg = (
                    "This stream is fed by a task of the event loop running in this thread, so waiting for it "
                    "here would block that task forever. Iterate it with 'async for' (or use module.stream())."
                )
                raise UsageError(msg)
            driver = self.driver
            if driver is not None:
                # The reader advances the run itself; its own events need no wake-up nor room.
                if self.policy == "block":
                    self.put = q.append
                try:
                    stepped = driver.step(self)
                finally:
                    self.put = _ignore if self.finished or self.closed else self._put
                if stepped:
                    continue
            with self._cond:
                # Left set after waiting: the next wake clears it (clearing it here could lose another reader's).
                self._consumer_waiting = True
                if not q and not self.finished and self.error is None and not self.closed:
                    if self._producers_waiting:
                        self._cond.notify_all()
                    if not self._cond.wait(timeout):
                        raise TimeoutError(f"No event arrived within {timeout} s.")

    def events(self, owner: object = None) -> t.Iterator[Event]:
        """Iterate the events to the end of the stream: :meth:`get` in a loop, with its hot path inlined.

        Args:
            owner: kept alive while the iteration goes on (the stream whose
                collection would cancel the run).
        """
        q = self._q
        popleft = q.popleft
        get = self.get
        while True:
            if q and not self._producers_waiting and self._room_waiter is None:
                try:
                    ev = popleft()
                except IndexError:  # a drop_oldest producer took it meanwhile
                    continue
            else:
                got = get()
                if got is None:
                    del owner
                    return
                ev = got
            yield ev

    async def anext(self) -> Event:
        """Await the next event: :meth:`aget` for ``async for`` (one coroutine per event, not two).

        Raises:
            StopAsyncIteration: once the run tree has finished and its events are read.
            StreamOverflowError: as :meth:`aget`.
        """
        q = self._q
        if q and self._loop is not None and not self._producers_waiting and self._room_waiter is None:
            try:
                return q.popleft()  # the hot path
            except IndexError:  # a drop_oldest producer took it meanwhile
                pass
        ev = await self.aget()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def aget(self) -> Event | None:
        """Await the next event (``None`` once the run tree has finished)."""
        q = self._q
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._loop_thread = threading.get_ident()
        while True:
            if q:
                try:
                    ev = q.popleft()
                except IndexError:
                    continue
                if len(q) <= self.maxsize >> 1:
                    self._made_room()
                return ev
            if self.error is not None:
                raise StreamOverflowError(self.maxsize)
            if self.finished or self.closed:
                return None
            fut = loop.create_future()
            with self._cond:
                if q or self.finished or self.error is not None or self.closed:
                    continue
                self._async_waiters.append(fut)
                self._consumer_waiting = True
                if self._producers_waiting:
                    self._cond.notify_all()
            try:
                await fut
            finally:
                with self._cond:
                    # The flag is left for the next wake to clear: clearing it here could
                    # lose the wakeup of another reader that is still waiting.
                    if fut in self._async_waiters:
                        self._async_waiters.remove(fut)

    def release(self) -> None:
        """The run is cancelled: let its producers through so that it can wind down and end."""
        with self._cond:
            self.released = True
            self._producers_waiting = 0
            self._cond.notify_all()
            fut, self._room_waiter = self._room_waiter, None
        if fut is not None:
            try:
                fut.get_loop().call_soon_threadsafe(_set_done, fut)
            except RuntimeError:
                pass

    def close(self) -> None:
        """Take no more events: the producer's next put() finds the buffer closed."""
        with self._cond:
            self.closed = True
            self.put = _ignore
            self._limit = 0
            self._q.clear()
            self._producers_waiting = 0
            self._cond.notify_all()
            waiters = [*self._async_waiters, *([self._room_waiter] if self._room_waiter is not None else [])]
            self._room_waiter, self._async_waiters = None, []
        for fut in waiters:
            _resolve(fut)


def _ignore(event: Event) -> None:
    """A finished or closed buffer's ``put``: the event is not kept."""


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` from any thread: directly on its own loop, else through that loop."""
    loop = fut.get_loop()  # the reader's loop, which may differ from an astart() producer's
    if asyncio._get_running_loop() is loop:
        _set_done(fut)
    else:
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:  # the loop is closed: that reader is gone
            pass
