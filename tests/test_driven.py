"""Same-thread streams: the reader advances a sync-generator run itself, with every guarantee of a background run."""

from __future__ import annotations

import gc
import threading
import time
import typing as t

import pytest

import streamtap
import streamtap.driven
import streamtap.views
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


def test_an_item_reaches_the_reader_before_the_generator_goes_on() -> None:
    """A burst's last item is not held while the generator then does slow work (a tool call, a stalled model)."""
    seen = threading.Event()
    waited: list[bool] = []

    class Burst(ModuleBase):
        def forward(self) -> t.Iterator[str]:
            yield "Let me "
            yield "check."  # right after the previous item, as tokens of one network read come
            # Slow work in the reader's own thread: only a reader that already has "check." can set this.
            waited.append(seen.wait(2.0))
            yield " Sunny."

    texts = []
    for ev in Burst().stream():
        if ev.kind == "chunk":
            texts.append(ev.delta)
            if ev.delta == "check.":
                seen.set()
    assert texts == ["Let me ", "check.", " Sunny."]
    assert waited == [True], "the reader did not get 'check.' until the generator had made its next item"


def test_a_producer_thread_waiting_for_room_goes_on_while_the_reader_steps() -> None:
    """A child module streaming from another thread, which waits for room, is let go once the reader steps: the
    reader cannot make room while it produces (here its step overfills the buffer, then joins that thread)."""
    go = threading.Event()
    box: list[threading.Condition] = []

    class Child(ModuleBase):
        def forward(self, n: int) -> t.Iterator[str]:
            assert go.wait(5)
            for i in range(n):
                yield f"c{i}"

    class Inner(ModuleBase):
        def forward(self, n: int) -> t.Iterator[str]:
            for i in range(n):
                yield f"i{i}"

    class Root(ModuleBase):
        def forward(self) -> t.Iterator[str]:
            worker = threading.Thread(target=streamtap.wrap(lambda: Child()(10)))
            worker.start()
            yield "r-first"
            Inner()(10)  # one step that buffers more than half of maxsize
            box.pop().release()  # only now may the woken worker look at the buffer again (see below)
            worker.join(5)
            yield "joined" if not worker.is_alive() else "the worker was still blocked for room"

    with capture_events() as seen:
        stream = Root().buffered(4, "block").stream()
        buf = stream._buf
        got = []
        for ev in stream:
            got.append(ev)
            if ev.kind == "chunk" and ev.delta == "r-first":
                go.set()
                # The reader is busy between two steps until the worker waits for room.
                deadline = time.monotonic() + 5
                while not buf._producers_waiting and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert buf._producers_waiting, "the worker never waited for room"
                # Hold the buffer's condition: the worker, woken when the reader makes room, looks again
                # only once the reader's next step has begun (the root releases it inside that step).
                cond = buf._cond
                cond.acquire()
                box.append(cond)
    texts = [e.delta for e in got if e.kind == "chunk"]
    assert texts[-1] == "joined"
    assert sum(1 for x in texts if x.startswith("c")) == 10
    assert [e.status for e in seen.of("end")] == ["ok", "ok", "ok"]
    check_invariants(seen)


def test_result_timeout_holds_for_a_run_the_reader_took() -> None:
    """handle.result(timeout) of a reader-driven run stops driving it at the deadline (checked between steps)."""

    class Slow(ModuleBase):
        def forward(self, n: int) -> t.Iterator[str]:
            for i in range(n):
                time.sleep(0.05)  # the slow model itself, not a wait for a race
                yield f"t{i}"

    stream = Slow().stream(100)  # 5 s in all
    assert next(stream).kind == "start"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 0.2 s"):
        stream.handle.result(timeout=0.2)
    assert time.monotonic() - t0 < 2.0
    assert not stream.handle.done()
    stream.close()
    with pytest.raises(RunCancelled):
        stream.handle.result(5)


class _ContendedLock:
    """A DrivenRun lock that the thread named ``holder`` releases only once another thread failed to take it."""

    def __init__(self, holder: str) -> None:
        self._lock = threading.Lock()
        self.holder = holder
        self.held = threading.Event()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        mine = threading.current_thread().name == self.holder
        if got and mine:
            self.held.set()
        elif not got and not mine:
            self.contended.set()
        return got

    def release(self) -> None:
        if threading.current_thread().name == self.holder:
            assert self.contended.wait(5), "nobody tried to take the run while the holder held its lock"
        self._lock.release()


class _NoTimer:
    """Stands for the ClaimTimer: the test plays the pool thread itself."""

    def add(self, run: object) -> None:
        pass


def test_an_unread_stream_closed_while_the_pool_thread_claims_it_still_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() of an untaken stream holds the run's lock just as the pool thread tries to claim it: the pool
    thread still runs it, cancelled; it ends once and the handle raises RunCancelled."""
    monkeypatch.setattr(streamtap.views, "default_claims", _NoTimer)
    with capture_events() as seen:
        stream = Words().stream(3)
        handle = stream.handle
        driven = handle._driven
        assert driven is not None
        lock = _ContendedLock("closer")
        driven._lock = lock  # type: ignore[assignment]
        closer = threading.Thread(target=stream.close, name="closer")
        closer.start()
        assert lock.held.wait(5)
        driven.run_in_thread()  # the pool thread's side, while abandon() holds the lock
        closer.join(5)
        assert not closer.is_alive()
        with pytest.raises(RunCancelled):
            handle.result(2)
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)


def test_an_unread_stream_whose_pool_is_shut_down_ends_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the ClaimTimer cannot submit an untaken run (the pool is shut down), the run still starts, ends
    cancelled once, and the handle raises RunCancelled."""

    def refuse(fn: t.Callable[[], None]) -> object:
        raise RuntimeError("cannot schedule new futures after shutdown")

    timer = streamtap.driven.ClaimTimer(refuse)
    monkeypatch.setattr(streamtap.views, "default_claims", lambda: timer)
    with capture_events() as seen:
        stream = Words().stream(3)
        with pytest.raises(RunCancelled, match="shut down"):
            stream.handle.result(2)  # nobody reads: the timer's turn
        events = list(stream)
    assert events[-1].kind == "end" and events[-1].status == "cancelled"
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)
