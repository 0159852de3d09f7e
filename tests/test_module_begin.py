"""ModuleBase.begin(): runs started and ended by separate callbacks (the bridges' primitive)."""

from __future__ import annotations

import threading
import typing as t

import pytest

import streamtap
from streamtap import ModuleBase, RunCancelled


class Outer(ModuleBase):
    kind = "agent"

    def __init__(self, body: t.Callable[[], t.Any]) -> None:
        self.body = body

    def forward(self) -> t.Any:
        return self.body()


class Ext(ModuleBase):
    kind = "llm"


def test_begun_runs_nest_under_the_current_run_and_stream_into_its_stream():
    def body() -> str:
        run = Ext().begin("hi")
        run.context.chunk("a")
        with run.activate():
            assert streamtap.current() is run.context
            child = Ext().begin()  # nests under the activated run
        child.end("c")
        run.context.chunk("b")
        assert run.end("ab") is True and run.end("again") is False
        return "done"

    events = list(Outer(body).stream())
    kinds = [(e.kind, e.run.name) for e in events]
    assert kinds == [
        ("start", "Outer"), ("start", "Ext"), ("chunk", "Ext"), ("start", "Ext"), ("end", "Ext"),
        ("chunk", "Ext"), ("end", "Ext"), ("end", "Outer"),
    ]  # fmt: skip
    outer, ext, _, child = (e.run for e in events[:4])
    assert ext.parent_id == outer.run_id and child.parent_id == ext.run_id and child.root_id == outer.run_id
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-2].output == "ab" and events[-2].status == "ok"


def test_explicit_parent_from_another_thread_and_error_status():
    def body() -> None:
        parent = streamtap.current()
        box: list[t.Any] = []

        def other_thread() -> None:  # no context here: the parent is given by hand
            run = Ext().begin(parent=parent)
            run.end(error=ValueError("bad"))
            cancelled = Ext().begin(parent=parent)
            cancelled.end(error=RunCancelled("stop"))
            box.append(run)

        th = threading.Thread(target=other_thread)
        th.start()
        th.join()

    ends = [e for e in Outer(body).stream() if e.kind == "end" and e.run.name == "Ext"]
    assert [e.status for e in ends] == ["error", "cancelled"]
    assert ends[0].error is not None and ends[0].error.message == "bad"


def test_begin_with_no_parent_is_a_root_run():
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        run = Ext().begin(parent=None)
        run.end()
    assert [e.kind for e in seen] == ["start", "end"] and seen[0].run.parent_id is None


@pytest.mark.parametrize("status", ["ok", "cancelled"])
def test_forced_status(status: str):
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        Ext().begin().end(status=status)  # type: ignore[arg-type]
    assert seen[-1].status == status
