"""Batch nodes: sequential and concurrent, streaming per item, flat over 100,000 items."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import typing as t

import pytest

import streamtap
from streamtap.flows import AsyncFlow, AsyncParallelBatchNode, BatchNode, Flow, ParallelBatchNode
from streamtap.testing import capture_events, check_invariants


class Square(BatchNode):
    blocking = False

    def prep(self, shared: dict[str, t.Any]) -> t.Iterable[int]:
        return range(shared["n"])  # a lazy iterable: items are never all in memory

    def exec(self, item: int) -> int:
        return item * item

    def post(self, shared: dict[str, t.Any], p: t.Any, results: list[int]) -> None:
        shared["sum"] = sum(results)


def _limited(fn: t.Callable[[], t.Any]) -> t.Any:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        return fn()
    finally:
        sys.setrecursionlimit(old)


def test_batch_of_100000_items_runs_flat() -> None:
    shared = {"n": 100_000}
    out = _limited(lambda: Flow(Square())(shared))
    assert len(out) == 100_000 and out[-1] == 99_999**2
    assert shared["sum"] == sum(i * i for i in range(100_000))


class ASquare(AsyncParallelBatchNode):
    concurrency = 8

    async def prep_async(self, shared: dict[str, t.Any]) -> t.Iterable[int]:
        return range(shared["n"])

    async def exec_async(self, item: int) -> int:
        if item % 1000 == 0:
            await asyncio.sleep(0)
        return item * item


async def test_concurrent_async_batch_of_100000_items_runs_flat_with_bounded_tasks() -> None:
    shared = {"n": 100_000}
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    most = 0

    class Watch(ASquare):
        async def exec_async(self, item: int) -> int:
            nonlocal most
            if item % 5000 == 0:
                most = max(most, len(asyncio.all_tasks()))
                await asyncio.sleep(0)
            return item * item

    try:
        out = await AsyncFlow(Watch()).acall(shared)
    finally:
        sys.setrecursionlimit(old)
    assert out == [i * i for i in range(100_000)]
    assert most <= 8 + 3  # the workers, the test's task and the flow's: never one task per item


async def test_concurrent_async_batch_really_overlaps_and_streams_per_item() -> None:
    running = 0
    peak = 0

    class Slowish(AsyncParallelBatchNode):
        concurrency = 4

        async def prep_async(self, shared: t.Any) -> list[str]:
            return ["a", "b", "c", "d", "e", "f"]

        async def exec_async(self, item: str) -> t.AsyncIterator[str]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            yield item
            yield item.upper()
            running -= 1

    stream = AsyncFlow(Slowish()).astream({})
    events = [e async for e in stream]
    check_invariants(events)
    assert await stream.handle == ["aA", "bB", "cC", "dD", "eE", "fF"]
    assert peak == 4
    chunks = [e.delta for e in events if e.kind == "chunk"]
    assert sorted(chunks) == sorted("aAbBcCdDeEfF")
    assert {e.run.name for e in events if e.kind == "chunk"} == {"Slowish"}


def test_parallel_batch_node_uses_a_bounded_pool_that_goes_away() -> None:
    names: set[str] = set()
    lock = threading.Lock()
    gate = threading.Barrier(3)

    class Fetch(ParallelBatchNode):
        max_workers = 3

        def prep(self, shared: t.Any) -> range:
            return range(30)

        def exec(self, item: int) -> t.Iterator[str]:
            with lock:
                names.add(threading.current_thread().name)
            if item < 3:
                gate.wait(timeout=5)  # the first three items run at the same time, or this times out
            streamtap.current().emit("progress", item)  # type: ignore[union-attr]
            yield f"{item};"
            return item * 2

    before = set(threading.enumerate())
    with capture_events() as events:
        out = Flow(Fetch())({})
    check_invariants(events)
    assert out == [i * 2 for i in range(30)]
    assert len(names) == 3 and all(n.startswith("streamtap-batch") for n in names)
    assert sorted(e.data for e in events.of("custom") if isinstance(e.data, int)) == list(range(30))  # the node's own
    assert sorted(e.delta for e in events.of("chunk")) == sorted(f"{i};" for i in range(30))
    assert set(threading.enumerate()) - before == set()


def test_a_failing_item_fails_the_batch_after_the_running_ones_end() -> None:
    class Boom(ParallelBatchNode):
        max_workers = 2

        def prep(self, shared: t.Any) -> range:
            return range(100)

        def exec(self, item: int) -> int:
            if item == 5:
                raise ValueError("item 5 is bad")
            time.sleep(0.001)
            return item

    with capture_events() as events, pytest.raises(ValueError, match="item 5 is bad"):
        Flow(Boom())({})
    check_invariants(events)
    assert [e.status for e in events.of("end")] == ["error", "error"]


class TestBatchProgress:
    """Batch nodes send progress (done / total) by themselves: no hand-written emit."""

    @staticmethod
    def _progress(events: t.Any, name: str) -> list[tuple[int, t.Any]]:
        return [
            (e.data["done"], e.data["total"])
            for e in events.of("custom")
            if e.name == "progress" and e.run.name == name
        ]

    def test_a_10000_item_batch_reports_about_a_hundred_steps(self) -> None:
        """0/N first, N/N last, counts only grow, and the number of events stays near 100 (not 10,000)."""

        class Square(BatchNode):
            def prep(self, shared: t.Any) -> range:
                return range(10_000)

            def exec(self, item: int) -> int:
                return item * item

        with capture_events() as events:
            out = Flow(Square())({})
        assert len(out) == 10_000
        steps = self._progress(events, "Square")
        assert steps[0] == (0, 10_000) and steps[-1] == (10_000, 10_000)
        assert [d for d, _ in steps] == sorted({d for d, _ in steps})
        assert 90 <= len(steps) <= 110

    def test_items_from_a_generator_report_the_total_at_the_end(self) -> None:
        """Unknown length: total is None while running and the count at the end."""

        class Lines(BatchNode):
            def prep(self, shared: t.Any) -> t.Iterator[str]:
                return (f"line {i}" for i in range(25))

            def exec(self, item: str) -> int:
                return len(item)

        with capture_events() as events:
            Flow(Lines())({})
        steps = self._progress(events, "Lines")
        assert steps[0] == (0, None) and steps[-1] == (25, 25)
        assert all(total is None for _, total in steps[:-1])

    def test_parallel_and_async_batches_report_too(self) -> None:
        """ParallelBatchNode and AsyncParallelBatchNode count every finished item."""

        class Par(ParallelBatchNode):
            max_workers = 4

            def prep(self, shared: t.Any) -> list[int]:
                return list(range(12))

            def exec(self, item: int) -> int:
                return item

        class APar(AsyncParallelBatchNode):
            async def prep_async(self, shared: t.Any) -> list[int]:
                return list(range(7))

            async def exec_async(self, item: int) -> int:
                await asyncio.sleep(0)
                return item

        with capture_events() as events:
            Flow(Par())({})
            asyncio.run(AsyncFlow(APar()).acall({}))
        assert [d for d, _ in self._progress(events, "Par")] == list(range(13))
        assert self._progress(events, "APar")[-1] == (7, 7) and len(self._progress(events, "APar")) == 8

    def test_the_page_gets_one_progress_bar_per_batch(self) -> None:
        """The web mapper sends data-progress parts keyed by the node's run, so each replaces the last."""
        from streamtap.web.ui_stream import UIMessageMapper

        class Few(BatchNode):
            def prep(self, shared: t.Any) -> list[int]:
                return [1, 2, 3]

        flow = Flow(Few())
        events = list(flow.stream({}))
        mapper = UIMessageMapper(events[0].run.root_id)
        parts = [p for ev in events for p in mapper.feed(ev.to_dict()) if p["type"] == "data-progress"]
        assert [p["data"] for p in parts] == [{"done": i, "total": 3} for i in range(4)]
        assert len({p["id"] for p in parts}) == 1
