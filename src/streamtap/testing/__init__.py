"""Helpers for testing code that uses streamtap (the project's own tests use them).

``capture_events()`` collects every event on the bus while its block runs::

    with capture_events() as events:
        my_module("hi")
    assert [e.kind for e in events] == ["start", "chunk", "end"]

It is a subscriber like any other, so it sees the events of every thread and
task. Use :func:`check_invariants` to assert the core's guarantees on them.

Recordings (:mod:`streamtap.recording`) come back with :func:`replay`, and
:func:`first_divergence` says where a new run departs from a recorded one::

    recorded = replay("weather.jsonl")
    with capture_events() as events:
        weather_agent(llm=ReplayChat("weather.jsonl"))(QUERY)
    assert first_divergence(recorded, events) is None

:class:`FakeOpenAI` (and :func:`model_endpoint`) is an embedded, deterministic
OpenAI-compatible model server -- real HTTP, real SSE, standard library only --
for tests, examples and the demo, the way OpenTelemetry ships
``InMemorySpanExporter`` with its SDK::

    from streamtap.testing import model_endpoint

    with model_endpoint() as base_url:     # the embedded server, or OPENAI_BASE_URL
        ...
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import typing as t

from ..bus import subscribe
from ..events import End, Event, Start, to_jsonable
from ..recording import as_events, read_recording
from .fake_openai import Behaviour, FakeOpenAI, RequestRecord, model_endpoint

__all__ = [
    "Behaviour",
    "Divergence",
    "EventLog",
    "FakeOpenAI",
    "RequestRecord",
    "capture_events",
    "check_invariants",
    "first_divergence",
    "model_endpoint",
    "replay",
]


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
            starts[rid] = ev
            position[("start", rid)] = i
        else:
            assert rid in starts, f"{ev.kind} event of run {rid} ({ev.run.name}) came before its start"
            assert rid not in ends, f"{ev.kind} event of run {rid} ({ev.run.name}) came after its end"
            if ev.kind == "end":
                ends[rid] = ev
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


# -- replay and divergence ------------------------------------------------------------


def replay(path: str | os.PathLike[str], root_id: str | None = None) -> EventLog:
    """The events of a recording (:class:`~streamtap.recording.Recorder`) as typed events.

    Args:
        path: the recording file.
        root_id: one root run (its events in ``seq`` order); default: the only
            root run of the file, or all events in file order when it holds several.

    Raises:
        RecordingError: not a recording, or no such root run.
    """
    rec = read_recording(path)
    if root_id is None and len(rec.roots()) == 1:
        root_id = rec.roots()[0]
    return EventLog(rec.events(root_id))


class Divergence(t.NamedTuple):
    """Where a new run first departs from a recorded one (:func:`first_divergence`)."""

    position: int
    """Index in the recorded events of the first event that differs (``len(expected)`` for extra new events)."""
    path: str
    """The run, as a path of run names from the root (``weather_agent/get_current_weather{"location": "Paris"}``)."""
    field: str
    """What differs: ``output``, ``result``, ``text``, ``missing``, ``extra``, ..."""
    expected: Event | None
    """The recorded event (``None`` when the new run has an event the recording lacks)."""
    actual: Event | None
    """Its counterpart in the new run (``None`` when there is none)."""
    message: str
    """A sentence saying what differs, with both values."""

    def __str__(self) -> str:
        return self.message


_EventsLike = t.Iterable[Event | t.Mapping[str, t.Any]]


def _brief(value: t.Any) -> str:
    text = json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:160] + "..."


class _Tree:
    """One run tree's events, indexed by a run key that does not depend on run ids or thread timing."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.key: dict[str, str] = {}  # run id -> key
        counts: collections.Counter[str] = collections.Counter()
        self.by_key: dict[str, list[Event]] = collections.defaultdict(list)  # non-chunk events
        self.text: dict[tuple[str, str, str | None], str] = collections.defaultdict(str)
        self.calls: dict[str, list[str]] = collections.defaultdict(list)  # run key -> requested call ids, in order
        for ev in events:
            rid = ev.run.run_id
            if ev.kind == "start":
                parent = self.key.get(ev.run.parent_id or "", "")
                # Tools run concurrently: they are told apart by their arguments, not by start order.
                which = _brief(ev.inputs) if ev.run.kind == "tool" else ""
                base = f"{parent}/{ev.run.name}{which}" if parent else ev.run.name + which
                counts[base] += 1
                self.key[rid] = base if counts[base] == 1 else f"{base}#{counts[base]}"
            k = self.key.get(rid)
            if k is None:
                continue
            if ev.kind == "chunk":
                self.text[(k, ev.channel, ev.call_id)] += str(ev.delta)
            else:
                self.by_key[k].append(ev)
                if ev.kind == "tool" and ev.phase == "requested":
                    self.calls[k].append(str(ev.call_id))


_COMPARED: dict[str, tuple[str, ...]] = {
    "start": ("inputs",),
    "tool": ("name", "phase", "arguments", "result", "error"),
    "custom": ("name", "data"),
    "end": ("status", "error", "output"),
}


def first_divergence(expected: _EventsLike, actual: _EventsLike) -> Divergence | None:
    """The first recorded event the new run does not reproduce, or ``None`` when it reproduces them all.

    Both arguments are the events of one run tree (typed events, or wire dicts
    as :func:`replay` and the recording hold them). Run ids, ``seq``, times,
    usage and annotations are not compared; runs are matched by their place in
    the tree (name, and for tools their arguments, since tools of one model
    turn run concurrently), tool calls by the order they were requested.
    Compared: starts' inputs (not a model run's: its request is made of what
    came before it, compared where that was produced, and agents pass a list
    they go on appending to); tool events' name, phase, arguments, result and
    error; custom events; ends' status, error and output; and the streamed
    text of each channel, chunk boundaries aside (the divergence is the first
    recorded chunk whose text the new run does not continue).
    """
    exp = _Tree(as_events(expected))
    act = _Tree(as_events(actual))
    seen_text: dict[tuple[str, str, str | None], str] = collections.defaultdict(str)
    for index, ev in enumerate(exp.events):
        k = exp.key.get(ev.run.run_id)
        if k is None:
            continue
        if ev.kind == "chunk":
            tk = (k, ev.channel, _mapped_call(exp, act, k, ev.call_id))
            seen_text[tk] += str(ev.delta)
            new = act.text.get(tk, "")
            if not new.startswith(seen_text[tk]):
                at = _common_prefix(seen_text[tk], new)
                return Divergence(
                    index, k, "text", ev, None,
                    f"Event {index} ({k}, {ev.channel} chunk): the new run's text departs at character {at}: "
                    f"recorded {seen_text[tk][at:at + 60]!r}, new {new[at:at + 60]!r}.",
                )  # fmt: skip
            continue
        counterpart = _counterpart(exp, act, k, ev)
        if counterpart is None:
            what = "run" if ev.kind == "start" else f"{ev.kind} event"
            return Divergence(
                index, k, "missing", ev, None, f"Event {index} ({k}, {ev.kind}): the new run has no such {what}."
            )
        for name in _COMPARED[ev.kind]:
            if name == "inputs" and ev.run.kind == "llm":
                continue  # a model's request is built from what came before it, compared where it was produced
            a, b = to_jsonable(getattr(ev, name)), to_jsonable(getattr(counterpart, name))
            if a != b:
                label = f"{ev.kind} {getattr(ev, 'phase', '')}".strip()
                return Divergence(
                    index, k, name, ev, counterpart,
                    f"Event {index} ({k}, {label}): {name} differs: recorded {_brief(a)}, new {_brief(b)}.",
                )  # fmt: skip
        if ev.kind == "end":
            for (rk, channel, call), text in act.text.items():
                if (
                    rk == k
                    and len(text) > len(seen_text.get((rk, channel, call), ""))
                    and (rk, channel, call) in seen_text
                ):
                    extra = text[len(seen_text[(rk, channel, call)]) :]
                    return Divergence(
                        index,
                        k,
                        "text",
                        ev,
                        counterpart,
                        f"Event {index} ({k}, end): the new run streamed more {channel} text: {extra[:60]!r}.",
                    )
    for k, evs in act.by_key.items():
        if k not in exp.by_key:
            return Divergence(
                len(exp.events), k, "extra", None, evs[0], f"The new run has a run the recording lacks: {k}."
            )
    return None


def _mapped_call(exp: _Tree, act: _Tree, key: str, call_id: str | None) -> str | None:
    """The new run's id of a recorded tool call (the n-th call requested by the same run)."""
    if call_id is None:
        return None
    for k, ids in exp.calls.items():
        if call_id in ids:
            i = ids.index(call_id)
            other = act.calls.get(k, [])
            return other[i] if i < len(other) else None
    return call_id  # tool_args chunks of a model run: the call is requested by its parent, matched in order there


def _counterpart(exp: _Tree, act: _Tree, key: str, ev: Event) -> Event | None:
    """The new run's event matching a recorded one.

    That is the start/end of the same run, the same tool call's phase, or the
    custom event at the same position.
    """
    candidates = act.by_key.get(key, [])
    if ev.kind in {"start", "end"}:
        return next((c for c in candidates if c.kind == ev.kind), None)
    if ev.kind == "tool":
        mapped = _mapped_call(exp, act, key, ev.call_id)
        return next((c for c in candidates if c.kind == "tool" and c.call_id == mapped and c.phase == ev.phase), None)
    same = [c for c in exp.by_key[key] if c.kind == ev.kind]
    others = [c for c in candidates if c.kind == ev.kind]
    i = same.index(ev)
    return others[i] if i < len(others) else None


def _common_prefix(a: str, b: str) -> int:
    i = 0
    for x, y in zip(a, b):
        if x != y:
            break
        i += 1
    return i
