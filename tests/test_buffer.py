"""StreamBuffer: what a finished or closed stream leaves behind, and reading it in several loops."""

from __future__ import annotations

import gc
import threading
import time
import typing as t

import pytest

from streamtap import ModuleBase
from streamtap.buffer import StreamBuffer
from streamtap.context import RunContext
from streamtap.driven import DrivenRun
from streamtap.events import Chunk, End, Start
from streamtap.streams import RunHandle, RunStream


class Words(ModuleBase):
    """Yields ``n`` words."""

    def forward(self, n: int) -> t.Iterator[str]:
        for i in range(n):
            yield f"w{i} "


class Gate(ModuleBase):
    """Yields one word, then waits until the test lets it go on."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def forward(self) -> t.Iterator[str]:
        yield "first "
        assert self.gate.wait(10), "the test never opened the gate"
        yield "second "


def _read_to_the_end() -> None:
    for _ in Words().stream(5):
        pass


def _close_early() -> None:
    s = Words().stream(5)
    for ev in s:
        if ev.kind == "chunk":
            break
    s.close()


def _drop() -> None:
    s = Words().stream(5)
    next(iter(s))
    del s


def _start() -> None:
    Words().start(5).result(10)


OURS = (StreamBuffer, RunContext, RunHandle, RunStream, DrivenRun, Chunk, Start, End, Words)


@pytest.mark.parametrize("use", [_read_to_the_end, _close_early, _drop, _start])
def test_a_stream_leaves_no_reference_cycle_behind(use: t.Callable[[], None]) -> None:
    use()  # warm-up: first-use caches, pool threads
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage instead of freed
    try:
        for _ in range(50):
            use()
        gc.collect()
        # Only our objects: the collector also finds other threads' garbage (servers of earlier tests).
        ours = [o for o in gc.garbage if isinstance(o, OURS)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    kinds = sorted({type(o).__name__ for o in ours})
    assert ours == [], f"{use.__name__}: {len(ours) / 50:.1f} streamtap objects per stream in reference cycles: {kinds}"


def test_breaking_out_of_a_for_loop_loses_no_event() -> None:
    s = Words().stream(10)
    head = []
    for ev in s:
        head.append(ev)
        if ev.kind == "chunk":
            break
    tail = list(s)  # a new loop goes on where the first one stopped
    seqs = [ev.seq for ev in head + tail]
    assert seqs == list(range(len(seqs)))
    assert [ev.kind for ev in tail][-1] == "end"
    assert "".join(ev.delta for ev in head + tail if ev.kind == "chunk") == "".join(f"w{i} " for i in range(10))


def test_a_reader_waiting_in_another_thread_is_woken_by_the_end() -> None:
    gate = threading.Event()
    handle = Gate(gate).start()
    stream = handle.events()
    got: list[str] = []
    done = threading.Event()

    def read() -> None:
        for ev in stream:
            got.append(ev.kind)
        done.set()

    reader = threading.Thread(target=read, name="buffer-reader")
    reader.start()
    gate.set()
    assert done.wait(10), "the reader was never woken by the run's end"
    reader.join(10)
    assert got[0] == "start" and got[-1] == "end" and got.count("chunk") == 2


class _Driver:
    """A reader-driven run whose one step ends the stream once the producer waiting for room has gone on."""

    def __init__(self, buf: StreamBuffer) -> None:
        self.buf = buf
        self.pumping: int | None = None
        self.went_on = threading.Event()

    def step(self, buffer: StreamBuffer | None = None) -> bool:
        self.pumping = threading.get_ident()
        try:
            if buffer is not None and buffer._producers_waiting:
                buffer.stepping()
            assert self.went_on.wait(5), "a producer waiting for room was not let go while the reader stepped"
        finally:
            self.pumping = None
        self.buf.finish()
        return True


def test_a_producer_waiting_for_room_is_woken_when_the_reader_steps() -> None:
    """The reader wakes a producer that waits for room before it steps (it cannot make room while it produces)."""
    buf = StreamBuffer(4, "block")
    driver = _Driver(buf)
    buf.driver = driver
    events = [Chunk(None, i, "x", "text", None) for i in range(4)]  # type: ignore[arg-type]

    def produce() -> None:
        for ev in events:
            if buf.put(ev):
                buf.wait_for_room()
        driver.went_on.set()

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 5
    while not buf._producers_waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    assert buf._producers_waiting
    # The events a hot-path read took just before the producer said it waits: nobody made room for it since.
    buf._q.clear()
    try:
        assert buf.get(timeout=5) is None
    finally:
        buf.close()  # lets the producer go whatever happened
    producer.join(5)
    assert not producer.is_alive()
