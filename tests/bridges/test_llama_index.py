"""The LlamaIndex bridge against the real llama-index-core: MockLLM, MockEmbedding, a vector index, FunctionTool."""

from __future__ import annotations

import gc
import typing as t

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.tools import FunctionTool

import streamtap
from streamtap import ModuleBase
from streamtap.bridges.llama_index import instrument


@pytest.fixture(scope="module", autouse=True)
def instrumented() -> t.Any:
    return instrument()  # once per process, on the root dispatcher: nothing is passed by hand below


class Agent(ModuleBase):
    kind = "agent"

    def __init__(self, body: t.Callable[[str], t.Any]) -> None:
        self.body = body

    def forward(self, q: str) -> t.Any:
        return self.body(q)


def starts(events: list[t.Any]) -> dict[str, t.Any]:
    return {e.run.name: e.run for e in events if e.kind == "start"}


def test_a_streaming_chat_streams_into_the_outer_run_and_ends_after_its_last_token():
    def body(q: str) -> str:
        return "".join(r.delta or "" for r in MockLLM(max_tokens=6).stream_chat([ChatMessage(role="user", content=q)]))

    events = list(Agent(body).stream("hello"))
    runs = starts(events)
    chat, complete = runs["MockLLM.stream_chat"], runs["MockLLM.stream_complete"]
    root = events[0].run
    assert chat.kind == "llm" and chat.parent_id == root.run_id and complete.parent_id == chat.run_id
    assert chat.metadata["framework"] == "llama-index"
    tokens = [e.delta for e in events if e.kind == "chunk" and e.run.run_id == chat.run_id]
    assert "".join(tokens) == "text text text text text text" and len(tokens) == 6
    [chat_end] = [e for e in events if e.kind == "end" and e.run.run_id == chat.run_id]
    last_token = max(e.seq for e in events if e.kind == "chunk" and e.run.run_id == chat.run_id)
    assert chat_end.seq > last_token and chat_end.status == "ok"  # not ended when the generator was returned
    assert chat_end.output == "text text text text text text"
    [start] = [e for e in events if e.kind == "start" and e.run.run_id == chat.run_id]
    assert start.inputs == {"messages": [{"role": "user", "content": "hello"}]}
    assert [e.seq for e in events] == list(range(len(events)))
    # The page shows the answer once, although both spans stream it.
    from streamtap.web import UIMessageMapper

    mapper = UIMessageMapper(root.run_id)
    parts = [p for e in events for p in mapper.feed(e.to_dict())]
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == "text text text text text text"


def test_a_streaming_query_engine_shows_retrieval_synthesis_and_the_model():
    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents(
        [Document(text="streamtap streams runs"), Document(text="LlamaIndex retrieves nodes")]
    )
    engine = index.as_query_engine(llm=MockLLM(max_tokens=4), streaming=True, similarity_top_k=1)

    def body(q: str) -> str:
        return "".join(engine.query(q).response_gen)

    events = list(Agent(body).stream("what streams?"))
    runs = starts(events)
    names = set(runs)
    assert {"RetrieverQueryEngine.query", "VectorIndexRetriever.retrieve"} <= names
    retriever = runs["VectorIndexRetriever.retrieve"]
    assert retriever.kind == "tool"
    [retrieved] = [e for e in events if e.kind == "end" and e.run.run_id == retriever.run_id]
    assert len(retrieved.output) == 1 and retrieved.output[0]["text"] in (
        "streamtap streams runs",
        "LlamaIndex retrieves nodes",
    )
    assert runs["MockLLM.stream"].kind == "llm" and all(r.root_id == events[0].run.run_id for r in runs.values())
    streamed = runs["MockLLM.stream_complete"]
    assert (
        "".join(e.delta for e in events if e.kind == "chunk" and e.run.run_id == streamed.run_id)
        == "text text text text"
    )
    assert events[-1].output == "text text text text"
    # The query's run ends after the answer it returned has streamed (LlamaIndex closed its span at once).
    [query_end] = [e for e in events if e.kind == "end" and e.run.name == "RetrieverQueryEngine.query"]
    assert query_end.seq > max(e.seq for e in events if e.kind == "chunk") and query_end.status == "ok"
    ends = {e.run.run_id for e in events if e.kind == "end"}
    assert ends == {e.run.run_id for e in events if e.kind == "start"}  # every run ended, streaming ones included


def test_tools_are_tool_runs_with_tool_events_and_failures_end_in_error():
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("the tool broke")

    class Inner(ModuleBase):
        def forward(self, x: int) -> int:
            return x * 2

    def doubled(x: int) -> int:
        """A tool that calls a streamtap module."""
        return int(Inner()(x))

    def body(q: str) -> int:
        out = FunctionTool.from_defaults(fn=add).call(a=1, b=2)
        FunctionTool.from_defaults(fn=doubled).call(x=4)
        try:
            FunctionTool.from_defaults(fn=broken).call(x=1)
        except ValueError:
            pass
        return int(out.raw_output)

    events = list(Agent(body).stream("x"))
    tools = [(e.phase, e.name) for e in events if e.kind == "tool"]
    assert ("requested", "FunctionTool.call") in tools and ("result", "FunctionTool.call") in tools
    [result] = [e for e in events if e.kind == "tool" and e.phase == "result"][:1]
    assert result.result == "3"
    failed = [e for e in events if e.kind == "end" and e.status == "error"]
    assert len(failed) == 1 and failed[0].run.kind == "tool" and failed[0].error.message == "the tool broke"
    assert events[-1].status == "ok" and events[-1].output == 3


async def test_async_calls_nest_through_contextvars():
    class AsyncAgent(ModuleBase):
        kind = "agent"
        blocking = False

        async def forward(self, q: str) -> str:
            gen = await MockLLM(max_tokens=3).astream_chat([ChatMessage(role="user", content=q)])
            return "".join([r.delta or "" async for r in gen])

    events = [e async for e in AsyncAgent().astream("hi")]
    llm = [e.run for e in events if e.kind == "start" and e.run.kind == "llm"]
    assert llm and all(r.root_id == events[0].run.run_id for r in llm)
    assert events[-1].output == "text text text"
    assert all(any(e.kind == "end" and e.run.run_id == r.run_id for e in events) for r in llm)


def test_an_abandoned_stream_ends_its_run_cancelled():
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        gen = MockLLM(max_tokens=10).stream_complete("a b c")
        next(gen)
        del gen
        gc.collect()
    ends = [e for e in seen if e.kind == "end" and e.run.name == "MockLLM.stream_complete"]
    assert [e.status for e in ends] == ["cancelled"]
