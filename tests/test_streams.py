"""Run streams: bounded buffers and their policies, any-thread/any-task consumers, filters, handles."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap import ModuleBase, RunCancelled, UsageError
from streamtap.exceptions import StreamOverflowError
from streamtap.testing import capture_events, check_invariants


class Count(ModuleBase):
    """Yields n chunks, recording how far it got."""

    def __init__(self) -> None:
        self.produced = 0

    def forward(self, n: int):
        for i in range(n):
            self.produced = i + 1
            yield f"{i},"


class ACount(ModuleBase):
    async def forward(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield f"{i},"


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll a condition of another thread's progress, with a deadline (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def chunk_numbers(events) -> list[int]:
    return [int(e.delta.rstrip(",")) for e in events if e.kind == "chunk"]


class TestPolicies:
    def test_block_applies_back_pressure_and_loses_nothing(self):
        """With 'block', the producer waits for a lagging consumer; the buffer never exceeds maxsize."""
        module = Count()
        stream = module.buffered(8, "block").stream(1000)
        buf = stream._buf
        assert wait_until(lambda: buf._producers_waiting == 1)
        assert len(stream) <= 8 and module.produced < 20  # stopped, not racing ahead
        events, peak = [], 0
        for ev in stream:
            peak = max(peak, len(stream))
            events.append(ev)
        assert peak <= 8
        assert chunk_numbers(events) == list(range(1000))
        assert stream.handle.result(5) == "".join(f"{i}," for i in range(1000))
        check_invariants(events)

    def test_drop_oldest_counts_and_keeps_order(self):
        """With 'drop_oldest', old events are dropped and counted; what remains is in order; the run ends ok."""
        module = Count()
        stream = module.buffered(16, "drop_oldest").stream(500)
        assert stream.handle.result(5) is not None  # the producer never waited for us
        events = list(stream)
        assert len(events) == 16 and stream.dropped == 502 - 16  # start + 500 chunks + end
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and events[-1].kind == "end" and events[-1].status == "ok"

    def test_drop_oldest_keeps_exactly_the_newest_events(self):
        """'drop_oldest' keeps the last maxsize events: exactly seq 486..501 of start + 500 chunks + end."""
        stream = Count().buffered(16, "drop_oldest").stream(500)
        assert stream.handle.result(5) is not None
        events = list(stream)
        assert [e.seq for e in events] == list(range(502 - 16, 502))
        assert chunk_numbers(events) == list(range(500 - 15, 500)) and events[-1].kind == "end"

    async def test_drop_oldest_keeps_the_newest_events_of_an_async_producer(self):
        """The same for an async producer with nobody reading until it is done."""
        stream = ACount().buffered(8, "drop_oldest").astream(100)
        assert await stream.handle == "".join(f"{i}," for i in range(100))
        events = [e async for e in stream]
        assert [e.seq for e in events] == list(range(102 - 8, 102)) and stream.dropped == 102 - 8

    @settings(max_examples=40, deadline=None)
    @given(maxsize=st.integers(1, 24), n=st.integers(0, 60))
    def test_property_drop_oldest_keeps_the_last_maxsize_seqs(self, maxsize, n):
        """Property: with nobody reading, the kept events are the last min(maxsize, total) seqs; the rest are counted."""
        stream = Count().buffered(maxsize, "drop_oldest").stream(n)
        stream.handle.result(5)
        total = n + 2  # start + n chunks + end
        kept = [e.seq for e in stream]
        assert kept == list(range(total - min(maxsize, total), total))
        assert stream.dropped == total - len(kept)

    @pytest.mark.parametrize("policy", ["block", "drop_oldest", "error"])
    def test_a_consumer_that_raises_cancels_its_run_once_under_every_policy(self, policy):
        """A reader's own exception leaves its stream: the run is cancelled, ends exactly once, the exception is the reader's."""
        never = threading.Event()

        class Ticking(ModuleBase):
            def forward(self, n):
                for i in range(n):
                    never.wait(0.001)
                    yield f"{i},"

        with capture_events() as events:
            with pytest.raises(KeyError, match="reader bug"), Ticking().buffered(64, policy).stream(10_000) as stream:
                for i, _ in enumerate(stream):
                    if i == 3:
                        raise KeyError("reader bug")
            with pytest.raises(RunCancelled):
                stream.handle.result(10)
        assert [e.status for e in events.of("end")] == ["cancelled"]
        check_invariants(events)

    def test_error_policy_stops_the_stream_not_the_run(self):
        """With 'error', the consumer gets StreamOverflowError after what was buffered; the run ends ok."""
        stream = Count().buffered(10, "error").stream(100)
        assert stream.handle.result(5) == "".join(f"{i}," for i in range(100))
        got = []
        with pytest.raises(StreamOverflowError, match="maxsize=10"):
            for ev in stream:
                got.append(ev)
        assert [e.seq for e in got] == list(range(10))

    @pytest.mark.parametrize("bad", [(0, "block"), (8, "newest")])
    def test_bad_buffer_arguments(self, bad):
        """A bad size or policy is a clear error naming the value."""
        with pytest.raises(UsageError, match="maxsize|policy"):
            Count().buffered(*bad)

    async def test_block_with_async_producer_on_the_consumer_loop(self):
        """An async producer on the consumer's own loop awaits room instead of deadlocking."""
        stream = ACount().buffered(4, "block").astream(300)
        peak, events = 0, []
        async for ev in stream:
            peak = max(peak, len(stream))
            events.append(ev)
        assert chunk_numbers(events) == list(range(300))
        assert peak <= 5  # at most one over while the producer reaches its await
        check_invariants(events)


class TestAcrossThreadsAndLoops:
    def test_consumer_thread_producer_asyncio(self):
        """The producer runs in an asyncio loop; a plain thread consumes its stream."""
        results: dict[str, object] = {}

        async def produce():
            stream = ACount().astream(200)
            # hand the stream to a consumer thread and wait for it without blocking the loop
            results["events"] = await asyncio.to_thread(lambda: list(stream))

        asyncio.run(produce())
        events = results["events"]
        assert chunk_numbers(events) == list(range(200))
        check_invariants(events)

    async def test_consumer_asyncio_producer_thread(self):
        """A sync module in a worker thread, consumed with async for on the loop."""
        loop_thread = threading.get_ident()
        producer_threads = set()

        class Sync(ModuleBase):
            def forward(self, n):
                for i in range(n):
                    producer_threads.add(threading.get_ident())
                    yield f"{i},"

        events = [ev async for ev in Sync().astream(200)]
        assert chunk_numbers(events) == list(range(200))
        assert producer_threads and loop_thread not in producer_threads
        check_invariants(events)

    def test_stream_read_from_another_thread(self):
        """module.stream() in one thread, iterated in another: no special thread pool needed."""
        stream = Count().stream(100)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            events = pool.submit(list, stream).result(10)
        assert chunk_numbers(events) == list(range(100))


class TestFilters:
    class Tree(ModuleBase):
        kind = "agent"
        tags = ("top",)

        def forward(self, q):
            Think()(q)
            return Speak()(q)

    def events_of(self, view) -> list:
        return list(view)

    def test_text_only_user_facing(self):
        """text() yields the deltas of 'text' chunks only, from the whole tree."""
        assert list(self.Tree().stream("hi").text()) == ["Hello ", "hi"]

    def test_filters(self):
        """kinds, channels, names, tags, run_kinds and exclude_names combine."""
        tree = self.Tree()
        assert [e.delta for e in tree.stream("x").filter(channels="reasoning", kinds="chunk")] == ["pondering x"]
        assert {e.run.name for e in tree.stream("x").filter(names=["Speak"])} == {"Speak"}
        assert {e.run.name for e in tree.stream("x").filter(run_kinds="llm")} == {"Speak", "Think"}
        assert {e.run.name for e in tree.stream("x").filter(exclude_names="Think")} == {"Tree", "Speak"}
        assert {e.run.name for e in tree.stream("x").filter(tags="voice")} == {"Speak"}
        assert len(list(tree.stream("x").filter(tags="top"))) == 9  # tags are inherited
        assert list(tree.stream("x").filter(run_kinds="llm").text()) == ["Hello ", "x"]

    async def test_async_views(self):
        """Views iterate with async for too."""
        assert [d async for d in self.Tree().astream("y").text()] == ["Hello ", "y"]


class Think(ModuleBase):
    kind = "llm"

    def forward(self, q):
        from streamtap import Delta

        yield Delta(f"pondering {q}", "reasoning")


class Speak(ModuleBase):
    kind = "llm"
    tags = ("voice",)

    def forward(self, q):
        yield "Hello "
        yield q


class TestHandles:
    def test_start_result_and_events(self):
        """start() runs in the background; events() reads it; result() returns the output."""
        handle = Count().start(5)
        assert handle.result(5) == "0,1,2,3,4,"
        assert handle.done()
        assert chunk_numbers(handle.events()) == [0, 1, 2, 3, 4]

    def test_cancel_from_another_thread(self):
        """cancel() from any thread stops a sync run at its next chunk; result() raises RunCancelled."""
        gate = threading.Event()

        class Waits(ModuleBase):
            def forward(self):
                yield "first"
                gate.wait(5)
                yield "second"

        handle = Waits().start()
        stream = handle.events()
        assert next(stream).kind == "start" and next(stream).delta == "first"
        threading.Thread(target=handle.cancel, args=("user pressed stop",)).start()
        assert wait_until(lambda: handle.cancelled)
        gate.set()
        with pytest.raises(RunCancelled, match="user pressed stop"):
            handle.result(5)
        rest = list(stream)
        assert [e.kind for e in rest] == ["end"] and rest[0].status == "cancelled"

    async def test_await_handle_and_cancel_task(self):
        """astart() returns an awaitable handle; cancel() cancels the task at once."""
        started = asyncio.Event()

        class Forever(ModuleBase):
            async def forward(self):
                started.set()
                await asyncio.Event().wait()

        handle = Forever().astart()
        assert await Count().astart(3) == "0,1,2,"
        await started.wait()
        handle.cancel()
        with pytest.raises(RunCancelled):
            await handle
        ends = [e for e in handle.events() if e.kind == "end"]
        assert ends[0].status == "cancelled"

    def test_events_stream_does_not_own_the_run(self):
        """Leaving a stream got from handle.events() leaves the run to its handle."""
        handle = Count().buffered(4).start(50)
        with handle.events() as stream:
            next(stream)
        assert handle.result(5).startswith("0,1,")
        assert not handle.cancelled

    def test_stream_context_manager_cancels(self):
        """Leaving a module.stream() with-block before the end cancels the run."""
        with Count().buffered(4).stream(10_000) as stream:
            next(stream)
        with pytest.raises(RunCancelled):
            stream.handle.result(5)

    def test_stream_result(self):
        """stream.result() drains and returns the call's output."""
        assert Count().stream(3).result(5) == "0,1,2,"

    def test_run_id_known_before_start(self):
        """The handle's run id is the root run's id."""
        handle = Count().start(1)
        events = list(handle.events())
        assert events[0].run.run_id == handle.run_id == events[0].run.root_id


class TestMemory:
    def test_memory_does_not_grow_with_stream_length(self):
        """Streaming 200,000 chunks holds no more than the buffer (join_output=False)."""
        import tracemalloc

        class Endless(ModuleBase):
            join_output = False

            def forward(self, n):
                for _ in range(n):
                    yield "x"

        tracemalloc.start()
        try:
            samples = []
            for i, _ in enumerate(Endless().stream(200_000)):
                if i in (20_000, 190_000):
                    samples.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        assert samples[1] - samples[0] < 512 * 1024


class TestConcurrencyRegressions:
    """Cases found by an adversarial review of the buffer and run lifecycle; each once hung or lost events."""

    def test_async_producer_with_a_lagging_reader_in_another_thread(self):
        """An async-generator module with a small 'block' buffer, read late from this thread, delivers everything."""
        stream = ACount().buffered(8).stream(2000)
        assert wait_until(lambda: len(stream) >= 8)  # the producer is now held back
        assert chunk_numbers(stream) == list(range(2000))

    @pytest.mark.parametrize("policy", ["drop_oldest", "error"])
    def test_async_producer_never_waits_under_non_blocking_policies(self, policy):
        """With drop_oldest or error, an async producer finishes with nobody reading."""
        handle = ACount().buffered(4, policy).start(200)
        assert handle.result(5) == "".join(f"{i}," for i in range(200))

    async def test_two_async_producers_on_the_reader_loop(self):
        """Two async children streaming at once into a tiny buffer both get through (no lost room wakeup)."""

        class Both(ModuleBase):
            async def forward(self, n):
                await asyncio.gather(ACount().acall(n), ACount().acall(n))

        events = [ev async for ev in Both().buffered(2).astream(100)]
        assert len(chunk_numbers(events)) == 200
        check_invariants(events)

    @pytest.mark.parametrize("maxsize", [2, 1024])
    def test_a_stream_read_inside_a_run(self, maxsize):
        """A forward that reads a child's stream and re-yields it does not deadlock on the root lock."""

        class Child(ModuleBase):
            def forward(self, n):
                for _ in range(n):
                    yield "c"

        class Parent(ModuleBase):
            def forward(self, n):
                for piece in Child().buffered(maxsize).stream(n).text():
                    yield piece.upper()

        stream = Parent().stream(2000)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pieces = pool.submit(lambda: list(stream.text())).result(10)
        assert "".join(pieces).count("C") == 2000 and "".join(pieces).count("c") == 2000

    def test_cancel_releases_a_producer_blocked_on_a_full_buffer(self):
        """start() with nobody reading fills the buffer; cancel() still ends the run at once."""
        handle = Count().buffered(4).start(10_000)
        assert wait_until(lambda: handle._buffer._producers_waiting >= 1)
        handle.cancel("stop")
        with pytest.raises(RunCancelled):
            handle.result(5)
        assert [e.status for e in handle.events() if e.kind == "end"] == ["cancelled"]

    async def test_astart_cancelled_before_its_first_step(self):
        """A task cancelled before it ran still finishes its stream: the reader does not hang."""
        handle = ACount().astart(5)
        handle.cancel()
        with pytest.raises(RunCancelled):
            await handle
        assert [ev async for ev in handle.events()] == []

    async def test_two_async_readers_of_one_buffer_both_finish(self):
        """Every async reader waiting on a buffer is woken, not only the last one."""
        handle = ACount().astart(20)

        async def read():
            return [ev async for ev in handle.events()]

        a, b = await asyncio.wait_for(asyncio.gather(read(), read()), 5)
        assert len(a) + len(b) == 22

    def test_reader_on_another_loop_than_the_producer(self):
        """astart() on loop A, read with async for on loop B in another thread: every event arrives."""
        ready, box, got = threading.Event(), {}, []

        def loop_a():
            async def main():
                box["h"] = ACount().astart(20)
                ready.set()
                await box["h"]

            asyncio.run(main())

        ta = threading.Thread(target=loop_a)
        ta.start()
        assert ready.wait(5)

        async def reader():
            async for ev in box["h"].events():
                got.append(ev)

        tb = threading.Thread(target=lambda: asyncio.run(reader()))
        tb.start()
        ta.join(5)
        tb.join(5)
        assert not ta.is_alive() and not tb.is_alive() and len(got) == 22

    async def test_close_wakes_an_async_reader(self):
        """close() on a stream ends an `async for` that is waiting on it."""
        gate = asyncio.Event()

        class Waits(ModuleBase):
            async def forward(self):
                yield "a"
                await gate.wait()

        handle = Waits().astart()
        stream = handle.events()
        seen = []

        async def read():
            async for ev in stream:
                seen.append(ev.kind)

        reader = asyncio.create_task(read())
        while len(seen) < 2:
            await asyncio.sleep(0)
        stream.close()
        await asyncio.wait_for(reader, 5)
        handle.cancel()
        with pytest.raises(RunCancelled):
            await handle

    async def test_sync_iteration_of_a_stream_fed_by_this_loop_is_an_error(self):
        """A plain `for` over an astream() on its own loop would block forever: it is a clear error instead."""
        stream = ACount().astream(3)
        with pytest.raises(UsageError, match="async for"):
            list(stream)
        stream.close()


class ASleeps(ModuleBase):
    async def forward(self, delay: float):
        await asyncio.sleep(delay)
        return "done"


class TestAstartResult:
    async def test_result_from_another_thread_waits_for_the_task(self):
        """handle.result() of an astart() run, called from another thread, waits for the task."""
        handle = ASleeps().astart(0.05)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            out = pool.submit(handle.result, 5)
            assert await handle == "done"
            assert await asyncio.wrap_future(out) == "done"

    async def test_result_from_another_thread_keeps_its_timeout(self):
        handle = ASleeps().astart(30)

        def wait_briefly() -> float:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                handle.result(0.05)
            return time.monotonic() - t0

        assert await asyncio.to_thread(wait_briefly) < 5
        handle.cancel("done testing")
        with pytest.raises(RunCancelled):
            await handle

    async def test_result_after_cancel_raises_run_cancelled(self):
        """A cancelled astart() run's result() raises RunCancelled(reason), on the loop's thread or another."""
        handle = ASleeps().astart(30)
        await asyncio.sleep(0)
        handle.cancel("stop")
        with pytest.raises(RunCancelled):
            await handle
        with pytest.raises(RunCancelled, match="stop"):
            handle.result()

        def other() -> None:
            with pytest.raises(RunCancelled, match="stop"):
                handle.result(5)

        await asyncio.to_thread(other)

    async def test_result_on_the_task_loop_thread_is_still_a_usage_error(self):
        handle = ASleeps().astart(0.01)
        with pytest.raises(UsageError, match="await handle"):
            handle.result(1)
        assert await handle == "done"


@pytest.mark.parametrize("module", [Count, ACount])
def test_closing_the_owner_after_a_view_still_cancels_the_run(module):
    """Closing handle.events() first leaves the owning stream's close() its cancel (and, read, its abandon)."""
    with capture_events() as seen:
        stream = module().stream(100_000)
        next(stream), next(stream)  # the reader has the run (same-thread stream for Count)
        stream.handle.events().close()
        stream.close()
        assert stream.handle.cancelled
        with pytest.raises(RunCancelled):
            stream.handle.result(5)
    assert [e.status for e in seen.of("end")] == ["cancelled"]
    check_invariants(seen)
