"""Graph flows: wiring, actions, streaming from every node with its identity, nesting, flat orchestration."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
import typing as t

import pytest

import streamtap
from streamtap import Delta, UsageError
from streamtap.flows import AsyncFlow, AsyncNode, BaseNode, Flow, Node
from streamtap.testing import capture_events, check_invariants


class Plan(Node):
    """Streams a plan, then loops to Act until the budget is spent."""

    def prep(self, shared: dict[str, t.Any]) -> int:
        return int(shared["round"])

    def exec(self, n: int) -> t.Iterator[t.Any]:
        yield f"plan {n}: "
        yield Delta("thinking", "reasoning")
        yield "look"

    def post(self, shared: dict[str, t.Any], prep_res: int, exec_res: str) -> str:
        shared.setdefault("plans", []).append(exec_res)
        return "act" if shared["round"] < 2 else "answer"


class Act(Node):
    def exec(self, prep_res: t.Any) -> str:
        return "acted"

    def post(self, shared: dict[str, t.Any], prep_res: t.Any, exec_res: str) -> None:
        shared["round"] += 1


class Answer(Node):
    def prep(self, shared: dict[str, t.Any]) -> list[str]:
        return shared["plans"]

    def exec(self, plans: list[str]) -> str:
        return f"{len(plans)} plans"


def plan_act_flow() -> Flow:
    plan, act, answer = Plan(), Act(), Answer()
    plan - "act" >> act
    act >> plan
    plan - "answer" >> answer
    return Flow(plan, name="Agent")


def test_intermediate_nodes_stream_in_order_with_their_identity() -> None:
    shared = {"round": 0}
    stream = plan_act_flow().stream(shared)
    events = list(stream)
    check_invariants(events)
    chunks = [(e.run.name, e.run.kind, e.channel, e.delta) for e in events if e.kind == "chunk"]
    assert chunks == [
        ("Plan", "node", "text", f"plan {n}: ")
        if i == 0
        else ("Plan", "node", "reasoning", "thinking")
        if i == 1
        else ("Plan", "node", "text", "look")
        for n in range(3)
        for i in range(3)
    ]
    # each chunk arrives between its node's start and end, and every node is a child of the flow
    flow_run = events[0].run
    assert flow_run.kind == "flow" and flow_run.name == "Agent"
    nodes = [e.run for e in events if e.kind == "start" and e.run.kind == "node"]
    assert [r.name for r in nodes] == ["Plan", "Act", "Plan", "Act", "Plan", "Answer"]
    assert all(r.parent_id == flow_run.run_id for r in nodes)
    for ev in events:
        if ev.kind == "chunk":
            start = next(i for i, e in enumerate(events) if e.kind == "start" and e.run.run_id == ev.run.run_id)
            end = next(i for i, e in enumerate(events) if e.kind == "end" and e.run.run_id == ev.run.run_id)
            assert start < events.index(ev) < end
    ends = {e.run.run_id: e for e in events if e.kind == "end"}
    assert stream.handle.result() == "3 plans"
    assert ends[flow_run.run_id].output == "3 plans"  # the last node's output
    plan_ends = [e for e in events if e.kind == "end" and e.run.name == "Plan"]
    assert [e.output for e in plan_ends] == ["plan 0: look", "plan 1: look", "plan 2: look"]
    assert [e.attributes.get("action") for e in plan_ends] == ["act", "act", "answer"]
    assert shared["round"] == 2  # the flow worked on the caller's dict


def test_the_shared_store_is_the_callers_dict() -> None:
    shared = {"round": 0}
    assert plan_act_flow()(shared) == "3 plans"
    assert shared["round"] == 2 and shared["plans"] == ["plan 0: look", "plan 1: look", "plan 2: look"]


def test_text_view_shows_only_user_facing_text_of_all_nodes() -> None:
    # Each node run is a turn of its own: the answer separates them (streamtap.answer), the raw text does not.
    assert "".join(plan_act_flow().stream({"round": 0}).text()) == "plan 0: look\n\nplan 1: look\n\nplan 2: look"
    raw = plan_act_flow().stream({"round": 0}).filter(kinds="chunk", channels="text")
    assert "".join(e.delta for e in raw) == "plan 0: lookplan 1: lookplan 2: look"


def test_node_returning_unwired_action_is_a_clear_error() -> None:
    class Decide(Node):
        def post(self, shared: t.Any, p: t.Any, r: t.Any) -> str:
            return "maybe"

    d = Decide()
    d - "yes" >> Node(name="Yes")
    d - "no" >> Node(name="No")
    with pytest.raises(UsageError, match=r"Decide returned action 'maybe', but it only goes on \['no', 'yes'\]"):
        Flow(d)({})


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (lambda a, b: a >> Node, "a node class"),
        (lambda a, b: a >> "b", "a flow can only go to a node"),
        (lambda a, b: a - 3, "an action must be a non-empty string"),
        (lambda a, b: a - "" >> b, "an action must be a non-empty string"),
        (lambda a, b: (a >> b, a >> Node(name="Other")), "already goes to B on action 'default'"),
    ],
)
def test_wiring_mistakes_are_errors(wire: t.Callable[[Node, Node], t.Any], message: str) -> None:
    a, b = Node(name="A"), Node(name="B")
    with pytest.raises(UsageError, match=message):
        wire(a, b)


def test_flow_setup_mistakes_are_errors() -> None:
    with pytest.raises(UsageError, match="has no start node"):
        Flow()({})

    class Slow(AsyncNode):
        async def exec_async(self, p: t.Any) -> None:
            return None

    with pytest.raises(UsageError, match="Flow is synchronous but Slow is async; use the async variant"):
        start = Node()
        start >> Slow()
        Flow(start)({})
    with pytest.raises(UsageError, match="post must return an action name"):

        class Bad(Node):
            def post(self, shared: t.Any, p: t.Any, r: t.Any) -> t.Any:
                return 7

        Flow(Bad())({})


def test_async_methods_on_a_sync_node_are_refused_at_class_creation() -> None:
    with pytest.raises(UsageError, match="Subclass AsyncNode and name it exec_async"):

        class Wrong(Node):
            async def exec(self, p: t.Any) -> None:  # type: ignore[override]
                return None

    with pytest.raises(UsageError, match="define exec_async"):

        class Wrong2(AsyncNode):
            def exec(self, p: t.Any) -> None:
                return None


def test_nested_flows_share_the_store_and_route_on_the_inner_last_action() -> None:
    class Step(Node):
        def post(self, shared: dict[str, t.Any], p: t.Any, r: t.Any) -> str:
            shared["trail"].append(self.name)
            return "out" if self.name == "inner2" else "default"

    i1, i2 = Step(name="inner1"), Step(name="inner2")
    i1 >> i2
    inner = Flow(i1, name="Inner")
    after = Step(name="after")
    inner - "out" >> after
    outer = Flow(inner, name="Outer")
    with capture_events() as events:
        shared: dict[str, t.Any] = {"trail": []}
        outer(shared)
    check_invariants(events)
    assert shared["trail"] == ["inner1", "inner2", "after"]
    runs = events.runs()
    parents = {r.name: runs[r.parent_id].name for r in runs.values() if r.parent_id}
    assert parents == {"Inner": "Outer", "inner1": "Inner", "inner2": "Inner", "after": "Outer"}


def test_retries_then_fallback() -> None:
    class Flaky(Node):
        calls = 0

        def exec(self, p: t.Any) -> str:
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise ValueError("boom")
            return "ok"

    assert Flow(Flaky(max_retries=3))({}) == "ok"

    class Never(Node):
        def exec(self, p: t.Any) -> str:
            raise ValueError("nope")

        def exec_fallback(self, p: t.Any, exc: Exception) -> str:
            return f"fallback: {exc}"

    assert Flow(Never(max_retries=2))({}) == "fallback: nope"
    with pytest.raises(UsageError, match="max_retries must be"):
        Node(max_retries=0)


class Count(Node):
    blocking = False

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def post(self, shared: dict[str, int], p: t.Any, r: t.Any) -> str:
        shared["i"] += 1
        return "again" if shared["i"] < self.limit else "stop"


class Done(Node):
    blocking = False

    def exec(self, p: t.Any) -> str:
        return "done"


def loop_flow(limit: int, cls: type[Flow] = Flow) -> Flow:
    count = Count(limit)
    count - "again" >> count
    count - "stop" >> Done()
    return cls(count)


def _with_recursion_limit(limit: int, fn: t.Callable[[], t.Any]) -> t.Any:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        return fn()
    finally:
        sys.setrecursionlimit(old)


def test_a_100000_step_loop_runs_with_a_flat_stack() -> None:
    flow = loop_flow(100_000)
    ends = 0

    def count(ev: t.Any) -> None:
        nonlocal ends
        ends += 1

    with streamtap.subscribe(count, kinds=["end"]):
        shared = {"i": 0}
        out = _with_recursion_limit(200, lambda: flow(shared))
    assert out == "done" and shared["i"] == 100_000
    assert ends == 100_000 + 2  # every node execution was a run, plus Done and the flow


def _peak_bytes(fn: t.Callable[[], t.Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loop_memory_does_not_grow_with_the_number_of_steps() -> None:
    flow = loop_flow(0)
    _peak_bytes(lambda: flow.buffered(64).stream({"i": 0}).result())  # warm caches
    small = _peak_bytes(lambda: loop_flow(2_000).buffered(64).stream({"i": 0}).result())
    big = _peak_bytes(lambda: loop_flow(20_000).buffered(64).stream({"i": 0}).result())
    assert big < small * 1.5 + 50_000, f"peak grew from {small} to {big} bytes with 10x the steps"


async def test_a_100000_step_async_loop_runs_with_a_flat_stack() -> None:
    flow = loop_flow(100_000, AsyncFlow)
    shared = {"i": 0}
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        out = await flow.acall(shared)
    finally:
        sys.setrecursionlimit(old)
    assert out == "done" and shared["i"] == 100_000


async def test_async_flow_streams_async_generator_exec_and_runs_sync_nodes() -> None:
    class Talk(AsyncNode):
        async def prep_async(self, shared: dict[str, t.Any]) -> str:
            return str(shared["topic"])

        async def exec_async(self, topic: str) -> t.AsyncIterator[str]:
            for word in ("about", " ", topic):
                await asyncio.sleep(0)
                yield word

        async def post_async(self, shared: dict[str, t.Any], p: t.Any, r: str) -> None:
            shared["said"] = r

    class Upper(Node):
        def prep(self, shared: dict[str, t.Any]) -> str:
            return str(shared["said"])

        def exec(self, said: str) -> str:
            return said.upper()

    talk = Talk()
    talk >> Upper()
    flow = AsyncFlow(talk)
    shared = {"topic": "cats"}
    stream = flow.astream(shared)
    events = [e async for e in stream]
    check_invariants(events)
    assert [(e.run.name, e.delta) for e in events if e.kind == "chunk"] == [
        ("Talk", "about"),
        ("Talk", " "),
        ("Talk", "cats"),
    ]
    assert await stream.handle == "ABOUT CATS"
    assert shared["said"] == "about cats"


def test_successors_work_without_calling_init() -> None:
    class NoInit(BaseNode):
        def __init__(self) -> None:  # forgets super().__init__()
            pass

        def forward(self, shared: t.Any) -> str:
            return "x"

    a = NoInit()
    b = Node()
    a >> b
    assert a.successors == {"default": b}


def test_a_node_calling_other_nodes_in_exec_keeps_its_own_action() -> None:
    class Helper(Node):
        def post(self, shared: t.Any, p: t.Any, r: t.Any) -> str:
            return "helper-action"

    class Host(Node):
        def exec(self, p: t.Any) -> t.Any:
            return Flow(Helper())({})  # a nested flow run inside exec

        def post(self, shared: t.Any, p: t.Any, r: t.Any) -> str:
            return "mine"

    host = Host()
    host - "mine" >> Done()
    assert Flow(host)({}) == "done"
