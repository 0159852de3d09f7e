"""Pause for a human's approval before a tool call, then resume with the answer, the way a front end would.

1. The agent proposes a tool call; the Approve node calls ``interrupt()``.
   The run ends with status ``interrupted`` and a pause record (plain JSON)
   that a web page would render as an approve/deny form from its ``schema``.
2. The record waits in a SQLite pause store (it would survive a restart).
3. The "front end" (scripted here) first sends an answer that fails the
   schema: a clear error, the pause stays pending. Then it approves, and the
   flow resumes at the Approve node and runs the tool, streaming.

Run: python examples/approval_flow.py
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import tempfile
import typing as t

from streamtap.exporting import traces_from_env
from streamtap.flows import Flow, Node
from streamtap.interrupts import AnswerValidationError, Resume, SQLitePauseStore, interrupt

APPROVAL_SCHEMA = {
    "type": "object",
    "required": ["approved"],
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
}


def get_weather(city: str) -> dict[str, t.Any]:
    """The tool that needs approval."""
    return {"city": city, "temperature": 22, "unit": "celsius"}


class Propose(Node):
    def post(self, shared: dict[str, t.Any], p: t.Any, r: t.Any) -> None:
        shared["call"] = {"tool": "get_weather", "arguments": {"city": shared["city"]}}


class Approve(Node):
    def prep(self, shared: dict[str, t.Any]) -> dict[str, t.Any]:
        return shared["call"]

    def exec(self, call: dict[str, t.Any]) -> dict[str, t.Any]:
        # The first run pauses here; on resume this returns the front end's answer.
        return interrupt({"question": "Allow this tool call?", "call": call}, schema=APPROVAL_SCHEMA)

    def post(self, shared: dict[str, t.Any], call: t.Any, answer: dict[str, t.Any]) -> str:
        shared["approval"] = answer
        return "run" if answer["approved"] else "deny"


class RunTool(Node):
    def prep(self, shared: dict[str, t.Any]) -> dict[str, t.Any]:
        return shared["call"]

    def exec(self, call: dict[str, t.Any]) -> t.Iterator[str]:
        result = get_weather(**call["arguments"])
        yield f"It is {result['temperature']} degrees in {result['city']}."
        return result


class Deny(Node):
    def exec(self, p: t.Any) -> str:
        return "The tool call was not approved."


def build(store: SQLitePauseStore) -> Flow:
    propose, approve = Propose(), Approve()
    propose >> approve
    approve - "run" >> RunTool()
    approve - "deny" >> Deny()
    return Flow(propose, name="ApprovalAgent", store=store)


def main() -> int:
    with contextlib.ExitStack() as stack:
        stack.enter_context(traces_from_env())
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        store = SQLitePauseStore(tmp / "pauses.db")

        # -- request 1: the agent runs until it needs approval ------------------
        events = list(build(store).stream({"city": "Paris"}))
        end = events[-1]
        print(f"run {end.run.run_id} ended: {end.status}")
        record = end.output
        print("pause record sent to the front end:")
        print(json.dumps({k: record[k] for k in ("id", "flow", "interrupts")}, indent=2))

        # -- (a restart could happen here: the record is in SQLite) --------------
        flow = build(SQLitePauseStore(tmp / "pauses.db"))
        (pending,) = flow.store.pending()  # type: ignore[union-attr]
        interrupt_id = pending["interrupts"][0]["id"]

        # -- request 2: a bad answer --------------------------------------------
        try:
            flow.resume(pending["id"], answers={interrupt_id: {"approved": "sure"}})
        except AnswerValidationError as exc:
            print(f"\nrejected answer: {exc}")
        print(f"pause {pending['id']} is still {flow.store.status(pending['id'])}")  # type: ignore[union-attr]

        # -- request 3: the user approves; the resumed run streams ---------------
        resume = Resume(pending["id"], answers={interrupt_id: {"approved": True, "reason": "looks fine"}})
        stream = flow.stream(resume)
        print("\nresumed:")
        for ev in stream:
            if ev.kind == "start" and ev.run.kind == "node":
                print(f"  [{ev.run.name}] started")
            elif ev.kind == "chunk":
                print(f"  [{ev.run.name}] {ev.delta}")
        result = stream.handle.result()
        print(f"result: {result}; approval: {resume.shared['approval']}")
        print(f"pause {pending['id']} is now {flow.store.status(pending['id'])}")  # type: ignore[union-attr]
        assert result == {"city": "Paris", "temperature": 22, "unit": "celsius"}
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
