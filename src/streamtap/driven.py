"""Same-thread streams: the reader drives the run, so ``stream()`` pays no thread hand-off.

``module.stream(x)`` of a module whose ``forward`` is a synchronous generator
returns at once, with the run *claimable*: a :class:`ClaimTimer` hands it to
the SDK's pool unless the reader takes it first.

* Usually the reader comes first (its first ``next()`` follows ``stream()``
  at once): it then advances the run itself, one item of the generator per
  step, in the context captured when ``stream()`` was called (so the run
  nests under the caller's run, and the reader's own code between two events
  runs outside the run). The first chunk costs no pool submit to wait for
  and no thread wake-up; no lock is taken while nothing else emits into the
  tree.
* When nobody has read the stream :data:`GRACE` (5 ms) after ``stream()``,
  the timer submits the run to the pool, whose thread takes it (``stream()``
  itself pays no pool submit and wakes no thread: one timer thread per
  process watches every claimable run, sleeping while there is none), which goes on in that thread exactly as a
  background run does; the reader reads the buffer as usual. A stream nobody
  reads still runs (and, under ``"block"``, waits for room), only 5 ms later.

While the reader drives a step, no producer waits for room in that stream's
buffer (the one who would make room is the one producing): events emitted
within one step of the root generator -- by a child module, or by another
thread -- are buffered in full; the root's own items are handed over one by
one, so memory stays flat however long the root streams.

Leaving the stream early (``close()``, ``break`` out of a ``with`` block,
dropping it) cancels the run: the reader throws
:class:`~streamtap.exceptions.RunCancelled` into the suspended run, which ends
with status ``cancelled`` exactly as a background run would.
:meth:`RunHandle.result <streamtap.streams.RunHandle.result>` drives a claimed
run to its end when nobody else does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import threading
import time
import typing as t

from .exceptions import RunCancelled

if t.TYPE_CHECKING:
    from .buffer import StreamBuffer

__all__ = ["GRACE", "ClaimTimer", "DrivenRun"]

Steps = t.Generator[None, None, None]

GRACE = 0.005
"""Seconds a pool thread leaves the reader to take a run before it takes it (a stream nobody reads still runs)."""

LINGER = 0.5
"""Seconds the :class:`ClaimTimer` thread keeps polling after the last run it saw, before it sleeps until the next."""


class DrivenRun:
    """A run that the first of its reader or a pool thread takes and advances.

    Args:
        steps: the run as a generator that yields once per item of its
            ``forward`` (it records its own result in ``future`` and ends the
            stream's buffer when done).
        future: where the run's result or exception lands.
        reason: what to cancel with when the reader leaves early.
    """

    __slots__ = ("_abandoned", "_lock", "_owner", "_pumping", "context", "done", "future", "steps")

    def __init__(self, steps: Steps, future: concurrent.futures.Future[t.Any]) -> None:
        self.steps = steps
        self.future = future
        self.context = contextvars.copy_context()
        """The context of the ``stream()`` call, in which every step runs."""
        self._lock = threading.Lock()  # claim, and one step at a time
        self._owner: str | None = None  # "reader" | "thread"
        self._pumping: int | None = None
        self._abandoned: str | None = None  # why the reader left, for the thread inside a step to finish
        self.done = False
        """Whether the run has finished."""

    @property
    def pumping(self) -> int | None:
        """The id of the thread advancing the run right now, or ``None``."""
        return self._pumping

    @property
    def taken(self) -> bool:
        """Whether the reader or a pool thread has taken the run (or it has ended)."""
        return self._owner is not None or self.done

    def run_in_thread(self, reason: str | None = None) -> None:
        """The pool's side (submitted by :class:`ClaimTimer`): unless the reader has taken the run, run it to the end here.

        Args:
            reason: start the run cancelled with this reason (nobody else can run it: the pool is shut down).
        """
        lock = self._lock
        if not lock.acquire(blocking=False):
            if self._owner is not None or self.done:
                return  # the reader is advancing it
            # The holder has not claimed the run: abandon() (brief), or a reader about to claim it.
            # Returning now would leave an untaken run to nobody: wait for the holder and look again.
            lock.acquire()
        try:
            if self._owner is not None or self.done:
                return
            self._owner = "thread"
            if reason is not None and self._abandoned is None:
                self._abandoned = reason
        finally:
            lock.release()
        self.context.run(self._to_the_end)

    def _to_the_end(self) -> None:
        steps = self.steps
        reason = self._abandoned
        if reason is not None and next(steps, self) is not self:
            # Left before it was taken (or the pool is gone): the run starts, and ends cancelled at once.
            self.done = True
            _throw(steps, reason)  # already in self.context
            return
        for _ in steps:
            pass
        self.done = True

    def step(self, buffer: StreamBuffer | None = None) -> bool:
        """The reader's side: advance the run by one item; ``False`` when this thread cannot (read and wait instead).

        Args:
            buffer: the stream's buffer, whose producers waiting for room are let go once :attr:`pumping`
                is set, before the item is made (the reader cannot make room while it produces).
        """
        if self._owner == "thread" or self.done:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another reader thread is advancing it; its events wake us
        try:
            if self._owner is None:
                self._owner = "reader"  # taken: the timer forgets the run
            elif self._owner != "reader" or self.done:
                return False
            self._pumping = threading.get_ident()
            try:
                if buffer is not None and buffer._producers_waiting:
                    buffer.stepping()
                if self.context.run(next, self.steps, self) is self:
                    self.done = True
            finally:
                self._pumping = None
                if self._abandoned is not None and not self.done:
                    self._end(self._abandoned)  # the reader left while this step ran
            return True
        finally:
            self._lock.release()

    def finish(self, deadline: float | None = None, buffer: StreamBuffer | None = None) -> None:
        """Drive a reader-owned run to its end in this thread (for ``handle.result()``).

        Args:
            deadline: a :func:`time.monotonic` time after which no further step is taken (checked between steps).
            buffer: as for :meth:`step`.
        """
        while not self.done and self._owner == "reader":
            if deadline is not None and time.monotonic() >= deadline:
                return
            if not self.step(buffer):
                return

    def abandon(self, reason: str) -> None:
        """The reader left early: end a run it owns now, with status ``cancelled``.

        A run not yet taken is left to the pool thread, which starts it cancelled
        and ends it at once. A run inside a step (of this thread or another) is
        ended by that step's thread when the step returns: this never blocks,
        so a cancel callback may call it from any thread.
        """
        self._abandoned = reason
        if self._pumping == threading.get_ident():
            return  # inside a step of this thread: it ends the run when the step returns
        if not self._lock.acquire(blocking=False):
            return  # another thread is inside a step: it ends the run when the step returns (never block a canceller)
        try:
            if self._owner == "reader" and not self.done:
                self._end(reason)
        finally:
            self._lock.release()

    def _end(self, reason: str) -> None:
        self.done = True
        self.context.run(_throw, self.steps, reason)


def _throw(steps: Steps, reason: str) -> None:
    """End the suspended run ``steps`` with status ``cancelled``."""
    try:
        steps.throw(RunCancelled(reason))
    except (RunCancelled, StopIteration):
        pass


class ClaimTimer:
    """Submits each claimable run to a pool unless its reader takes it within :data:`GRACE` seconds.

    One daemon thread per timer, started on first use, watches every run
    added. While runs keep coming it polls every :data:`GRACE` seconds, so
    :meth:`add` costs an append and wakes nothing; :data:`LINGER` seconds
    after the last one it sleeps on a condition, and the next :meth:`add`
    wakes it.

    Args:
        submit: how a run is handed to the pool (``executor.submit``).
    """

    __slots__ = ("_cond", "_idle", "_pending", "_submit", "_thread")

    def __init__(self, submit: t.Callable[[t.Callable[[], None]], object]) -> None:
        self._submit = submit
        self._pending: collections.deque[tuple[float, DrivenRun]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = True
        self._thread: threading.Thread | None = None

    def add(self, run: DrivenRun) -> None:
        """Watch ``run``: submit it :data:`GRACE` seconds from now unless it has been taken by then."""
        self._pending.append((time.monotonic() + GRACE, run))
        if self._idle:
            with self._cond:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._watch, name="streamtap-claims", daemon=True)
                    self._thread.start()
                self._cond.notify()

    def _watch(self) -> None:
        pending = self._pending
        while True:
            with self._cond:
                self._idle = True  # set before looking, so that an add() racing with the look notifies
                while not pending:
                    self._cond.wait()
                self._idle = False
            # Busy: poll every GRACE until no run has come for LINGER seconds, so that a
            # stream() while streams keep coming costs an append and wakes nothing.
            quiet_since = time.monotonic()
            while True:
                if not pending:
                    if time.monotonic() - quiet_since > LINGER:
                        break
                    time.sleep(GRACE)
                    continue
                deadline, run = pending[0]
                if run.taken:
                    pending.popleft()
                    quiet_since = time.monotonic()
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                    continue
                pending.popleft()
                quiet_since = time.monotonic()
                try:
                    self._submit(run.run_in_thread)
                except RuntimeError:  # the pool is shut down (interpreter exit): nobody else can run it any more
                    _run_cancelled(run, "the SDK's thread pool is shut down")


def _run_cancelled(run: DrivenRun, reason: str) -> None:
    """Unless its reader takes it, run ``run`` cancelled (it starts, then ends at once): in a thread of its own, else here."""
    try:
        threading.Thread(target=run.run_in_thread, args=(reason,), name="streamtap-cancelled", daemon=True).start()
    except RuntimeError:  # no new thread at interpreter shutdown
        run.run_in_thread(reason)
