"""Sequential and parallel composition of any modules."""

from __future__ import annotations

import asyncio
import threading
import typing as t

import pytest

from streamtap import ModuleBase, UsageError
from streamtap.flows import AsyncParallel, AsyncSequential, Parallel, Sequential
from streamtap.testing import capture_events, check_invariants


class Words(ModuleBase):
    def forward(self, text: str) -> t.Iterator[str]:
        for w in text.split():
            yield w + " "


class Upper(ModuleBase):
    def forward(self, text: str) -> str:
        return text.upper()


class AsyncLen(ModuleBase):
    async def forward(self, text: str) -> int:
        await asyncio.sleep(0)
        return len(text)


def test_sequential_pipes_outputs_and_streams_each_step() -> None:
    seq = Sequential(Words(), Upper(), name="Pipe")
    stream = seq.stream("a b")
    events = list(stream)
    check_invariants(events)
    assert stream.handle.result() == "A B "
    assert [(e.run.name, e.delta) for e in events if e.kind == "chunk"] == [("Words", "a "), ("Words", "b ")]
    assert events[0].run.kind == "flow"
    assert {e.run.parent_id for e in events if e.kind == "start" and e.run.name != "Pipe"} == {events[0].run.run_id}


def test_parallel_runs_branches_concurrently_in_threads_that_go_away() -> None:
    barrier = threading.Barrier(2)

    class Meet(ModuleBase):
        def __init__(self, name: str) -> None:
            self.name = name

        def forward(self, x: str) -> str:
            barrier.wait(timeout=5)  # both branches must be running at once
            return x + self._run_name()

    before = set(threading.enumerate())
    with capture_events() as events:
        assert Parallel(Meet(name="L"), Meet(name="R"))("x") == ["xL", "xR"]
        assert Parallel(left=Upper(), size=AsyncLen())("abc") == {"left": "ABC", "size": 3}
    check_invariants(events)
    assert set(threading.enumerate()) - before == set()


async def test_async_variants() -> None:
    assert await AsyncSequential(Words(), Upper(), AsyncLen()).acall("a b") == 4
    out = await AsyncParallel(Upper(), AsyncLen(), name="Fan").acall("hey")
    assert out == ["HEY", 3]


def test_composition_mistakes_are_errors() -> None:
    with pytest.raises(UsageError, match="needs at least one step"):
        Sequential()
    with pytest.raises(UsageError, match="either positionally .* or by name"):
        Parallel(Upper(), b=Upper())
    with pytest.raises(UsageError, match="a step is a module .* or a plain function"):
        Sequential(Upper(), 42)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"got the class Upper; pass an instance \(Upper\(\)\)"):
        Sequential(Upper)


def test_a_failing_branch_fails_the_parallel_after_all_branches_end() -> None:
    class Boom(ModuleBase):
        def forward(self, x: t.Any) -> t.Any:
            raise KeyError("bad branch")

    with capture_events() as events, pytest.raises(KeyError, match="bad branch"):
        Parallel(Upper(), Boom())("x")
    check_invariants(events)
    assert sorted((e.run.name, e.status) for e in events.of("end")) == [
        ("Boom", "error"),
        ("Parallel", "error"),
        ("Upper", "ok"),
    ]
