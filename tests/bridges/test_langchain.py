"""The LangChain bridge against the real langchain-core: GenericFakeChatModel, LCEL chains, tools, retrievers."""

from __future__ import annotations

import asyncio
import typing as t

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

import streamtap
from streamtap import ModuleBase, RunCancelled
from streamtap.bridges.langchain import StreamtapCallbackHandler, instrument

ANSWER = "LangChain tokens stream into streamtap live"


@pytest.fixture(scope="module", autouse=True)
def instrumented() -> StreamtapCallbackHandler:
    return instrument()  # once per process, as an application would: nothing is passed by hand below


def model(*messages: AIMessage | str) -> GenericFakeChatModel:
    return GenericFakeChatModel(
        messages=iter([m if isinstance(m, AIMessage) else AIMessage(content=m) for m in messages])
    )


def chain(*messages: AIMessage | str) -> t.Any:
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | model(*messages)


class Agent(ModuleBase):
    """A streamtap agent whose answer comes from a LangChain chain it streams."""

    kind = "agent"

    def __init__(self, runnable: t.Any) -> None:
        self.runnable = runnable

    def forward(self, q: str) -> t.Iterator[str]:
        for piece in self.runnable.stream({"q": q}):
            yield piece.content


def test_a_chain_inside_a_streamtap_run_streams_into_its_stream_nested():
    events = list(Agent(chain(ANSWER)).stream("hi"))
    [root] = [e.run for e in events if e.kind == "start" and e.run.parent_id is None]
    runs = {e.run.run_id: e.run for e in events if e.kind == "start"}
    by_name = {r.name: r for r in runs.values()}
    seq_ = by_name["RunnableSequence"]
    llm = by_name["GenericFakeChatModel"]
    assert seq_.parent_id == root.run_id and by_name["ChatPromptTemplate"].parent_id == seq_.run_id
    assert llm.parent_id == seq_.run_id and llm.kind == "llm" and llm.root_id == root.run_id
    assert llm.metadata["framework"] == "langchain"
    tokens = [e.delta for e in events if e.kind == "chunk" and e.run.run_id == llm.run_id]
    assert "".join(tokens) == ANSWER and len(tokens) > 5  # token by token, as LangChain streamed them
    assert [e.seq for e in events] == list(range(len(events)))  # one gap-free sequence for the whole tree
    ends = {e.run.run_id: e for e in events if e.kind == "end"}
    assert set(ends) == set(runs) and all(e.status == "ok" for e in ends.values())
    assert ends[llm.run_id].output == ANSWER
    [start] = [e for e in events if e.kind == "start" and e.run.run_id == llm.run_id]
    assert start.inputs == [{"role": "user", "content": "hi"}]


def test_the_page_shows_the_relayed_text_once():
    from streamtap.web import UIMessageMapper

    events = list(Agent(chain(ANSWER)).stream("hi"))
    mapper = UIMessageMapper(events[0].run.run_id)
    parts = [p for e in events for p in mapper.feed(e.to_dict())]
    # The model's tokens and the agent re-yielding them: the page shows them once, and the chain's steps as runs.
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == ANSWER
    names = {p["data"]["name"] for p in parts if p["type"] == "data-run"}
    assert {"Agent", "RunnableSequence", "ChatPromptTemplate", "GenericFakeChatModel"} <= names


async def test_async_chains_nest_under_the_current_run_through_contextvars():
    class AsyncAgent(ModuleBase):
        kind = "agent"
        blocking = False

        async def forward(self, q: str) -> str:
            a, b = await asyncio.gather(chain("one two").ainvoke({"q": q}), chain("three four").ainvoke({"q": q}))
            return f"{a.content} / {b.content}"

    events = [e async for e in AsyncAgent().astream("x")]
    root = events[0].run
    llms = [e.run for e in events if e.kind == "start" and e.run.kind == "llm"]
    assert len(llms) == 2 and all(r.root_id == root.run_id for r in llms)
    assert events[-1].output == "one two / three four"


def test_tool_calls_results_and_a_streamtap_module_inside_a_langchain_tool():
    class Lookup(ModuleBase):
        kind = "tool"

        def forward(self, city: str) -> dict[str, t.Any]:
            return {"city": city, "temperature": 10}

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return str(Lookup()(city))  # a streamtap module inside a LangChain tool

    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_7", "type": "tool_call"}

    class ToolAgent(ModuleBase):
        kind = "agent"

        def forward(self, q: str) -> str:
            asked = model(AIMessage(content="", tool_calls=[call])).invoke(q)
            result = get_weather.invoke(asked.tool_calls[0])
            return str(result.content)

    events = list(ToolAgent().stream("weather?"))
    tools = [(e.phase, e.call_id, e.name) for e in events if e.kind == "tool"]
    assert tools == [("requested", "call_7", "get_weather"), ("result", "call_7", "get_weather")]
    [requested] = [e for e in events if e.kind == "tool" and e.phase == "requested"]
    assert requested.arguments == {"city": "Paris"} and requested.run.kind == "llm"
    starts = {e.run.name: e.run for e in events if e.kind == "start"}
    assert starts["get_weather"].kind == "tool" and starts["Lookup"].parent_id == starts["get_weather"].run_id


def test_streamed_tool_call_arguments_are_tool_args_chunks():
    class StreamingToolModel(GenericFakeChatModel):
        """GenericFakeChatModel streaming a tool call's arguments in pieces (it streams only text itself)."""

        def _stream(
            self, messages: t.Any, stop: t.Any = None, run_manager: t.Any = None, **kwargs: t.Any
        ) -> t.Iterator[ChatGenerationChunk]:
            pieces = [
                {"name": "get_weather", "args": '{"ci', "id": "call_9", "index": 0},
                {"name": None, "args": 'ty": "Oslo"}', "id": None, "index": 0},
            ]
            for piece in pieces:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
                if run_manager:
                    run_manager.on_llm_new_token("", chunk=chunk)
                yield chunk

    class A(ModuleBase):
        kind = "agent"

        def forward(self, q: str) -> str:
            final = None
            for c in StreamingToolModel(messages=iter([])).stream(q):
                final = c if final is None else final + c
            return str(final.tool_calls if final is not None else None)

    events = list(A().stream("x"))
    args = [(e.call_id, e.delta) for e in events if e.kind == "chunk" and e.channel == "tool_args"]
    assert args == [("call_9", '{"ci'), ("call_9", 'ty": "Oslo"}')]  # the second piece has no id: matched by index
    [req] = [e for e in events if e.kind == "tool"]
    assert (req.call_id, req.name, req.arguments) == ("call_9", "get_weather", {"city": "Oslo"})


def test_reasoning_retriever_custom_events_and_errors():
    class Docs(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: t.Any) -> list[Document]:
            return [Document(page_content=f"about {query}", metadata={"source": "kb"})]

    def progress(x: t.Any) -> t.Any:
        dispatch_custom_event("progress", {"pct": 50})
        return x

    def boom(x: t.Any) -> t.Any:
        raise ValueError("the chain broke")

    thinking = AIMessage(content="ok", additional_kwargs={"reasoning_content": "let me think"})

    class A(ModuleBase):
        kind = "agent"

        def forward(self, q: str) -> str:
            docs = Docs().invoke(q)
            list(model(thinking).stream(q))
            (RunnableLambda(progress) | RunnableLambda(lambda x: x)).invoke(q)
            try:
                RunnableLambda(boom).invoke(q)
            except ValueError:
                pass
            return docs[0].page_content

    events = list(A().stream("sse"))
    [retrieval] = [e for e in events if e.kind == "end" and e.run.name == "Docs"]
    assert retrieval.run.kind == "tool" and retrieval.output == [
        {"page_content": "about sse", "metadata": {"source": "kb"}}
    ]
    assert [e.delta for e in events if e.kind == "chunk" and e.channel == "reasoning"] == ["let me think"]
    [custom] = [e for e in events if e.kind == "custom"]
    assert custom.name == "progress" and custom.data == {"pct": 50} and custom.run.name == "progress"
    [failed] = [e for e in events if e.kind == "end" and e.run.name == "boom"]
    assert failed.status == "error" and failed.error is not None and failed.error.message == "the chain broke"
    assert events[-1].status == "ok"


def test_cancelling_the_streamtap_run_stops_the_langchain_stream():
    produced: list[str] = []
    long = " ".join(f"w{i}" for i in range(500))

    class A(ModuleBase):
        kind = "agent"

        def forward(self, q: str) -> str:
            for piece in model(long).stream(q):  # only the bridge's token callbacks emit chunks here
                produced.append(piece.content)
            return "".join(produced)

    stream = A().buffered(4, "block").stream("x")  # a small buffer: the producer cannot run far ahead
    for ev in stream:
        if ev.kind == "chunk" and ev.run.kind == "llm":
            stream.handle.cancel("stop")
            break
    with pytest.raises(RunCancelled):
        stream.handle.result(timeout=10)
    assert len(produced) < 20  # the LangChain stream stopped at the next token, not after its 1000 tokens


def test_outside_any_streamtap_run_langchain_runs_are_roots_on_the_bus():
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        chain("just langchain").invoke({"q": "x"})
    roots = [e.run for e in seen if e.kind == "start" and e.run.parent_id is None]
    assert [r.name for r in roots] == ["RunnableSequence"]
    assert "".join(e.delta for e in seen if e.kind == "chunk") == ""  # invoke() does not stream tokens
    assert [e.output for e in seen if e.kind == "end" and e.run.kind == "llm"] == ["just langchain"]


def test_a_handler_passed_by_hand_is_not_added_twice(instrumented):
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        chain("once").invoke({"q": "x"}, config={"callbacks": [instrumented]})
    assert len([e for e in seen if e.kind == "start" and e.run.kind == "llm"]) == 1


def test_langgraph_graph_nodes_and_an_interrupt_answered_with_command_resume():
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt
    from typing_extensions import TypedDict

    class State(TypedDict):
        q: str
        a: str

    def ask(state: State) -> dict[str, str]:
        ok = interrupt({"question": "go on?"})
        return {"q": state["q"] + (" (approved)" if ok else "")}

    def answer(state: State) -> dict[str, str]:
        m = model("the graph answers")
        return {"a": "".join(str(c.content) for c in m.stream(state["q"]))}

    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_node("answer", answer)
    g.add_edge(START, "ask")
    g.add_edge("ask", "answer")
    g.add_edge("answer", END)
    graph = g.compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "lg1"}}

    class Run(ModuleBase):
        kind = "agent"

        def forward(self, x: t.Any) -> str:
            return str(graph.invoke(x, cfg).get("a", ""))

    first = list(Run().stream({"q": "hi"}))
    [flow] = [e.run for e in first if e.kind == "start" and e.run.kind == "flow"]
    assert flow.name == "LangGraph" and flow.parent_id == first[0].run.run_id
    [paused] = [e for e in first if e.kind == "end" and e.run.name == "ask"]
    assert paused.run.kind == "node" and paused.status == "interrupted" and paused.run.parent_id == flow.run_id
    second = list(Run().stream(Command(resume=True)))
    nodes = [e.run.name for e in second if e.kind == "start" and e.run.kind == "node"]
    assert nodes == ["ask", "answer"]
    [llm] = [e.run for e in second if e.kind == "start" and e.run.kind == "llm"]
    [node_answer] = [e.run for e in second if e.kind == "start" and e.run.name == "answer"]
    assert llm.parent_id == node_answer.run_id
    assert "".join(e.delta for e in second if e.kind == "chunk") == "the graph answers"
    assert second[-1].output == "the graph answers"
