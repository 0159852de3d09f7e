"""Plain functions as steps, and the @streamtap.step decorator (written as a user writes them)."""

from __future__ import annotations

import asyncio
import typing as t
from collections.abc import AsyncIterator, Iterator

import pytest

import streamtap
from streamtap import UsageError, step
from streamtap.events import Chunk, End, Start
from streamtap.flows import AsyncFlow, AsyncParallel, AsyncSequential, Flow, Parallel, Sequential
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import model_endpoint


def retrieve(question: str) -> str:
    return f"context: harrison worked at kensho\nQuestion: {question}"


def shout(text: str) -> Iterator[str]:
    for word in text.split():
        yield word.upper() + " "


async def fetch(x: str) -> str:
    await asyncio.sleep(0)
    return x[::-1]


async def tokens(x: str) -> t.AsyncIterator[str]:
    for ch in x:
        yield ch


def _starts(events: t.Iterable[t.Any]) -> list[Start]:
    return [e for e in events if isinstance(e, Start)]


class TestFunctionsInFlows:
    def test_sequential_of_functions_and_a_model(self) -> None:
        """Sequential(retrieve, llm, shout): each function is a run named after it; the generator streams."""
        with model_endpoint(token_delay=0) as base_url:
            llm = OpenAIChat("fake-gpt", base_url=base_url)
            chain = Sequential(retrieve, llm, shout)
            events = list(chain.stream("Where did harrison work?"))
        assert [s.run.path for s in _starts(events)] == [
            ("Sequential",),
            ("Sequential", "retrieve"),
            ("Sequential", "OpenAIChat"),
            ("Sequential", "shout"),
        ]
        shouted = [e.delta for e in events if isinstance(e, Chunk) and e.run.name == "shout"]
        assert len(shouted) > 1 and "KENSHO" in "".join(shouted)
        assert events[-1].kind == "end" and events[-1].status == "ok"

    def test_async_functions_in_async_flows(self) -> None:
        """Coroutine and async generator functions are awaited / streamed by the async compositions."""

        async def main() -> tuple[t.Any, t.Any]:
            seq = await AsyncSequential(fetch, tokens).acall("abc")
            par = await AsyncParallel(fetch, tokens, name="fan").acall("xy")
            return seq, par

        assert main_result(main) == ("cba", ["yx", "xy"])

    def test_parallel_branches_may_be_functions(self) -> None:
        """Parallel(len, str.upper) runs both; named branches too."""
        assert Parallel(len, str.upper)("ab") == [2, "AB"]
        assert Parallel(size=len, loud=str.upper)("ab") == {"size": 2, "loud": "AB"}

    def test_graph_nodes_may_be_functions(self) -> None:
        """In a graph a function gets the shared store and the str it returns is the action."""
        counts: list[int] = []

        def plan(shared: dict[str, t.Any]) -> str:
            shared["n"] = shared.get("n", 0) + 1
            counts.append(shared["n"])
            return "act" if shared["n"] < 3 else "stop"

        def act(shared: dict[str, t.Any]) -> Iterator[str]:
            yield f"acting {shared['n']} "

        def stop(shared: dict[str, t.Any]) -> str:
            return f"done after {shared['n']}"

        start = Flow(plan).start_node
        assert start is not None
        start - "act" >> act >> start
        start - "stop" >> stop
        flow = Flow(start, name="plan_act")
        events = list(flow.stream({}))
        text = [(e.run.path, e.delta) for e in events if isinstance(e, Chunk)]
        assert text == [(("plan_act", "act"), "acting 1 "), (("plan_act", "act"), "acting 2 ")]
        assert events[-1].output == "done after 3" and counts == [1, 2, 3]

    def test_async_function_node_needs_an_async_flow(self) -> None:
        """A coroutine function node in a sync Flow is refused, naming the async variant."""

        async def work(shared: t.Any) -> None:
            return None

        with pytest.raises(UsageError, match="AsyncFlow"):
            Flow(work)({})
        assert asyncio.run(AsyncFlow(work).acall({})) is None


def main_result(fn: t.Callable[[], t.Awaitable[t.Any]]) -> t.Any:
    return asyncio.run(fn())  # type: ignore[arg-type]


class TestStepDecorator:
    def test_step_sets_name_kind_tags(self) -> None:
        """@step(name=, kind=, tags=) shapes the function's runs; calling it runs it as a module."""

        @step(name="Docs", kind="tool", tags=["rag"], metadata={"index": "v1"})
        def search(q: str) -> list[str]:
            return [q, q + "!"]

        assert search("x") == ["x", "x!"]
        (start,) = _starts(search.stream("y"))
        assert (start.run.name, start.run.kind, start.run.tags, dict(start.run.metadata)) == (
            "Docs",
            "tool",
            ("rag",),
            {"index": "v1"},
        )

    def test_bare_step_keeps_the_function_name_and_docstring(self) -> None:
        """@step with no arguments names the run after the function and keeps its docstring."""

        @streamtap.step
        def summarise(text: str) -> Iterator[str]:
            """Say it short."""
            yield text[:3]

        assert summarise("abcdef") == "abc"
        assert summarise.__doc__ == "Say it short." and summarise.name == "summarise"

    def test_functions_nest_under_the_calling_run(self) -> None:
        """A step called inside another module is its child run, tags inherited."""

        @step
        def inner(x: int) -> int:
            return x + 1

        @step(tags=["outer"])
        def outer(x: int) -> int:
            return t.cast(int, inner(x)) * 2

        events = list(outer.stream(1))
        ends = {e.run.name: e for e in events if isinstance(e, End)}
        assert ends["outer"].output == 4 and ends["inner"].run.tags == ("outer",)
        assert ends["inner"].run.path == ("outer", "inner")

    @pytest.mark.parametrize("bad", [42, OpenAIChat])
    def test_step_refuses_what_is_not_a_function(self, bad: t.Any) -> None:
        """@step on a non-callable or a class is a clear error."""
        with pytest.raises(UsageError, match="@step decorates a function"):
            step(bad)

    def test_bad_kind_is_refused(self) -> None:
        """kind= must be one of the run kinds, and the message lists them."""
        with pytest.raises(UsageError, match=r"kind='robot'.*'llm'"):
            step(kind="robot")(len)  # type: ignore[arg-type]

    def test_transform_detection(self) -> None:
        """An Iterator/AsyncIterator annotation on the first parameter makes a transform; transform= overrides it."""

        def by_annotation(xs: Iterator[str]) -> Iterator[str]:
            yield from xs

        async def by_async(xs: AsyncIterator[str]) -> AsyncIterator[str]:
            async for x in xs:
                yield x

        def plain_gen(x: str) -> Iterator[str]:
            yield x

        def unannotated(xs):  # type: ignore[no-untyped-def]
            yield from xs

        assert step(by_annotation).transform == "sync"
        assert step(by_async).transform == "async"
        assert step(plain_gen).transform is None
        assert step(unannotated).transform is None
        assert step(transform=True)(unannotated).transform == "sync"
        assert step(transform=False)(by_annotation).transform is None
