"""Events are immutable, typed values with a stable JSON wire format."""

from __future__ import annotations

import dataclasses
import json
import math
import typing as t

import pytest

from streamtap.events import (
    Chunk,
    Custom,
    End,
    ErrorInfo,
    Run,
    Start,
    Timings,
    Tool,
    Usage,
    event_from_dict,
    to_jsonable,
)

RUN = Run("r1", "Echo", "module", None, "r1", ("t",), {"k": 1})


class TestShape:
    @pytest.mark.parametrize(
        "event",
        [
            Start(RUN, 0, {"q": "hi"}, 1.0),
            Chunk(RUN, 1, "x"),
            Tool(RUN, 2, "c1", "weather", "requested", {"city": "Paris"}),
            Custom(RUN, 3, "progress", {"pct": 50}),
            End(RUN, 4, "ok", "done", None, Usage(3, 4), Timings(1.0, 0.5, 0.1)),
        ],
    )
    def test_immutable_slotted_and_discriminated(self, event):
        """Assignment raises, there is no __dict__, and `kind` names the event."""
        with pytest.raises(AttributeError):
            event.seq = 99
        assert not hasattr(event, "__dict__")
        assert event.kind == type(event).__name__.lower()
        d = event.to_dict()
        assert d["kind"] == event.kind and d["seq"] == event.seq
        assert json.loads(json.dumps(d)) == d

    def test_wire_field_names_are_stable(self):
        """The JSON field names are part of the wire format."""
        assert set(Chunk(RUN, 1, "x").to_dict()) == {"kind", "seq", "run", "delta", "channel", "call_id"}
        assert set(End(RUN, 2, "ok").to_dict()) == {
            "kind",
            "seq",
            "run",
            "status",
            "output",
            "error",
            "usage",
            "timings",
            "attributes",
        }
        assert set(RUN.to_dict()) == {"run_id", "name", "kind", "parent_id", "root_id", "tags", "metadata", "path"}
        assert set(Tool(RUN, 1, "c", "n", "error", error=ErrorInfo("E", "m")).to_dict()["error"]) == {"type", "message"}


class TestChunkAddition:
    def test_chunks_add_up(self):
        """Chunks of one run and channel join like LangChain's message chunks."""
        total = Chunk(RUN, 1, "The") + Chunk(RUN, 2, " sky") + Chunk(RUN, 3, "")
        assert total.delta == "The sky" and total.seq == 3 and total.channel == "text"

    def test_different_streams_refuse_to_add(self):
        """Adding chunks of different channels is a clear error, not a silent mix."""
        with pytest.raises(ValueError, match="channel 'reasoning'"):
            Chunk(RUN, 1, "a") + Chunk(RUN, 2, "b", "reasoning")


class TestValues:
    def test_usage_adds_field_by_field(self):
        """Usages add; absent optional fields stay absent."""
        u = Usage(1, 2) + Usage(3, 4, reasoning_tokens=5)
        assert u == Usage(4, 6, 5, None)
        assert u.to_dict() == {"input_tokens": 4, "output_tokens": 6, "reasoning_tokens": 5}

    def test_error_info_names_the_exception(self):
        """Builtins keep their short name; others are qualified by module."""
        assert ErrorInfo.from_exception(ValueError("bad")) == ErrorInfo("ValueError", "bad")
        assert ErrorInfo.from_exception(json.JSONDecodeError("m", "d", 0)).type == "json.decoder.JSONDecodeError"


class TestJsonable:
    def test_odd_values_become_json(self):
        """Sets, bytes, dataclasses, NaN and unknown objects all serialise."""

        @dataclasses.dataclass
        class P:
            x: int

        class Opaque:
            def __repr__(self) -> str:
                return "<opaque>"

        value = {"s": {1}, "b": b"hi", "p": P(1), "nan": math.nan, "o": Opaque(), 3: (1, 2)}
        out = to_jsonable(value)
        assert out == {"s": [1], "b": "hi", "p": {"x": 1}, "nan": "nan", "o": "<opaque>", "3": [1, 2]}
        json.dumps(out)

    def test_containers_of_every_kind_convert_alike(self):
        """Exact dicts and lists take a fast path; subclasses, proxies and named tuples give the same JSON."""
        import collections
        import types

        class Point(t.NamedTuple):
            x: int
            y: tuple[int, ...]

        class WithToDict(dict):
            def to_dict(self):
                return {"custom": True}

        inner = {"b": (1, 2), 2: [3]}
        for mapping in (
            inner,
            collections.OrderedDict(inner),
            types.MappingProxyType(inner),
            collections.defaultdict(int, inner),
        ):
            assert to_jsonable(mapping) == {"b": [1, 2], "2": [3]}
        assert to_jsonable(Point(1, (2,))) == {"x": 1, "y": [2]}
        assert to_jsonable(WithToDict(a=1)) == {"custom": True}
        assert to_jsonable(frozenset({"a"})) == ["a"]
        assert to_jsonable([{"k": math.inf}]) == [{"k": "inf"}]

    def test_cycles_do_not_hang(self):
        """A self-referencing structure is cut off instead of recursing forever."""
        a: list = []
        a.append(a)
        json.dumps(to_jsonable(a))


class TestAddingChunks:
    """Chunk + Chunk: joins text deltas of one stream (LangChain's additive chunks), nothing else."""

    def test_text_chunks_add_up_to_the_text_so_far(self) -> None:
        """chunks[0] + chunks[1] + chunks[2] is one chunk with the joined text and the last seq."""
        parts = [Chunk(RUN, i, d) for i, d in enumerate(["The", " sky", " is"])]
        total = parts[0] + parts[1] + parts[2]
        assert (total.delta, total.seq, total.run, total.channel) == ("The sky is", 2, RUN, "text")
        assert len(total) == len(parts[0])  # not tuple concatenation

    def test_chunks_of_different_streams_do_not_add(self) -> None:
        """Another run or channel: ValueError saying to filter first."""
        with pytest.raises(ValueError, match="Filter by run and channel first"):
            Chunk(RUN, 0, "a") + Chunk(RUN, 1, "b", "reasoning")

    def test_data_chunks_do_not_add(self) -> None:
        """Partial objects are whole values: adding them is refused with what to do instead."""
        with pytest.raises(TypeError, match="keep the last one"):
            Chunk(RUN, 0, {"a": 1}, "data") + Chunk(RUN, 1, {"a": 12}, "data")


PATHED = Run("r2", "Plan", "node", "r1", "r1", ("t",), {"k": [1, 2]}, ("plan_act", "Plan"))
EVENTS = [
    Start(PATHED, 0, {"q": "hi"}, 1.5),
    Chunk(PATHED, 1, "x", "tool_args", "c1"),
    Tool(PATHED, 2, "c1", "weather", "error", {"city": "Paris"}, None, ErrorInfo("ValueError", "bad")),
    Custom(PATHED, 3, "progress", {"pct": 50}),
    End(PATHED, 4, "ok", "done", None, Usage(3, 4, None, 1), Timings(1.0, 0.5, 0.1), {"model": "m"}),
]


class TestWireFormat:
    def test_to_dict_is_exactly_the_wire_format(self) -> None:
        """The generated to_dict gives exactly the historic wire dicts, key order included (run.path too)."""
        run = {
            "run_id": "r2", "name": "Plan", "kind": "node", "parent_id": "r1", "root_id": "r1",
            "tags": ["t"], "metadata": {"k": [1, 2]}, "path": ["plan_act", "Plan"],
        }  # fmt: skip
        expected = [
            {"kind": "start", "seq": 0, "run": run, "inputs": {"q": "hi"}, "started_at": 1.5},
            {"kind": "chunk", "seq": 1, "run": run, "delta": "x", "channel": "tool_args", "call_id": "c1"},
            {
                "kind": "tool", "seq": 2, "run": run, "call_id": "c1", "name": "weather", "phase": "error",
                "arguments": {"city": "Paris"}, "result": None, "error": {"type": "ValueError", "message": "bad"},
            },
            {"kind": "custom", "seq": 3, "run": run, "name": "progress", "data": {"pct": 50}},
            {
                "kind": "end", "seq": 4, "run": run, "status": "ok", "output": "done", "error": None,
                "usage": {"input_tokens": 3, "output_tokens": 4, "cached_input_tokens": 1},
                "timings": {"started_at": 1.0, "duration": 0.5, "time_to_first_chunk": 0.1},
                "attributes": {"model": "m"},
            },
        ]  # fmt: skip
        got = [ev.to_dict() for ev in EVENTS]
        assert got == expected
        assert [list(d) for d in got] == [list(d) for d in expected]

    @pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
    def test_event_from_dict_is_the_inverse(self, event) -> None:
        """event_from_dict(ev.to_dict()) gives back an equal event of the same class."""
        back = event_from_dict(json.loads(json.dumps(event.to_dict())))
        assert type(back) is type(event)
        assert back.to_dict() == event.to_dict()

    def test_event_from_dict_names_what_is_wrong(self) -> None:
        """An unknown kind or a missing field raises ValueError naming it."""
        with pytest.raises(ValueError, match="Unknown event kind 'bogus'"):
            event_from_dict({"kind": "bogus", "seq": 0, "run": {"run_id": "r"}})
        with pytest.raises(ValueError, match="call_id"):
            event_from_dict({"kind": "tool", "seq": 0, "run": {"run_id": "r"}, "name": "n", "phase": "result"})

    def test_kind_is_a_class_level_literal(self) -> None:
        """`kind` is a class attribute, not a field: it is not in the tuple, and costs nothing per event."""
        for ev in EVENTS:
            assert "kind" not in type(ev)._fields
            assert type(ev).kind == ev.kind


def test_the_typed_events_example_runs(run_example) -> None:
    """examples/typed_events.py streams, narrows by kind and round-trips every event through JSON."""
    out = run_example("typed_events.py")
    assert "STREAMTAP STREAMS TYPED EVENTS DONE" in out
    assert "end   Pipeline ok" in out and "round-trip ok" in out
