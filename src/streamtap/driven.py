"""Same-thread streams: the reader drives the run, so ``stream()`` pays no thread hand-off.

``module.stream(x)`` of a module whose ``forward`` is a synchronous generator
returns at once, with the run *claimable*: the run is also submitted to the
SDK's pool, and whoever comes first takes it.

* Usually the reader comes first (its first ``next()`` follows ``stream()``
  at once): it then advances the run itself, one item of the generator per
  step, in the context captured when ``stream()`` was called (so the run
  nests under the caller's run, and the reader's own code between two events
  runs outside the run). The first chunk costs no pool submit to wait for
  and no thread wake-up; no lock is taken while nothing else emits into the
  tree.
* When nobody has read the stream :data:`GRACE` (5 ms) after ``stream()``,
  the pool thread takes the run, which goes on in that thread exactly as a
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

import concurrent.futures
import contextvars
import threading
import typing as t

from .exceptions import RunCancelled

__all__ = ["DrivenRun"]

Steps = t.Generator[None, None, None]

GRACE = 0.005
"""Seconds a pool thread leaves the reader to take a run before it takes it (a stream nobody reads still runs)."""


class DrivenRun:
    """A run that the first of its reader or a pool thread takes and advances.

    Args:
        steps: the run as a generator that yields once per item of its
            ``forward`` (it records its own result in ``future`` and ends the
            stream's buffer when done).
        future: where the run's result or exception lands.
        reason: what to cancel with when the reader leaves early.
    """

    __slots__ = ("_abandoned", "_lock", "_owner", "_pumping", "_taken", "_told", "context", "done", "future", "steps")

    def __init__(self, steps: Steps, future: concurrent.futures.Future[t.Any]) -> None:
        self.steps = steps
        self.future = future
        self.context = contextvars.copy_context()
        """The context of the ``stream()`` call, in which every step runs."""
        self._lock = threading.Lock()  # claim, and one step at a time
        self._owner: str | None = None  # "reader" | "thread"
        self._pumping: int | None = None
        # Held until the reader has taken the run (or it ended); the pool thread waits on it.
        # A bare lock, not an Event: an Event costs a Condition, a measurable share of stream().
        self._taken = threading.Lock()
        self._taken.acquire()
        self._told = False
        self._abandoned: str | None = None  # why the reader left, for the thread inside a step to finish
        self.done = False
        """Whether the run has finished."""

    @property
    def pumping(self) -> int | None:
        """The id of the thread advancing the run right now, or ``None``."""
        return self._pumping

    def run_in_thread(self) -> None:
        """The pool's side: unless the reader takes the run within :data:`GRACE` seconds, run it to the end here."""
        if self._taken.acquire(timeout=GRACE):
            return
        if not self._lock.acquire(blocking=False):
            return  # the reader is advancing it
        try:
            if self._owner is not None:
                return
            self._owner = "thread"
        finally:
            self._lock.release()
        self.context.run(self._to_the_end)

    def _to_the_end(self) -> None:
        for _ in self.steps:
            pass
        self.done = True

    def step(self) -> bool:
        """The reader's side: advance the run by one item; ``False`` when this thread cannot (read and wait instead)."""
        if self._owner == "thread" or self.done:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another reader thread is advancing it; its events wake us
        try:
            if self._owner is None:
                # Taken. The pool thread is told at the next step, not now: waking it here would
                # compete for the GIL with the very first chunk this step hands over.
                self._owner = "reader"
            elif self._owner != "reader" or self.done:
                return False
            elif not self._told:
                self._tell()
            self._pumping = threading.get_ident()
            try:
                if self.context.run(next, self.steps, self) is self:
                    self.done = True
                    self._tell()
            finally:
                self._pumping = None
                if self._abandoned is not None and not self.done:
                    self._end(self._abandoned)  # the reader left while this step ran
            return True
        finally:
            self._lock.release()

    def _tell(self) -> None:
        """Let the waiting pool thread go (called with ``_lock`` held, so at most once)."""
        if not self._told:
            self._told = True
            self._taken.release()

    def finish(self) -> None:
        """Drive a reader-owned run to its end in this thread (for ``handle.result()``)."""
        while not self.done and self._owner == "reader" and self.step():
            pass

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
        self._tell()
        try:
            self.context.run(self.steps.throw, RunCancelled(reason))
        except (RunCancelled, StopIteration):
            pass
