"""Every event's Run carries its path of names from the root; streams filter on it (the PocketFlow seed's shape)."""

from __future__ import annotations

import typing as t

import pytest

from streamtap import UsageError
from streamtap.events import Chunk, Run
from streamtap.flows import Flow, Node
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI


def _plan_act(base_url: str) -> Flow:
    llm = OpenAIChat("fake-gpt", base_url=base_url)

    class Plan(Node):
        def prep(self, shared: dict[str, t.Any]) -> str:
            return f"plan step {shared['n']}"

        def exec(self, prompt: str) -> t.Iterator[str]:
            yield from llm.stream(prompt).text()  # the model's chunks, relayed by the node

        def post(self, shared: dict[str, t.Any], prep_res: t.Any, exec_res: t.Any) -> str:
            shared["n"] += 1
            return "act" if shared["n"] <= 2 else "done"

    class Act(Node):
        def exec(self, prep_res: t.Any) -> str:
            return str(llm("act now"))

    plan, act = Plan(), Act()
    plan - "act" >> act >> plan
    return Flow(plan, name="plan_act")


def test_every_event_knows_its_node() -> None:
    """A token from the Plan node's model has path ("plan_act", "Plan", "OpenAIChat"): no tree to rebuild."""
    with FakeOpenAI(token_delay=0) as srv:
        events = list(_plan_act(srv.base_url).stream({"n": 1}))
    paths = {e.run.path for e in events}
    assert ("plan_act", "Plan", "OpenAIChat") in paths and ("plan_act", "Act", "OpenAIChat") in paths
    for e in events:
        assert e.run.path[-1] == e.run.name and e.run.path[0] == "plan_act"
    assert events[0].to_dict()["run"]["path"] == ["plan_act"]


def test_filter_under_a_node_name_and_a_path() -> None:
    """filter(under="Plan") keeps the Plan nodes and everything inside them; a tuple is a path prefix."""
    with FakeOpenAI(token_delay=0) as srv:
        flow = _plan_act(srv.base_url)
        plan_text = list(flow.stream({"n": 1}).filter(under="Plan", kinds="chunk", run_kinds="llm"))
        by_path = list(flow.stream({"n": 1}).filter(under=("plan_act", "Act"), kinds="start"))
    assert {e.run.path for e in plan_text} == {("plan_act", "Plan", "OpenAIChat")}
    assert "".join(e.delta for e in plan_text if isinstance(e, Chunk)) == "You said: plan step 1You said: plan step 2"
    assert [e.run.path for e in by_path] == [("plan_act", "Act"), ("plan_act", "Act", "OpenAIChat")]


@pytest.mark.parametrize("bad", ["", (), ("a", 1), ["Plan"]])
def test_filter_under_refuses_what_is_not_a_name_or_path(bad: t.Any) -> None:
    """A bad under= names the value and what to pass."""
    with FakeOpenAI(token_delay=0) as srv:
        stream = OpenAIChat("fake-gpt", base_url=srv.base_url).stream("x")
        with pytest.raises(UsageError, match=r"filter\(under=.*give a run name"):
            stream.filter(under=bad)
        stream.result()


def test_a_hand_made_run_has_an_empty_path() -> None:
    """Run keeps working when built by hand (tests, replays): path defaults to ()."""
    assert Run("a", "A", "module", None, "a").path == ()
