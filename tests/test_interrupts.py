"""Human-in-the-loop: interrupt(), pause records, resume (same process and a fresh one), stores, bad resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap import UsageError
from streamtap.flows import AsyncFlow, AsyncNode, BatchNode, Flow, Node, Parallel, Sequential
from streamtap.interrupts import (
    AnswerValidationError,
    Interrupt,
    MemoryPauseStore,
    Resume,
    ResumeError,
    SQLitePauseStore,
    StalePauseError,
    TamperedRecordError,
    UnknownInterruptError,
    interrupt,
    sign_record,
    validate_answer,
    verify_record,
)
from streamtap.testing import capture_events, check_invariants

APPROVAL = {
    "type": "object",
    "required": ["approved"],
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
}


class Prepare(Node):
    def post(self, shared: dict[str, t.Any], p: t.Any, r: t.Any) -> None:
        shared["call"] = {"tool": "delete_files", "args": {"path": "/tmp/x"}}


class Approve(Node):
    runs = 0

    def prep(self, shared: dict[str, t.Any]) -> dict[str, t.Any]:
        Approve.runs += 1
        return shared["call"]

    def exec(self, call: dict[str, t.Any]) -> t.Iterator[str]:
        yield "asking... "
        answer = interrupt({"question": "Run this tool?", "call": call}, schema=APPROVAL)
        yield "approved" if answer["approved"] else "denied"
        return answer

    def post(self, shared: dict[str, t.Any], p: t.Any, answer: dict[str, t.Any]) -> str:
        shared["approval"] = answer
        return "run" if answer["approved"] else "skip"


class RunTool(Node):
    def exec(self, p: t.Any) -> str:
        return "tool ran"


class Skip(Node):
    def exec(self, p: t.Any) -> str:
        return "tool skipped"


def approval_flow(store: t.Any = None, tool: Node | None = None, name: str = "ApprovalFlow") -> Flow:
    prepare, approve = Prepare(), Approve()
    prepare >> approve
    approve - "run" >> (tool or RunTool())
    approve - "skip" >> Skip()
    return Flow(prepare, name=name, store=store)


def pause(flow: Flow, shared: t.Any = None) -> dict[str, t.Any]:
    with pytest.raises(Interrupt) as info:
        flow({} if shared is None else shared)
    return info.value.record


def test_interrupt_ends_every_run_interrupted_with_a_plain_json_pause_record() -> None:
    with capture_events() as events:
        record = pause(approval_flow())
    check_invariants(events)
    assert [(e.run.name, e.status) for e in events.of("end")] == [
        ("Prepare", "ok"),
        ("Approve", "interrupted"),
        ("ApprovalFlow", "interrupted"),
    ]
    assert events.of("end")[-1].output == record
    assert json.loads(json.dumps(record)) == record  # plain JSON, nothing else
    (entry,) = record["interrupts"]
    assert entry["node"] == "Approve" and entry["path"] == ["ApprovalFlow", "Approve"]
    assert entry["payload"] == {
        "question": "Run this tool?",
        "call": {"tool": "delete_files", "args": {"path": "/tmp/x"}},
    }
    assert entry["schema"] == APPROVAL
    assert entry["run_id"] == next(e.run.run_id for e in events.of("start") if e.run.name == "Approve")
    assert record["shared"] == {"call": {"tool": "delete_files", "args": {"path": "/tmp/x"}}}
    assert record["flow"]["name"] == "ApprovalFlow" and record["flow"]["version"]
    assert record["run_id"] == events.of("start")[0].run.run_id == record["thread"]
    assert events.text() == "asking... "


def test_resume_reexecutes_the_node_and_interrupt_returns_the_answer() -> None:
    flow = approval_flow()
    record = pause(flow)
    runs = Approve.runs
    with capture_events() as events:
        resume = Resume(record, {"approved": True})
        out = flow(resume)
    check_invariants(events)
    assert out == "tool ran"
    assert Approve.runs == runs + 1  # from its start
    assert [e.run.name for e in events.of("start")] == ["ApprovalFlow", "Approve", "RunTool"]  # Prepare is not re-run
    assert events.text() == "asking... approved"
    assert resume.shared["approval"] == {"approved": True}
    assert flow.resume(record, {"approved": False, "reason": "no"}) == "tool skipped"  # no store: records are reusable


async def test_async_flow_pauses_and_resumes_as_a_stream() -> None:
    class AskAsync(AsyncNode):
        async def exec_async(self, p: t.Any) -> t.AsyncIterator[str]:
            name = interrupt("What is your name?", {"type": "string", "minLength": 1})
            yield f"hello {name}"

    flow = AsyncFlow(AskAsync(), name="Greeter")
    stream = flow.astream({})
    events = [e async for e in stream]
    assert events[-1].status == "interrupted"
    record = events[-1].output
    with pytest.raises(Interrupt):
        await stream.handle
    stream2 = flow.astream(Resume(record, "Ada"))
    assert [x async for x in stream2.text()] == ["hello Ada"]
    assert await stream2.handle == "hello Ada"


def test_several_interrupts_in_one_node_are_matched_by_order() -> None:
    class TwoQuestions(Node):
        def exec(self, p: t.Any) -> tuple[t.Any, t.Any]:
            return interrupt("first?"), interrupt("second?")

    flow = Flow(TwoQuestions(), name="Two")
    r1 = pause(flow)
    assert [e["payload"] for e in r1["interrupts"]] == ["first?"]
    with pytest.raises(Interrupt) as info:
        flow.resume(r1, 1)
    r2 = info.value.record
    assert [e["payload"] for e in r2["interrupts"]] == ["second?"]
    assert r2["thread"] == r1["thread"]  # the same conversation across resumes
    assert flow.resume(r2, 2) == (1, 2)


def test_several_pending_interrupts_from_parallel_branches() -> None:
    calls: list[str] = []

    class Ask(Node):
        def exec(self, p: t.Any) -> t.Any:
            calls.append(self.name)  # type: ignore[arg-type]
            return interrupt(f"{self.name}?")

    class Fixed(Node):
        def exec(self, p: t.Any) -> str:
            calls.append("fixed")
            return "fixed"

    flow = Parallel(a=Ask(name="a"), b=Ask(name="b"), c=Fixed(), name="Fan")
    with capture_events() as events:
        record = pause(flow, {"x": 1})
    check_invariants(events)
    ids = {e["node"]: e["id"] for e in record["interrupts"]}
    assert set(ids) == {"a", "b"}
    with pytest.raises(ResumeError, match="2 pending interrupts .* a single answer is ambiguous"):
        flow.resume(record, "yes")
    calls.clear()
    with pytest.raises(Interrupt) as info:
        flow.resume(record, answers={ids["a"]: "A"})  # answer one; b stays pending, untouched
    assert calls == ["a"]
    r2 = info.value.record
    assert [e["id"] for e in r2["interrupts"]] == [ids["b"]]
    calls.clear()
    assert flow.resume(r2, "B") == {"a": "A", "b": "B", "c": "fixed"}
    assert calls == ["b"]


def test_batch_items_pause_together_and_only_answered_items_rerun() -> None:
    seen: list[int] = []

    class Review(BatchNode):
        def prep(self, shared: dict[str, t.Any]) -> list[int]:
            return shared["items"]

        def exec(self, item: int) -> t.Any:
            seen.append(item)
            return interrupt({"review": item}) if item % 2 else item

    flow = Flow(Review(), name="Reviews")
    record = pause(flow, {"items": [0, 1, 2, 3]})
    ids = {e["payload"]["review"]: e["id"] for e in record["interrupts"]}
    assert set(ids) == {1, 3} and [e["node"] for e in record["interrupts"]] == ["Review[1]", "Review[3]"]
    seen.clear()
    assert flow.resume(record, answers={ids[1]: "one", ids[3]: "three"}) == [0, "one", 2, "three"]
    assert seen == [1, 3]


def test_nested_flows_and_sequences_resume_at_the_inner_node() -> None:
    class Inner(Node):
        def exec(self, p: t.Any) -> t.Any:
            return interrupt("inner?")

    inner = Flow(Inner(), name="InnerFlow")
    outer = Flow(Node(name="First"), name="OuterFlow")
    outer.start_node.next(inner)  # type: ignore[union-attr]
    record = pause(outer)
    assert record["interrupts"][0]["path"] == ["OuterFlow", "InnerFlow", "Inner"]
    assert outer.resume(record, 42) == 42

    class Double(Node):
        def forward(self, x: int) -> int:  # a plain module step: value in, value out
            return x * 2

    class AskAdd(Node):
        def forward(self, x: int) -> int:
            return x + int(interrupt(f"add to {x}?"))

    seq = Sequential(Double(), AskAdd(), Double(), name="Pipe")
    with pytest.raises(Interrupt) as info:
        seq(5)
    assert info.value.record["interrupts"][0]["payload"] == "add to 10?"
    assert seq.resume(info.value.record, 1) == 22


# -- bad resumes: each a clear error; the record stays pending -----------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> t.Any:
    return MemoryPauseStore() if request.param == "memory" else SQLitePauseStore(tmp_path / "pauses.db")


def test_flow_with_a_store_saves_records_and_resumes_them_once(store: t.Any) -> None:
    flow = approval_flow(store)
    record = pause(flow)
    assert store.pending() == [record] and store.status(record["id"]) == "pending"
    assert flow.resume(record["id"], {"approved": True}) == "tool ran"  # by id, loaded from the store
    assert store.status(record["id"]) == "resumed" and store.pending() == []
    with pytest.raises(StalePauseError, match=f"Pause {record['id']} is resumed, not pending"):
        flow.resume(record, {"approved": True})


def test_bad_resumes_are_clear_errors_and_lose_nothing(store: t.Any) -> None:
    flow = approval_flow(store)
    record = pause(flow)
    iid = record["interrupts"][0]["id"]
    frozen = json.dumps(record)
    cases: list[tuple[t.Callable[[], t.Any], type[Exception], str]] = [
        (
            lambda: flow.resume(record, answers={"wrong-id": {"approved": True}}),
            UnknownInterruptError,
            f"'wrong-id' is not pending .*{iid}",
        ),
        (
            lambda: flow.resume(record, {"approved": "yes"}),
            AnswerValidationError,
            "answer.approved should be of type boolean, got 'yes'",
        ),
        (lambda: flow.resume(record, {"reason": "x"}), AnswerValidationError, "missing required property 'approved'"),
        (
            lambda: flow.resume("no-such-pause", {"approved": True}),
            UnknownInterruptError,
            "No pause record with id 'no-such-pause'",
        ),
        (lambda: flow.resume({"hello": 1}, 1), ResumeError, "Expected a pause record"),
        (lambda: flow.resume({**record, "format": 99}, 1), StalePauseError, "format 99 is not supported"),
        (
            lambda: flow.resume({**record, "flow": {**record["flow"], "name": "Other"}}, 1),
            StalePauseError,
            "belongs to flow 'Other'",
        ),
        (lambda: flow.resume(record), ResumeError, "Resuming needs an answer"),
        (lambda: Resume(record, 1, answers={iid: 1}), UsageError, "not both"),
    ]
    for call, exc_type, message in cases:
        with pytest.raises(exc_type, match=message):
            call()
        assert store.status(record["id"]) == "pending"
        assert json.dumps(record) == frozen
    changed = approval_flow(store)
    changed.start_node.next(Node(name="Extra"), "new-edge")  # type: ignore[union-attr]
    with pytest.raises(StalePauseError, match="its nodes or wiring changed"):
        changed.resume(record, {"approved": True})
    with pytest.raises(ResumeError, match="needs the flow's store"):
        approval_flow().resume(record["id"], {"approved": True})
    assert store.status(record["id"]) == "pending"
    assert flow.resume(record, {"approved": True}) == "tool ran"  # still resumable after all that


def test_a_resumed_run_that_fails_releases_its_record(store: t.Any) -> None:
    class Fragile(Node):
        def exec(self, p: t.Any) -> t.Any:
            if interrupt("go?") == "crash":
                raise RuntimeError("crashed after resume")
            return "fine"

    flow = Flow(Fragile(), name="Fragile", store=store)
    record = pause(flow)
    with pytest.raises(RuntimeError, match="crashed after resume"):
        flow.resume(record, "crash")
    assert store.status(record["id"]) == "pending"
    assert flow.resume(record, "ok") == "fine"


def test_non_json_payload_or_shared_is_a_clear_error() -> None:
    class Weird(Node):
        def exec(self, p: t.Any) -> t.Any:
            return interrupt({"fn": print})

    with pytest.raises(
        UsageError, match=r"the interrupt payload must be plain JSON .*\['fn'\] \(a builtin_function_or_method\)"
    ):
        Flow(Weird())({})
    with pytest.raises(
        UsageError, match=r"shared store of ApprovalFlow must be plain JSON .*\['client'\] \(a object\)"
    ):
        approval_flow()({"client": object()})
    with pytest.raises(UsageError, match="not supported"):
        Flow(type("S", (Node,), {"exec": lambda self, p: interrupt("x", {"type": "string", "format2": 1})})())({})


# -- a fresh process -------------------------------------------------------------


FLOW_MODULE = """
from streamtap.flows import Flow, Node
from streamtap.interrupts import SQLitePauseStore, interrupt

class Draft(Node):
    def post(self, shared, p, r):
        shared["draft"] = "Dear team, we ship on Friday."

class Review(Node):
    def prep(self, shared):
        return shared["draft"]
    def exec(self, draft):
        verdict = interrupt({"draft": draft}, {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}})
        yield "reviewed: "
        yield "approved" if verdict["ok"] else "rejected"
    def post(self, shared, p, r):
        shared["verdict"] = r

def make(path):
    draft = Draft()
    draft >> Review()
    return Flow(draft, name="Newsletter", store=SQLitePauseStore(path))
"""

RESUME_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import newsletter_flow
from streamtap.interrupts import Resume
flow = newsletter_flow.make(sys.argv[2])
(record,) = flow.store.pending()
resume = Resume(record["id"], {"ok": True})
stream = flow.stream(resume)
chunks = [(e.run.name, e.delta) for e in stream if e.kind == "chunk"]
print(json.dumps({"out": stream.handle.result(), "chunks": chunks, "shared": resume.shared}))
"""


def test_resume_in_a_fresh_process_from_a_sqlite_pause_record(tmp_path: Path) -> None:
    (tmp_path / "newsletter_flow.py").write_text(textwrap.dedent(FLOW_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        import newsletter_flow  # type: ignore[import-not-found]

        db = tmp_path / "pauses.db"
        record = pause(newsletter_flow.make(db))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("newsletter_flow", None)
    assert record["interrupts"][0]["payload"] == {"draft": "Dear team, we ship on Friday."}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path), str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["out"] == "reviewed: approved"
    assert result["chunks"] == [["Review", "reviewed: "], ["Review", "approved"]]
    assert result["shared"] == {"draft": "Dear team, we ship on Friday.", "verdict": "reviewed: approved"}
    assert SQLitePauseStore(db).status(record["id"]) == "resumed"


# -- the schema subset ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        ("x", {"type": "string", "minLength": 2}, "at least 2 characters"),
        (5, {"type": "integer", "maximum": 4}, "should be <= 4"),
        (True, {"type": "integer"}, "should be of type integer"),
        (1.5, {"type": ["integer", "null"]}, "integer or null"),
        ("c", {"enum": ["a", "b"]}, "one of ['a', 'b']"),
        ([1, "2"], {"type": "array", "items": {"type": "integer"}}, "answer[1] should be of type integer"),
        (
            {"a": 1, "z": 2},
            {"type": "object", "additionalProperties": False, "properties": {"a": {}}},
            "unexpected property 'z'",
        ),
        ("abc", {"pattern": "^[0-9]+$"}, "should match"),
        (3, {"anyOf": [{"type": "string"}, {"type": "boolean"}]}, "none of anyOf"),
    ],
)
def test_schema_subset_reports_problems(value: t.Any, schema: dict[str, t.Any], problem: str) -> None:
    problems = validate_answer(value, schema)
    assert problems and problem in problems[0]


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        ({"approved": True}, APPROVAL),
        (3, {"type": "integer", "minimum": 3}),
        (2.0, {"type": "integer"}),
        (None, None),
        ("yes", {"oneOf": [{"const": "yes"}, {"const": "no"}]}),
    ],
)
def test_schema_subset_accepts_valid_answers(value: t.Any, schema: dict[str, t.Any] | None) -> None:
    assert validate_answer(value, schema) == []


def test_sqlite_store_refuses_memory_path() -> None:
    with pytest.raises(UsageError, match="MemoryPauseStore"):
        SQLitePauseStore(":memory:")


def test_a_flow_called_inside_a_nodes_exec_resumes_too() -> None:
    class Ask(Node):
        def exec(self, p: t.Any) -> t.Any:
            return interrupt("inner question")

    inner = Flow(Ask(), name="Inner")

    class Host(Node):
        def prep(self, shared: dict[str, t.Any]) -> dict[str, t.Any]:
            return shared

        def exec(self, shared: dict[str, t.Any]) -> t.Any:
            return f"host got {inner(shared)}"

    outer = Flow(Host(), name="Outer")
    record = pause(outer)
    assert record["interrupts"][0]["path"] == ["Outer", "Inner", "Ask"]
    assert outer.resume(record, "the answer") == "host got the answer"


def test_concurrent_batches_pause_together_too() -> None:
    from streamtap.flows import ParallelBatchNode

    class Review(ParallelBatchNode):
        max_workers = 3

        def prep(self, shared: dict[str, t.Any]) -> list[int]:
            return shared["items"]

        def exec(self, item: int) -> t.Any:
            return interrupt({"review": item}) if item % 2 else item

    flow = Flow(Review(), name="ParallelReviews")
    record = pause(flow, {"items": list(range(6))})
    ids = {e["payload"]["review"]: e["id"] for e in record["interrupts"]}
    assert set(ids) == {1, 3, 5}
    with pytest.raises(Interrupt) as info:
        flow.resume(record, answers={ids[1]: "one", ids[5]: "five"})
    assert [e["id"] for e in info.value.record["interrupts"]] == [ids[3]]
    assert flow.resume(info.value.record, "three") == [0, "one", 2, "three", 4, "five"]


async def test_async_parallel_batch_pauses_and_resumes() -> None:
    from streamtap.flows import AsyncParallelBatchNode

    class Review(AsyncParallelBatchNode):
        concurrency = 2

        async def prep_async(self, shared: dict[str, t.Any]) -> list[int]:
            return shared["items"]

        async def exec_async(self, item: int) -> t.Any:
            return interrupt(item) if item in (2, 3) else -item

    flow = AsyncFlow(Review(), name="AsyncReviews")
    with pytest.raises(Interrupt) as info:
        await flow.acall({"items": [1, 2, 3]})
    record = info.value.record
    ids = {e["payload"]: e["id"] for e in record["interrupts"]}
    assert await flow.aresume(record, answers={ids[2]: "two", ids[3]: "three"}) == [-1, "two", "three"]


# -- tamper-evident records: signed by the server, verified on resume -----------------------


class ToolLog(Node):
    """Runs the 'tool' with the arguments in the shared store (what a forged record would change)."""

    ran: t.ClassVar[list[t.Any]] = []

    def prep(self, shared: dict[str, t.Any]) -> t.Any:
        return shared["call"]["args"]

    def exec(self, args: t.Any) -> str:
        ToolLog.ran.append(args)
        return f"tool ran with {args}"


def tool_flow(store: t.Any = None) -> Flow:
    """The approval flow whose tool records the arguments it ran with."""
    return approval_flow(store, ToolLog(), "ToolFlow")


@pytest.fixture(params=["none", "memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> t.Any:
    if request.param == "none":
        return None
    return MemoryPauseStore() if request.param == "memory" else SQLitePauseStore(tmp_path / "pauses.db")


def test_a_record_whose_shared_was_edited_is_refused_and_nothing_runs(any_store: t.Any) -> None:
    flow = tool_flow(any_store)
    record = pause(flow)
    forged = json.loads(json.dumps(record))
    forged["shared"]["call"]["args"]["path"] = "/"  # same id, forged tool arguments
    ToolLog.ran.clear()
    runs = Approve.runs
    with (
        capture_events() as events,
        pytest.raises(TamperedRecordError, match=f"Pause record {record['id']} .*'shared' changed") as info,
    ):
        flow.resume(forged, {"approved": True})
    assert info.value.reason == "changed" and info.value.pause_id == record["id"]
    assert "Nothing ran and the pause is still pending" in str(info.value)
    assert ToolLog.ran == [] and Approve.runs == runs  # nothing ran
    assert not events.of("start") or [e.status for e in events.of("end")] == ["error"]
    if any_store is not None:
        assert any_store.status(record["id"]) == "pending"
        assert any_store.load(record["id"]) == record  # the pending record is unchanged
        assert flow.resume(record["id"], {"approved": True}) == "tool ran with {'path': '/tmp/x'}"
    else:
        assert flow.resume(record, {"approved": True}) == "tool ran with {'path': '/tmp/x'}"
    assert ToolLog.ran == [{"path": "/tmp/x"}]


def _forge_state(r: dict[str, t.Any]) -> None:
    r["state"]["child"]["answers"] = [{"approved": True}]  # pretend the human already approved


def _drop_schema(r: dict[str, t.Any]) -> None:
    r["interrupts"][0]["schema"] = None  # so that any answer passes


def _unsign(r: dict[str, t.Any]) -> None:
    del r["signature"]


def _fake_mac(r: dict[str, t.Any]) -> None:
    r["signature"]["mac"] = "0" * 64


def _non_ascii_mac(r: dict[str, t.Any]) -> None:
    r["signature"]["mac"] = "é" * 64  # compare_digest refuses non-ASCII str: must still be a clear refusal


def _other_key(r: dict[str, t.Any]) -> None:
    r["shared"]["call"]["args"]["path"] = "/"
    sign_record(r, b"an attacker's own key, 32 bytes!")


@pytest.mark.parametrize(
    ("forge", "reason", "message"),
    [
        (_forge_state, "changed", "its 'state' changed"),
        (_drop_schema, "changed", "its 'interrupts' changed"),
        (lambda r: r.update(thread="someone-elses-conversation"), "changed", "its 'thread' changed"),
        (lambda r: r.update(extra=1), "changed", "its 'extra' changed"),
        (_unsign, "unsigned", "has no valid signature"),
        (lambda r: r.update(signature="trust me"), "unsigned", "has no valid signature"),
        (_fake_mac, "changed", "was changed after the server signed it|changed after the server signed it"),
        (_non_ascii_mac, "changed", "changed after the server signed it"),
        (_other_key, "wrong_key", "was signed with another key"),
    ],
)
def test_every_kind_of_forged_record_is_refused_before_anything_runs(
    any_store: t.Any, forge: t.Callable[[dict[str, t.Any]], None], reason: str, message: str
) -> None:
    flow = tool_flow(any_store)
    record = pause(flow)
    forged = json.loads(json.dumps(record))
    forge(forged)
    ToolLog.ran.clear()
    runs = Approve.runs
    with pytest.raises(TamperedRecordError, match=message) as info:
        flow.resume(forged, {"approved": True})
    assert info.value.reason == reason
    assert ToolLog.ran == [] and Approve.runs == runs
    if any_store is not None:
        assert any_store.status(record["id"]) == "pending" and any_store.load(record["id"]) == record


def test_a_record_that_went_through_a_javascript_front_end_still_verifies() -> None:
    class Weigh(Node):
        def exec(self, p: t.Any) -> t.Any:
            return interrupt({"grams": 2.0, "ratio": 0.5, "text": "naïve \u2028 ☃"})

    flow = Flow(Weigh(), name="Weigh")
    record = pause(flow, {"weight": 3.0, "nested": [1.0, {"x": -0.0}]})
    # JSON.stringify writes 2.0 as 2 and -0.0 as 0; JSON.parse gives numbers back.
    via_js = json.loads(
        json.dumps(record).replace("2.0", "2").replace("3.0", "3").replace("1.0", "1").replace("-0.0", "0")
    )
    assert via_js["shared"]["weight"] == 3 and isinstance(via_js["shared"]["weight"], int)
    assert flow.resume(via_js, "ok") == "ok"


def test_records_signed_with_a_shared_key_resume_in_any_process_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 32
    made = pause(tool_flow(MemoryPauseStore(key=key)))
    elsewhere = MemoryPauseStore(key=key)  # another process, same configured key
    elsewhere.save(made)
    assert tool_flow(elsewhere).resume(made["id"], {"approved": True}) == "tool ran with {'path': '/tmp/x'}"
    with pytest.raises(TamperedRecordError, match="signed with another key") as info:
        tool_flow(MemoryPauseStore(key="x" * 32)).resume(made, {"approved": True})
    assert info.value.reason == "wrong_key"
    # STREAMTAP_RECORD_KEY signs records of flows without a store (or without key=).
    monkeypatch.setenv("STREAMTAP_RECORD_KEY", key)
    record = pause(tool_flow())
    verify_record(record, key.encode())  # signed with the configured key, not a per-process one
    monkeypatch.setenv("STREAMTAP_RECORD_KEY", "another key of 32 bytes at least")
    with pytest.raises(TamperedRecordError, match="STREAMTAP_RECORD_KEY"):
        tool_flow().resume(record, {"approved": True})


def test_a_sqlite_store_keeps_its_key_in_the_file(tmp_path: Path) -> None:
    one, two = SQLitePauseStore(tmp_path / "a.db"), SQLitePauseStore(tmp_path / "a.db")
    assert one.signing_key() == two.signing_key() and len(one.signing_key()) == 32
    assert SQLitePauseStore(tmp_path / "b.db").signing_key() != one.signing_key()
    assert SQLitePauseStore(tmp_path / "a.db", key="q" * 16).signing_key() == b"q" * 16


def test_bad_keys_are_refused_naming_where_they_came_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"MemoryPauseStore\(key=...\)\) is 5 bytes; use at least 16 .*secrets.token_hex"
    ):
        MemoryPauseStore(key="short")
    with pytest.raises(UsageError, match=r"SQLitePauseStore\(key=...\)\) must be str or bytes, got int"):
        SQLitePauseStore(tmp_path / "p.db", key=12345678901234567890)  # type: ignore[arg-type]
    monkeypatch.setenv("STREAMTAP_RECORD_KEY", "tiny")
    with pytest.raises(UsageError, match="STREAMTAP_RECORD_KEY environment variable.* is 4 bytes"):
        pause(tool_flow())


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(shared=json_values, edit=st.text(min_size=1, max_size=8))
def test_property_a_signed_record_verifies_after_a_json_round_trip_and_any_edit_breaks_it(
    shared: t.Any, edit: str
) -> None:
    key = b"property-test-key-0123456789abcdef"
    record = sign_record({"type": "streamtap.pause", "format": 1, "id": "p1", "shared": shared, "state": {}}, key)
    verify_record(json.loads(json.dumps(record)), key)  # a round trip changes nothing that counts
    edited = json.loads(json.dumps(record))
    edited["shared"] = [edited["shared"], edit]
    with pytest.raises(TamperedRecordError, match="'shared' changed"):
        verify_record(edited, key)
    with pytest.raises(TamperedRecordError, match="another key"):
        verify_record(record, key + b"!")
