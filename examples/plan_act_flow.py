"""The PocketFlow seed's Plan >> Action loop agent, streaming its plan tokens while the flow runs.

Plan asks the model what to do next and streams the answer token by token
(the model is the embedded OpenAI-compatible server, so this runs offline);
Action runs a tool; Action >> Plan loops until the plan is done, then Answer
writes the result. Every line printed comes from one iterator over the flow's
events, each chunk tagged with the node that produced it.

Run: python examples/plan_act_flow.py
"""

from __future__ import annotations

import contextlib
import typing as t

from streamtap.exporting import traces_from_env
from streamtap.flows import Flow, Node
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI

TOOLS: dict[str, t.Callable[[str], str]] = {
    "search": lambda q: f"3 results for {q!r}",
    "calculate": lambda expr: str(sum(int(x) for x in expr.split("+"))),
}
STEPS = [("search", "streamtap flows"), ("calculate", "19+23")]


class Plan(Node):
    """Ask the model for the next step; its tokens stream as this node's child run."""

    def __init__(self, llm: OpenAIChat) -> None:
        super().__init__()
        self.llm = llm

    def prep(self, shared: dict[str, t.Any]) -> tuple[int, list[str]]:
        return shared["step"], shared["observations"]

    def exec(self, prep_res: tuple[int, list[str]]) -> t.Any:
        step, observations = prep_res
        if step >= len(STEPS):
            return self.llm(f"Plan: all {step} steps done ({'; '.join(observations)}), write the answer.")
        tool, arg = STEPS[step]
        return self.llm(f"Plan: step {step + 1} is to use {tool} on {arg}.")

    def post(self, shared: dict[str, t.Any], prep_res: t.Any, plan: t.Any) -> str:
        return "act" if shared["step"] < len(STEPS) else "answer"


class Action(Node):
    """Run the tool the plan chose (a plain function here)."""

    def prep(self, shared: dict[str, t.Any]) -> tuple[str, str]:
        return STEPS[shared["step"]]

    def exec(self, call: tuple[str, str]) -> t.Iterator[str]:
        tool, arg = call
        result = TOOLS[tool](arg)
        yield f"{tool}({arg}) -> {result}"
        return result

    def post(self, shared: dict[str, t.Any], call: t.Any, result: str) -> None:
        shared["observations"].append(result)
        shared["step"] += 1


class Answer(Node):
    def prep(self, shared: dict[str, t.Any]) -> list[str]:
        return shared["observations"]

    def exec(self, observations: list[str]) -> str:
        return "Done: " + "; ".join(observations)


def build(llm: OpenAIChat) -> Flow:
    plan, action = Plan(llm), Action()
    plan - "act" >> action
    action >> plan
    plan - "answer" >> Answer()
    return Flow(plan, name="PlanActAgent")


def main() -> int:
    with contextlib.ExitStack() as stack:
        stack.enter_context(traces_from_env())
        server = stack.enter_context(FakeOpenAI(token_delay=0.005))
        llm = OpenAIChat(model="fake-gpt", base_url=server.base_url, api_key="offline")
        shared: dict[str, t.Any] = {"step": 0, "observations": []}
        stream = build(llm).stream(shared)
        current = None
        for ev in stream:
            if ev.kind == "chunk" and ev.channel == "text":
                # run.path names every run from the root: ("PlanActAgent", "Plan", "OpenAIChat")
                owner = ev.run.path[1]
                if owner != current:
                    print(f"\n[{owner}] ", end="")
                    current = owner
                print(ev.delta, end="", flush=True)
            elif ev.kind == "end" and ev.run.kind == "node":
                current = None
                print(f"  <{ev.run.name} -> {ev.attributes.get('action', 'default')}>", end="")
        answer = stream.handle.result()
        print(f"\n\nanswer: {answer}")
        assert answer == "Done: 3 results for 'streamtap flows'; 42"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
