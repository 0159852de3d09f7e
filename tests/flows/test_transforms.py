"""Stream transforms: a step that reads the previous step's live stream (the LangChain seed's shapes)."""

from __future__ import annotations

import asyncio
import typing as t
from collections.abc import AsyncIterator, Iterator

import pytest

from streamtap.events import Chunk, End
from streamtap.flows import AsyncSequential, Sequential
from streamtap.llm.errors import LLMError
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.parsers import JsonOutputParser
from streamtap.testing import FakeOpenAI

PROMPT = "Output JSON. Tell the story of covering one's ears to steal a bell. Use the key `content`, and only that key."


def extract_content(objects: Iterator[dict[str, t.Any]]) -> Iterator[str]:
    """Only the new text of `content`, as the partial objects grow."""
    shown = 0
    for obj in objects:
        content = obj.get("content", "") if isinstance(obj, dict) else ""
        if len(content) > shown:
            yield content[shown:]
            shown = len(content)


@pytest.fixture(scope="module")
def srv() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI(token_delay=0.001) as server:
        yield server


def _first(events: list[t.Any], name: str, kind: str) -> int:
    return next(e.seq for e in events if e.kind == kind and e.run.name == name)


def test_model_parser_extract_streams_end_to_end(srv: FakeOpenAI) -> None:
    """Sequential(model, JsonOutputParser(), extract_content): the story streams while the model still talks."""
    chain = Sequential(OpenAIChat("fake-gpt", base_url=srv.base_url), JsonOutputParser(), extract_content)
    events = list(chain.stream(PROMPT))
    model_end = _first(events, "OpenAIChat", "end")
    assert _first(events, "JsonOutputParser", "chunk") < model_end
    assert _first(events, "extract_content", "chunk") < model_end  # live, not after the model finished
    partials = [e.delta for e in events if isinstance(e, Chunk) and e.run.name == "JsonOutputParser"]
    assert partials[0] in ({}, {"content": ""}) and len(partials) > 5
    story = "".join(e.delta for e in events if isinstance(e, Chunk) and e.run.name == "extract_content")
    assert story == partials[-1]["content"] and story.startswith("Covering")
    assert events[-1].run.name == "Sequential" and events[-1].output == story


def test_async_generator_transform_as_in_the_seed(srv: FakeOpenAI) -> None:
    """The seed's `async def _extract_content_stream(input_stream)` with an AsyncIterator annotation."""
    seen: list[dict[str, t.Any]] = []

    async def _extract_content_stream(input_stream: AsyncIterator[t.Any]) -> AsyncIterator[str]:
        async for item in input_stream:
            if not isinstance(item, dict) or "content" not in item:
                continue
            seen.append(item)
            yield item["content"]

    async def main() -> list[t.Any]:
        chain = AsyncSequential(
            AsyncOpenAIChat("fake-gpt", base_url=srv.base_url), JsonOutputParser(), _extract_content_stream
        )
        return [e async for e in chain.astream(PROMPT)]

    events = asyncio.run(main())
    assert len(seen) > 5 and seen[-1]["content"].startswith("Covering")
    assert _first(events, "_extract_content_stream", "chunk") < _first(events, "AsyncOpenAIChat", "end")
    assert events[-1].status == "ok"


def test_a_step_that_returns_feeds_a_transform_once() -> None:
    """A non-streaming step before a transform: the transform gets its output as one item."""

    def retrieve(q: str) -> list[str]:
        return [q, "kensho"]

    def count(items: Iterator[list[str]]) -> Iterator[str]:
        for docs in items:
            yield f"{len(docs)} docs"

    assert Sequential(retrieve, count)("where") == "2 docs"


def test_a_failing_upstream_fails_the_transform_and_the_sequence(srv: FakeOpenAI) -> None:
    """The model's 500 is raised inside the transform's loop; every run ends, the sequence with the error."""
    chain = Sequential(OpenAIChat("fake-gpt", base_url=srv.base_url, max_retries=0), JsonOutputParser())
    stream = chain.stream("[fault=500] " + PROMPT)
    events = list(stream)
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["OpenAIChat"].status == "error" and ends["JsonOutputParser"].status == "error"
    assert ends["Sequential"].status == "error"
    with pytest.raises(LLMError):
        stream.handle.result(timeout=10)


def test_a_transform_that_stops_early_cancels_its_upstream(srv: FakeOpenAI) -> None:
    """Leaving the loop (break) cancels the model call: it ends cancelled, the transform ends ok."""

    def first_three(pieces: Iterator[str]) -> str:
        got = []
        for piece in pieces:
            got.append(piece)
            if len(got) == 3:
                break
        return "".join(got)

    slow = OpenAIChat("fake-gpt", base_url=srv.base_url, extra_headers={"x-fake-delay": "0.05"})
    events = list(Sequential(slow, first_three).stream(PROMPT))
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["OpenAIChat"].status == "cancelled"
    assert ends["first_three"].status == "ok" and ends["Sequential"].status == "ok"
    assert ends["Sequential"].output == ends["first_three"].output


def test_parser_alone_reads_an_iterable_of_text() -> None:
    """JsonOutputParser()(pieces) is a transform outside flows too."""
    assert JsonOutputParser()(iter(['{"a": [1', ", 2]}"])) == {"a": [1, 2]}


def test_a_transforms_input_reads_as_its_upstream() -> None:
    """The transform run's Start shows which step's live stream it reads (not a bare generator)."""

    def words(text: str) -> Iterator[str]:
        yield from text.split()

    def count(pieces: Iterator[str]) -> int:
        return sum(1 for _ in pieces)

    events = list(Sequential(words, count).stream("a b c"))
    start = next(e for e in events if e.kind == "start" and e.run.name == "count")
    assert start.to_dict()["inputs"] == "<live stream of words>"
    assert events[-1].output == 3
