"""Cancellation and timeouts: stop reaches the model's HTTP stream, every open run ends, nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import typing as t

import pytest

import streamtap
from streamtap import RunCancelled
from streamtap.flows import AsyncFlow, AsyncNode, AsyncParallel, Flow, FlowTimeout, Node, ParallelBatchNode, Sequential
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.testing import FakeOpenAI, capture_events, check_invariants

LONG_PROMPT = "tell me " + "a very long story " * 150  # echoed back token by token: seconds of streaming


@pytest.fixture(scope="module")
def server() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI(token_delay=0.01) as srv:
        yield srv


class Plan(Node):
    """Streams the plan from the model (the model's chunks are a child run of this node)."""

    def __init__(self, llm: OpenAIChat) -> None:
        super().__init__()
        self.llm = llm

    def exec(self, prep_res: t.Any) -> t.Any:
        return self.llm(LONG_PROMPT)


class APlan(AsyncNode):
    def __init__(self, llm: AsyncOpenAIChat) -> None:
        super().__init__()
        self.llm = llm

    async def exec_async(self, prep_res: t.Any) -> t.Any:
        return await self.llm.acall(LONG_PROMPT)


def _first_model_chunk(events: t.Iterable[t.Any]) -> None:
    for ev in events:
        if ev.kind == "chunk" and ev.run.kind == "llm":
            return
    raise AssertionError("the model never streamed")


def _warm(flow: t.Any, *, model: bool = False) -> None:
    """Run to the model's first chunk and cancel once, so that the SDK's thread pools have their
    workers (the run's, and the one a cancellable model request waits in): a leaked thread would then show."""
    stream = flow.stream({})
    if model:
        _first_model_chunk(stream)
    stream.close()
    with contextlib.suppress(RunCancelled):
        stream.handle.result(timeout=5)


def _closed_after(server: FakeOpenAI, first_index: int) -> t.Any:
    return server.wait_for(lambda r: r.index >= first_index and r.closed_early)


def _assert_all_cancelled(events: list[t.Any], names: list[str]) -> None:
    check_invariants(events)
    ends = [(e.run.name, e.status) for e in events if e.kind == "end"]
    assert ends == [(n, "cancelled") for n in names]


def test_cancel_from_another_thread_closes_the_model_stream_within_100ms(server: FakeOpenAI) -> None:
    llm = OpenAIChat(model="fake-gpt", base_url=server.base_url, api_key="k")
    flow = Flow(Plan(llm), name="Agent")
    _warm(flow, model=True)
    baseline = set(threading.enumerate())
    first = len(server.records)
    with capture_events() as events:
        stream = flow.stream({})
        _first_model_chunk(stream)
        cancelled_at: list[float] = []

        def press_stop() -> None:
            cancelled_at.append(time.monotonic())
            stream.handle.cancel("stop pressed")

        stopper = threading.Thread(target=press_stop)
        stopper.start()
        stopper.join()
        record = _closed_after(server, first)
        with pytest.raises(RunCancelled, match="stop pressed"):
            stream.handle.result(timeout=5)
        list(stream)
    latency = t.cast(float, record.finished_at) - cancelled_at[0]
    assert 0 <= latency < 0.1, f"the server saw the stream closed {latency * 1000:.1f} ms after cancel"
    assert record.chunks_sent < 100  # it was mid-answer
    _assert_all_cancelled(list(events), ["OpenAIChat", "Plan", "Agent"])
    assert set(threading.enumerate()) == baseline


async def test_cancel_from_another_task_closes_the_model_stream_within_100ms(server: FakeOpenAI) -> None:
    llm = AsyncOpenAIChat(model="fake-gpt", base_url=server.base_url, api_key="k")
    flow = AsyncFlow(APlan(llm), name="AsyncAgent")
    await llm.acall("hi")  # warm up: the client's connection pool and the loop's resolver thread
    baseline_tasks = asyncio.all_tasks()
    baseline_threads = set(threading.enumerate())
    first = len(server.records)
    with capture_events() as events:
        handle = flow.astart({})
        cancelled_at: list[float] = []

        async def press_stop() -> None:
            async for ev in handle.events():
                if ev.kind == "chunk" and ev.run.kind == "llm":
                    break
            cancelled_at.append(time.monotonic())
            handle.cancel("stop pressed")

        await asyncio.create_task(press_stop())
        with pytest.raises(RunCancelled):
            await handle
        async for _ in handle.events():
            pass
    record = _closed_after(server, first)  # already recorded by now: the wait returns at once
    latency = t.cast(float, record.finished_at) - cancelled_at[0]
    assert 0 <= latency < 0.1, f"the server saw the stream closed {latency * 1000:.1f} ms after cancel"
    _assert_all_cancelled(list(events), ["AsyncOpenAIChat", "APlan", "AsyncAgent"])
    await asyncio.sleep(0)  # let finished tasks be collected by the loop
    assert asyncio.all_tasks() == baseline_tasks
    assert set(threading.enumerate()) == baseline_threads


def test_running_sync_tools_see_the_cooperative_flag_and_pool_threads_go_away() -> None:
    saw: list[int] = []
    started = threading.Barrier(3)

    class Tool(ParallelBatchNode):
        max_workers = 2

        def prep(self, shared: t.Any) -> range:
            return range(10)

        def exec(self, item: int) -> None:
            ctx = streamtap.current()
            assert ctx is not None
            if item < 2:
                started.wait(timeout=5)
            try:
                while True:  # a long computation that checks the flag
                    ctx.raise_if_cancelled()
                    time.sleep(0.001)
            finally:
                saw.append(item)

    flow = Flow(Tool(), name="Tools")
    _warm(flow)
    saw.clear()
    started = threading.Barrier(3)
    baseline = set(threading.enumerate())
    with capture_events() as events:
        handle = flow.start({})
        started.wait(timeout=5)
        handle.cancel()
        with pytest.raises(RunCancelled):
            handle.result(timeout=5)
    assert sorted(saw) == [0, 1]  # the two running items stopped; the others never started
    _assert_all_cancelled(list(events), ["Tool", "Tools"])
    assert set(threading.enumerate()) == baseline


async def test_running_async_tools_get_cancelled_error() -> None:
    got: list[str] = []
    entered = asyncio.Event()

    class Wait(AsyncNode):
        async def exec_async(self, p: t.Any) -> None:
            try:
                entered.set()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                got.append(self.name or "")
                raise

    flow = AsyncParallel(Wait(name="w1"), Wait(name="w2"), name="Both")
    before = asyncio.all_tasks()
    with capture_events() as events:
        handle = flow.astart({})
        await entered.wait()
        await asyncio.sleep(0)
        threading.Thread(target=handle.cancel).start()  # from another thread, too
        with pytest.raises(RunCancelled):
            await handle
    assert sorted(got) == ["w1", "w2"]
    check_invariants(events)
    assert {(e.run.name, e.status) for e in events.of("end")} == {
        ("w1", "cancelled"),
        ("w2", "cancelled"),
        ("Both", "cancelled"),
    }
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


# -- timeouts -----------------------------------------------------------------


class Ticker(Node):
    """Streams a tick every 5 ms, forever: stops only when cancelled."""

    def exec(self, p: t.Any) -> t.Iterator[str]:
        while True:
            time.sleep(0.005)
            yield "tick "


def test_node_timeout_cancels_the_node_and_fails_the_flow_clearly() -> None:
    ticker = Ticker(timeout=0.05)
    with (
        capture_events() as events,
        pytest.raises(FlowTimeout, match=r"Ticker timed out after 0.05 s; it was cancelled"),
    ):
        Flow(ticker, name="Timed")({})
    check_invariants(events)
    ends = {e.run.name: e for e in events.of("end")}
    assert ends["Ticker"].status == "cancelled" and "timed out after 0.05 s" in ends["Ticker"].error.message
    assert ends["Timed"].status == "error" and ends["Timed"].error.type.endswith("FlowTimeout")


def test_run_timeout_of_a_root_flow() -> None:
    first = Node(name="Quick")
    first >> Ticker()
    flow = Flow(first, name="Budget", timeout=0.05)
    t0 = time.monotonic()
    with capture_events() as events, pytest.raises(FlowTimeout, match="Budget timed out after 0.05 s"):
        flow({})
    assert time.monotonic() - t0 < 1
    check_invariants(events)
    assert [(e.run.name, e.status) for e in events.of("end")] == [
        ("Quick", "ok"),
        ("Ticker", "cancelled"),
        ("Budget", "error"),
    ]


async def test_async_node_and_run_timeouts() -> None:
    class Sleepy(AsyncNode):
        async def exec_async(self, p: t.Any) -> None:
            await asyncio.sleep(30)

    with capture_events() as events, pytest.raises(FlowTimeout, match="Sleepy timed out after 0.05 s"):
        await AsyncFlow(Sleepy(timeout=0.05), name="A").acall({})
    check_invariants(events)
    assert [(e.run.name, e.status) for e in events.of("end")] == [("Sleepy", "cancelled"), ("A", "error")]
    before = asyncio.all_tasks()
    with capture_events() as events, pytest.raises(FlowTimeout, match="B timed out after 0.05 s"):
        await AsyncFlow(Sleepy(), name="B", timeout=0.05).acall({})
    check_invariants(events)
    assert [(e.run.name, e.status) for e in events.of("end")] == [("Sleepy", "cancelled"), ("B", "error")]
    assert asyncio.all_tasks() == before


def test_a_step_timeout_in_a_sequence() -> None:
    seq = Sequential(Node(name="Fast"), Ticker(name="Slow", timeout=0.05), name="Seq")
    with pytest.raises(FlowTimeout, match="Slow timed out"):
        seq({})


def test_a_cancelled_exec_is_not_retried_or_sent_to_the_fallback() -> None:
    calls: list[str] = []

    class Stubborn(Node):
        def exec(self, p: t.Any) -> t.Iterator[str]:
            calls.append("exec")
            while True:
                time.sleep(0.002)
                yield "."

        def exec_fallback(self, p: t.Any, exc: Exception) -> str:
            calls.append("fallback")
            return "fallback"

    handle = Flow(Stubborn(max_retries=3)).start({})
    next(iter(handle.events()))
    handle.cancel()
    with pytest.raises(RunCancelled):
        handle.result(timeout=5)
    assert calls == ["exec"]


def test_run_timeout_of_a_flow_started_in_the_background() -> None:
    handle = Flow(Ticker(), name="Background", timeout=0.05).start({})
    with pytest.raises(FlowTimeout, match="Background timed out after 0.05 s"):
        handle.result(timeout=5)  # the run's own TimeoutError, not "did not finish within 5 s"
