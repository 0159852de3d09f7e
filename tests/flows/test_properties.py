"""Property: random graphs with random actions, interrupts, errors and cancels keep the core's invariants."""

from __future__ import annotations

import contextlib
import typing as t

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamtap
from streamtap import RunCancelled
from streamtap.flows import AsyncFlow, Flow, FlowTimeout, Node
from streamtap.interrupts import Interrupt, Resume, interrupt
from streamtap.testing import capture_events, check_invariants

Step = tuple[str, int, str]  # (action, chunks, event)


class Scripted(Node):
    """Node ``i``: at global step ``k`` it streams, maybe interrupts / cancels / fails, then returns an action."""

    blocking = False

    def __init__(self, i: int, script: list[Step], wired: set[str]) -> None:
        super().__init__(name=f"n{i}")
        self.script = script
        self.wired = wired

    def prep(self, shared: dict[str, t.Any]) -> Step:
        k = shared["step"]
        return self.script[k] if k < len(self.script) else ("end", 0, "none")

    def exec(self, step: Step) -> t.Iterator[str]:
        _, chunks, event = step
        for c in range(chunks):
            yield f"{self.name}:{c} "
        if event == "interrupt":
            answer = interrupt({"node": self.name})
            yield f"answer={answer}"
        elif event == "cancel":
            ctx = streamtap.current()
            assert ctx is not None
            ctx.token.cancel("scripted cancel")
            yield "never delivered"
        elif event == "error":
            raise ValueError("scripted failure")

    def post(self, shared: dict[str, t.Any], step: Step, r: t.Any) -> str:
        shared["step"] += 1
        return step[0] if step[0] in self.wired else "end"


class End(Node):
    blocking = False

    def exec(self, p: t.Any) -> str:
        return "end"


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, t.Any]:
    n = draw(st.integers(1, 4))
    edges = [draw(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, n - 1), max_size=2)) for _ in range(n)]
    script = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "end"]),
                st.integers(0, 2),
                st.sampled_from(["none", "none", "none", "interrupt", "cancel", "error"]),
            ),
            max_size=12,
        )
    )
    return {
        "edges": edges,
        "script": script,
        "asynchronous": draw(st.booleans()),
        "external_cancel_after": draw(st.one_of(st.none(), st.integers(0, 30))),
    }


def build(sc: dict[str, t.Any]) -> Flow:
    nodes = [Scripted(i, sc["script"], set(e)) for i, e in enumerate(sc["edges"])]
    end = End()
    for node, edges in zip(nodes, sc["edges"]):
        for action, target in edges.items():
            node - action >> nodes[target]
        node - "end" >> end
    return (AsyncFlow if sc["asynchronous"] else Flow)(nodes[0], name="Random")


def drive(flow: Flow, sc: dict[str, t.Any]) -> list[str]:
    """Run to the end, resuming every pause; return the statuses of the root runs."""
    arg: t.Any = {"step": 0}
    statuses = []
    for _ in range(50):
        stream = flow.stream(arg)
        seen = 0
        with contextlib.suppress(RunCancelled, ValueError, Interrupt, FlowTimeout):
            for ev in stream:
                seen += 1
                if sc["external_cancel_after"] is not None and seen == sc["external_cancel_after"]:
                    stream.handle.cancel("external cancel")
                if ev.kind == "end" and ev.run.parent_id is None:
                    statuses.append(ev.status)
                    if ev.status == "interrupted":
                        arg = Resume(ev.output, f"yes{len(statuses)}")
            stream.handle.result(timeout=10)
        if statuses[-1] != "interrupted":
            return statuses
    raise AssertionError(f"did not finish: {statuses}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_flows_keep_the_invariants(sc: dict[str, t.Any]) -> None:
    flow = build(sc)
    with capture_events() as events:
        statuses = drive(flow, sc)
    check_invariants(events)
    roots = [e for e in events if e.kind == "end" and e.run.parent_id is None]
    assert [e.status for e in roots] == statuses
    assert all(s == "interrupted" for s in statuses[:-1])
    assert statuses[-1] in ("ok", "cancelled", "error")
    # every run that was open when its root was cancelled ended cancelled too
    for root in roots:
        if root.status == "cancelled":
            tree = [e for e in events if e.kind == "end" and e.run.root_id == root.run.run_id]
            open_at_end = [e for e in tree if e.status not in ("ok",)]
            assert all(e.status == "cancelled" for e in open_at_end)
