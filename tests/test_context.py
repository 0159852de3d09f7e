"""The current run follows the context across await, tasks, generators and threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import typing as t

import pytest

import streamtap
from streamtap import Executor, ModuleBase, UsageError, current, emit, propagate, wrap
from streamtap.context import CancelToken
from streamtap.testing import capture_events, check_invariants


class Leaf(ModuleBase):
    def forward(self, label: str):
        yield label


class ALeaf(ModuleBase):
    async def forward(self, label: str):
        await asyncio.sleep(0)
        yield label


def _label(events, run_id: str) -> str:
    """A run's label: its string input, else its name."""
    start = next(e for e in events.of("start") if e.run.run_id == run_id)
    return start.inputs if isinstance(start.inputs, str) else start.run.name


def parent_names(events) -> dict[str, str | None]:
    """Label of each run -> label of its parent (None for a root)."""
    return {
        _label(events, r.run_id): None if r.parent_id is None else _label(events, r.parent_id)
        for r in events.runs().values()
    }


class TestCurrent:
    def test_none_outside_a_run(self):
        """Outside any module there is no current run, and emit() says so."""
        assert current() is None
        with pytest.raises(UsageError, match="outside any module run"):
            emit("progress", 1)

    def test_current_inside_forward(self):
        """Inside forward(), current() is this call's run."""
        seen = {}

        class M(ModuleBase):
            def forward(self):
                seen["run"] = current().run
                emit("progress", {"pct": 50})

        with capture_events() as events:
            M()()
        assert seen["run"].run_id == events.of("start")[0].run.run_id
        assert events.of("custom")[0].data == {"pct": 50}
        assert current() is None


class TestAsync:
    async def test_tasks_and_gather_nest(self):
        """Children started with create_task and gather are children of the run that started them."""

        class Outer(ModuleBase):
            async def forward(self, label: str):
                t1 = asyncio.create_task(ALeaf().acall("task"))
                r = await asyncio.gather(ALeaf().acall("g1"), ALeaf().acall("g2"))
                return [await t1, *r]

        with capture_events() as events:
            assert await Outer().acall("outer") == ["task", "g1", "g2"]
        check_invariants(events)
        assert parent_names(events) == {"outer": None, "task": "outer", "g1": "outer", "g2": "outer"}

    async def test_async_generator_children(self):
        """A module called from inside an async generator forward nests under it."""

        class Outer(ModuleBase):
            async def forward(self, label: str):
                yield await ALeaf().acall("inner")

        with capture_events() as events:
            await Outer().acall("outer")
        assert parent_names(events) == {"outer": None, "inner": "outer"}

    async def test_to_thread_copies_context(self):
        """asyncio.to_thread carries the run by itself."""

        class Outer(ModuleBase):
            async def forward(self, label: str):
                return await asyncio.to_thread(Leaf(), "thread")

        with capture_events() as events:
            await Outer().acall("outer")
        assert parent_names(events) == {"outer": None, "thread": "outer"}


class TestThreads:
    def test_sdk_executor_and_propagate_and_wrap(self):
        """Executor, propagate(ThreadPoolExecutor) and wrap(fn) carry the run into threads."""

        class Outer(ModuleBase):
            def forward(self, label: str):
                with Executor(2) as ex:
                    a = ex.submit(Leaf(), "executor").result()
                with propagate(concurrent.futures.ThreadPoolExecutor(2)) as pool:
                    b = list(pool.map(Leaf(), ["map1", "map2"]))
                out = []
                th = threading.Thread(target=wrap(lambda: out.append(Leaf()("wrapped"))))
                th.start()
                th.join()
                return [a, *b, *out]

        with capture_events() as events:
            assert Outer()("outer") == ["executor", "map1", "map2", "wrapped"]
        check_invariants(events)
        assert parent_names(events) == {
            "outer": None,
            "executor": "outer",
            "map1": "outer",
            "map2": "outer",
            "wrapped": "outer",
        }

    def test_plain_thread_starts_a_new_root(self):
        """A plain Thread without wrap() starts empty: its module call is a root of its own (documented)."""

        class Outer(ModuleBase):
            def forward(self, label: str):
                th = threading.Thread(target=Leaf(), args=("plain",))
                th.start()
                th.join()

        with capture_events() as events:
            Outer()("outer")
        assert parent_names(events) == {"outer": None, "plain": None}

    def test_propagate_is_idempotent(self):
        """propagate() twice does not wrap twice."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            assert propagate(propagate(pool)) is pool
        finally:
            pool.shutdown()


class TestIsolation:
    def test_concurrent_runs_never_mix(self):
        """Two runs streaming at the same time in different threads see only their own events."""
        barrier = threading.Barrier(2)

        class Talk(ModuleBase):
            def forward(self, who: str):
                barrier.wait(5)
                for i in range(200):
                    yield f"{who}{i} "

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            fa = pool.submit(lambda: list(Talk().stream("a")))
            fb = pool.submit(lambda: list(Talk().stream("b")))
            ea, eb = fa.result(10), fb.result(10)
        for events, who in ((ea, "a"), (eb, "b")):
            assert len({e.run.root_id for e in events}) == 1
            text = "".join(e.delta for e in events if e.kind == "chunk")
            assert text == "".join(f"{who}{i} " for i in range(200))
            assert [e.seq for e in events] == list(range(len(events)))


class TestCancelToken:
    def test_callbacks_children_and_isolation(self, caplog):
        """cancel() runs every callback even if one raises, and cancels children; only once."""
        token = CancelToken()
        child = token.child()
        calls = []
        token.add_callback(lambda: calls.append("a"))
        token.add_callback(lambda: 1 / 0)
        token.add_callback(lambda: calls.append("b"))
        assert token.cancel("stop") is True
        assert token.cancel() is False
        assert calls == ["a", "b"] and child.cancelled and child.reason == "stop"
        late = []
        token.add_callback(lambda: late.append(1))
        assert late == [1]
        assert "cancel callback" in caplog.text

    def test_remover(self):
        """A removed callback is not called."""
        token = CancelToken()
        calls = []
        remove = token.add_callback(lambda: calls.append(1))
        remove()
        token.cancel()
        assert calls == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_background_work_and_unread_streams() -> None:
    class Count(streamtap.ModuleBase):
        def forward(self, n: int) -> t.Iterator[str]:
            for i in range(n):
                yield str(i)

    Count().start(3).result(10)  # the parent's pool and claim timer exist now
    Count().stream(2).result()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a background run, and a stream nobody reads for a while, must still run
        os.close(read)
        try:
            a = Count().start(3).result(5)
            s = Count().stream(4)
            handle = s.handle
            b = handle.result(5)  # nobody iterates: the claim timer hands it to the pool
            os.write(write, f"{a} {b}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    assert out == "012 0123"
