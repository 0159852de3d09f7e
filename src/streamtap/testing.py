"""Helpers for testing code that uses streamtap (the project's own tests use them).

``capture_events()`` collects every event on the bus while its block runs::

    with capture_events() as events:
        my_module("hi")
    assert [e.kind for e in events] == ["start", "chunk", "end"]

It is a subscriber like any other, so it sees the events of every thread and
task. Use :func:`check_invariants` to assert the core's guarantees on them.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import typing as t

from .bus import subscribe
from .events import End, Event, Start

__all__ = ["EventLog", "capture_events", "check_invariants"]


class EventLog(list):  # type: ignore[type-arg]
    """A list of captured events, with a few views that tests keep needing."""

    def kinds(self) -> list[str]:
        """``[e.kind for e in self]``."""
        return [e.kind for e in self]

    def of(self, kind: str) -> list[Event]:
        """The events of one kind."""
        return [e for e in self if e.kind == kind]

    def text(self) -> str:
        """The user-facing text streamed, joined."""
        return "".join(e.delta for e in self if e.kind == "chunk" and e.channel == "text")

    def runs(self) -> dict[str, t.Any]:
        """Run id -> :class:`~streamtap.events.Run`, from the start events."""
        return {e.run.run_id: e.run for e in self if e.kind == "start"}

    def ends(self) -> dict[str, End]:
        """Run id -> its end event."""
        return {e.run.run_id: e for e in self if isinstance(e, End)}


@contextlib.contextmanager
def capture_events(kinds: t.Iterable[str] | None = None, sender: t.Any = None) -> t.Iterator[EventLog]:
    """Collect the bus's events while the block runs (thread-safe appends).

    Args:
        kinds: only these kinds (default all).
        sender: only the events of this module instance.
    """
    log = EventLog()
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            log.append(event)

    kwargs: dict[str, t.Any] = {"kinds": kinds}
    if sender is not None:
        kwargs["sender"] = sender
    with subscribe(record, **kwargs):
        yield log


def check_invariants(events: t.Iterable[Event]) -> None:
    """Assert the core's guarantees on a complete set of events.

    * every run has exactly one start and exactly one end, the start first and the end last;
    * within each root run, ``seq`` numbers are 0, 1, 2, ... with no gap or repeat, in delivery order;
    * every parent link points to a run of the same root that started earlier and ended later.

    The last point assumes structured concurrency: a parent that waits for its
    children. ``asyncio.gather`` returns at its first failure while siblings may
    still run, so with it a child can end after its parent (use ``TaskGroup``).

    Raises:
        AssertionError: naming the first broken guarantee.
    """
    evs = list(events)
    starts: dict[str, Start] = {}
    ends: dict[str, End] = {}
    by_root: dict[str, list[int]] = collections.defaultdict(list)
    position: dict[tuple[str, str], int] = {}
    for i, ev in enumerate(evs):
        rid = ev.run.run_id
        by_root[ev.run.root_id].append(ev.seq)
        if ev.kind == "start":
            assert rid not in starts, f"run {rid} ({ev.run.name}) started twice"
            starts[rid] = ev  # type: ignore[assignment]
            position[("start", rid)] = i
        else:
            assert rid in starts, f"{ev.kind} event of run {rid} ({ev.run.name}) came before its start"
            assert rid not in ends, f"{ev.kind} event of run {rid} ({ev.run.name}) came after its end"
            if ev.kind == "end":
                ends[rid] = ev  # type: ignore[assignment]
                position[("end", rid)] = i
    missing = set(starts) - set(ends)
    assert not missing, f"runs started but never ended: {sorted(starts[r].run.name + ':' + r for r in missing)}"
    for root, seqs in by_root.items():
        assert seqs == list(range(len(seqs))), f"seq of root {root} is not gap-free and increasing: {seqs[:50]}"
    for rid, st in starts.items():
        parent = st.run.parent_id
        if parent is None:
            assert st.run.root_id == rid, f"root run {rid} has root_id {st.run.root_id}"
            continue
        assert parent in starts, f"run {rid} names parent {parent}, which never started"
        assert starts[parent].run.root_id == st.run.root_id, f"run {rid} and its parent have different roots"
        assert position[("start", parent)] < position[("start", rid)], f"run {rid} started before its parent"
        assert position[("end", parent)] > position[("end", rid)], f"run {rid} ended after its parent"
