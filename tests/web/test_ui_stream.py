"""The pure event -> UI message stream mapping: ordering rules on every path, from any starting point."""

from __future__ import annotations

import typing as t

from hypothesis import given, settings
from hypothesis import strategies as st

import streamtap
from streamtap import Delta, ModuleBase
from streamtap.testing import capture_events
from streamtap.web.ui_stream import UIMessageMapper, data_part_name, encode_part

from .helpers import check_ui_stream

Action = tuple[str, int]
ACTIONS = ["text", "reasoning", "tool_args", "tool_ok", "tool_err", "custom", "llm", "node", "tool_run", "empty"]


class Child(ModuleBase):
    blocking = False

    def __init__(self, kind: str, actions: list[Action]) -> None:
        self.kind = kind  # type: ignore[assignment]
        self.actions = actions

    def forward(self, _: t.Any) -> t.Iterator[t.Any]:
        yield from play(self.actions)


def play(actions: list[Action]) -> t.Iterator[t.Any]:
    ctx = streamtap.current()
    assert ctx is not None
    for _i, (what, n) in enumerate(actions):
        cid = f"call{n % 3}"
        if what == "text":
            yield f"t{n} "
        elif what == "empty":
            yield ""
        elif what == "reasoning":
            yield Delta(f"r{n}", "reasoning")
        elif what == "tool_args":
            yield Delta('{"a":', "tool_args", cid)
        elif what in ("tool_ok", "tool_err"):
            ctx.tool(cid, "lookup", "requested", arguments={"n": n})
            if what == "tool_ok":
                ctx.tool(cid, "lookup", "result", result=n)
            else:
                ctx.tool(cid, "lookup", "error", error=ValueError("bad"))
        elif what == "custom":
            streamtap.emit(f"prog ress{n}", {"n": n})
        elif what in ("llm", "node", "tool_run"):
            kind = {"llm": "llm", "node": "node", "tool_run": "tool"}[what]
            Child(kind, [("text", n), ("reasoning", n)] if n % 2 else [("text", n)])(None)


class Root(ModuleBase):
    kind = "agent"

    def __init__(self, actions: list[Action], ending: str) -> None:
        self.actions = actions
        self.ending = ending

    def forward(self, _: t.Any) -> t.Iterator[t.Any]:
        yield from play(self.actions)
        if self.ending == "error":
            raise RuntimeError("boom")
        if self.ending == "cancel":
            raise streamtap.RunCancelled("stopped by the user")
        if self.ending == "interrupt":
            raise Pause()


class Pause(Exception):
    __streamtap_status__ = "interrupted"

    def __init__(self) -> None:
        super().__init__("paused")
        self.streamtap_output = {
            "type": "streamtap.pause",
            "id": "p1",
            "state": {"secret": 1},
            "interrupts": [{"id": "i1", "payload": {"question": "ok?"}, "schema": {"type": "boolean"}}],
        }


def events_of(actions: list[Action], ending: str) -> list[dict[str, t.Any]]:
    with capture_events() as log:
        try:
            Root(actions, ending)(None)
        except (RuntimeError, streamtap.RunCancelled, Pause):
            pass
    return [e.to_dict() for e in log]


def mapped(events: list[dict[str, t.Any]], **options: t.Any) -> list[dict[str, t.Any]]:
    root = events[-1]["run"]["root_id"]
    m = UIMessageMapper(root, message_id="m1", **options)
    parts = m.begin()
    for ev in events:
        parts += m.feed(ev)
    if not m.done:
        parts += m.close()
    assert m.done
    return parts


def spoken(events: list[dict[str, t.Any]]) -> list[str]:
    """The rule for user-facing text: text chunks of non-tool runs, except where a run repeats
    what its descendants already showed (a relay)."""
    parent = {e["run"]["run_id"]: e["run"]["parent_id"] for e in events}
    echo: dict[str, str] = {}  # run -> its descendants' text it has not repeated yet
    out = []
    for e in events:
        if e["kind"] != "chunk" or e["channel"] != "text" or e["run"]["kind"] == "tool":
            continue
        rid, delta = e["run"]["run_id"], e["delta"]
        if rid in echo:
            if echo[rid].startswith(delta):
                echo[rid] = echo[rid][len(delta) :]
                continue
            echo[rid] = ""
        out.append(delta)
        p = parent.get(rid)
        while p is not None:
            echo[p] = echo.get(p, "") + delta
            p = parent.get(p)
    return out


actions_st = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 9)), max_size=14)


@settings(max_examples=60, deadline=None)
@given(
    actions=actions_st,
    ending=st.sampled_from(["ok", "error", "cancel", "interrupt"]),
    verbose=st.booleans(),
    stream_text=st.booleans(),
)
def test_any_run_maps_to_a_valid_stream(actions, ending, verbose, stream_text):
    events = events_of(actions, ending)
    parts = mapped(events, verbose=verbose, stream_text=stream_text)
    check_ui_stream(parts)
    last = parts[-1]
    expected = {
        "ok": ("finish", "stop"),
        "error": ("finish", "error"),
        "interrupt": ("finish", "other"),
        "cancel": ("abort", None),
    }[ending]
    assert (last["type"], last.get("finishReason")) == expected
    visible = "".join(spoken(events))
    texts: dict[str, str] = {}  # the message's text parts, in the order they opened (as the AI SDK builds them)
    for p in parts:
        if p["type"] == "text-start":
            texts[p["id"]] = ""
        elif p["type"] == "text-delta":
            texts[p["id"]] += p["delta"]
    shown = "".join(texts.values())
    assert shown == visible or (ending == "ok" and not visible)
    if not verbose:
        assert not [p for p in parts if p["type"].startswith(("tool-", "reasoning-")) or p["type"] == "data-run"]


@settings(max_examples=40, deadline=None)
@given(actions=actions_st, ending=st.sampled_from(["ok", "error", "cancel"]), cut=st.integers(0, 60))
def test_a_stream_started_mid_run_is_still_valid(actions, ending, cut):
    events = events_of(actions, ending)
    parts = mapped(events[min(cut, len(events) - 1) :])  # an expired buffer: replay from later on
    check_ui_stream(parts)


def test_interrupt_part_carries_questions_not_state():
    parts = mapped(events_of([("text", 1)], "interrupt"))
    [part] = [p for p in parts if p["type"] == "data-interrupt"]
    assert part["id"] == "p1"
    assert part["data"]["interrupts"] == [{"id": "i1", "payload": {"question": "ok?"}, "schema": {"type": "boolean"}}]
    assert "state" not in part["data"]


def test_a_parents_own_words_after_its_model_spoke_are_shown():
    """An agent that calls a model, then answers in its own words: both are shown (review finding)."""

    class Classify(ModuleBase):
        kind = "llm"

        def forward(self, x):
            yield "weather"

    class Agent(ModuleBase):
        kind = "agent"

        def forward(self, x):
            topic = Classify()(x)
            yield f"You asked about {topic}. It is sunny."

    with capture_events() as log:
        Agent()(None)
    parts = mapped([e.to_dict() for e in log])
    check_ui_stream(parts)
    assert (
        "".join(p["delta"] for p in parts if p["type"] == "text-delta")
        == "weatherYou asked about weather. It is sunny."
    )


def test_relayed_text_is_not_shown_twice():
    class Model(ModuleBase):
        kind = "llm"

        def forward(self, x):
            yield "hello "
            yield "world"

    class Relay(ModuleBase):
        kind = "agent"

        def forward(self, x):
            yield "Let me see. "  # its own words, before any child spoke
            yield from Model().stream(x).text()  # a relay of its model's text

    with capture_events() as log:
        Relay()(None)
    parts = mapped([e.to_dict() for e in log])
    check_ui_stream(parts)
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == "Let me see. hello world"


def test_other_roots_are_ignored_and_close_ends_an_unfinished_stream():
    events = events_of([("text", 1)], "ok")
    m = UIMessageMapper("someone-else")
    assert m.begin() == [{"type": "start"}]
    assert all(m.feed(e) == [] for e in events)
    assert [p["type"] for p in m.close("gone")] == ["error", "finish"]
    assert m.close() == []


def test_names_and_encoding():
    assert data_part_name("node progress/1") == "data-node-progress-1"
    assert data_part_name("") == "data-event"
    assert (
        encode_part({"type": "text-delta", "id": "t", "delta": "é\n"})
        == b'data: {"type":"text-delta","id":"t","delta":"\xc3\xa9\\n"}\n\n'
    )


def test_run_parts_are_capped():
    class Leaf(ModuleBase):
        def forward(self, x):
            return x

    class Many(ModuleBase):
        def forward(self, n):
            for i in range(n):
                Leaf()(i)
            return "done"

    with capture_events() as log:
        Many()(30)
    parts = mapped([e.to_dict() for e in log], max_run_parts=10)
    check_ui_stream(parts)
    runs = {p["id"] for p in parts if p["type"] == "data-run"}
    assert len(runs) == 10 and log[0].run.run_id in runs
    assert [p["delta"] for p in parts if p["type"] == "text-delta"] == ["done"]
