"""Same-thread streams: the reader advances a sync-generator run itself, with every guarantee of a background run."""

from __future__ import annotations

import gc
import threading
import time
import typing as t

import pytest

import streamtap
from streamtap import ModuleBase, RunCancelled
from streamtap.testing import capture_events, check_invariants


class Words(ModuleBase):
    """Yields ``n`` words, recording the thread and whether its ``finally`` ran."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()
        self.closed = threading.Event()

    def forward(self, n: int) -> t.Iterator[str]:
        try:
            for i in range(n):
                self.threads.add(threading.get_ident())
                yield f"w{i} "
        finally:
            self.closed.set()


def test_the_reader_drives_the_run_in_its_own_thread() -> None:
    """Read at once, the run advances in the reader's thread, and its events come in seq order."""
    m = Words()
    with capture_events() as seen:
        events = list(m.stream(200))
    assert m.threads == {threading.get_ident()}
    assert [e.seq for e in events] == list(range(202))
    check_invariants(seen)
    assert (
        events[-1].kind == "end"
        and events[-1].status == "ok"
        and events[-1].output == "".join(f"w{i} " for i in range(200))
    )


def test_reader_code_runs_outside_the_run() -> None:
    """Between two events the reader is not inside the run: a module it calls there is a root of its own."""
    inner = Words()
    with capture_events() as seen:
        read = 0
        for _ in Words().stream(2):  # Start, two chunks, End
            assert streamtap.current() is None
            inner(1)
            read += 1
    roots = {e.run.root_id for e in seen if e.run.parent_id is None}
    assert read == 4 and len(roots) == 1 + read  # the streamed run, and each call of `inner` a root of its own
    check_invariants(seen)


def test_leaving_early_cancels_the_run_once() -> None:
    """Breaking out of a reader-driven stream ends the run with status cancelled, once, and runs its finally."""
    m = Words()
    with capture_events() as seen:
        with m.stream(10_000) as stream:
            for i, _ in enumerate(stream):
                if i == 5:
                    break
        with pytest.raises(RunCancelled):
            stream.handle.result(5)
    assert m.closed.is_set()
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)


def test_a_dropped_stream_is_cancelled_at_once() -> None:
    """A reader-driven stream dropped mid-run (garbage) ends its run with status cancelled."""
    m = Words()
    with capture_events() as seen:
        stream = m.stream(10_000)
        next(stream), next(stream)
        del stream
        gc.collect()
        assert m.closed.wait(5)
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)


def test_result_drives_a_partly_read_run_to_its_end() -> None:
    """handle.result() after a partial read finishes the run (nobody else would advance it)."""
    stream = Words().stream(300)
    next(stream), next(stream)
    assert stream.handle.result(5) == "".join(f"w{i} " for i in range(300))
    rest = list(stream)
    assert rest[-1].kind == "end" and rest[-1].status == "ok"


def test_a_failing_forward_ends_with_error_and_the_handle_raises_it() -> None:
    """The forward's exception ends the run with status error; the reader sees End, the handle raises it."""

    class Fails(ModuleBase):
        def forward(self) -> t.Iterator[str]:
            yield "a"
            raise KeyError("broken model")

    stream = Fails().stream()
    events = list(stream)
    assert events[-1].kind == "end" and events[-1].status == "error"
    assert events[-1].error is not None and events[-1].error.type == "KeyError"
    with pytest.raises(KeyError, match="broken model"):
        stream.handle.result(5)
    check_invariants(events)


def test_a_cancel_from_another_thread_stops_a_reader_driven_run() -> None:
    """handle.cancel() from another thread ends the run at its next chunk, with status cancelled."""
    stream = Words().stream(1_000_000)
    got = []
    for ev in stream:
        got.append(ev)
        if len(got) == 10:
            th = threading.Thread(target=stream.handle.cancel, args=("user pressed stop",))
            th.start()
            th.join(5)
    assert got[-1].kind == "end" and got[-1].status == "cancelled"
    assert len(got) < 1_000_000
    check_invariants(got)


def test_closing_from_another_thread_during_a_step_never_blocks() -> None:
    """close() from another thread while the reader is inside a step returns at once; the run then ends cancelled."""
    entered, release = threading.Event(), threading.Event()

    class Slow(ModuleBase):
        def forward(self) -> t.Iterator[str]:
            yield "a"
            entered.set()
            assert release.wait(5), "close() blocked while the reader was inside a step"
            yield "b"

    with capture_events() as seen:
        stream = Slow().stream()
        assert [next(stream).kind, next(stream).kind] == ["start", "chunk"]

        def close_then_release() -> None:
            assert entered.wait(5)
            stream.close()  # the reader holds the step: this must not wait for it
            release.set()

        closer = threading.Thread(target=close_then_release)
        closer.start()
        list(stream)
        closer.join(5)
        assert not closer.is_alive()
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)


class FastThenSlow(ModuleBase):
    """Yields ``fast`` items at once, then ``slow`` items each after a model-like pause; records when each was made."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[float] = []

    def forward(self, fast: int, slow: int) -> t.Iterator[str]:
        for i in range(fast + slow):
            if i >= fast:
                time.sleep(0.004)  # the slow model itself (what is measured), not a wait for a race
            self.made.append(time.perf_counter())
            yield f"t{i} "


def test_a_generator_that_turns_slow_hands_over_each_slow_item_before_making_the_next() -> None:
    module = FastThenSlow()
    got: list[float] = []
    for ev in module.stream(200, 5):
        if ev.kind == "chunk":
            got.append(time.perf_counter())
    assert len(got) == len(module.made) == 205
    held = [i for i in range(200, 204) if got[i] > module.made[i + 1]]
    assert held == [], f"slow items held until the next one was made: {held}"
