"""The OpenAI Agents SDK bridge against the real ``openai-agents``, its model on the embedded server (real HTTP)."""

from __future__ import annotations

import gc
import json
import time
import typing as t

import pytest

pytest.importorskip("agents")
pytest.importorskip("openai")

from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_trace_processors
from openai import AsyncOpenAI

from streamtap import ModuleBase
from streamtap.bridges.openai_agents import AgentModule, StreamtapTracingProcessor
from streamtap.demo.weather import QUERY
from streamtap.testing import FakeOpenAI


@pytest.fixture(scope="module", autouse=True)
def processor() -> t.Iterator[StreamtapTracingProcessor]:
    # Only streamtap's processor: the SDK's default one would upload traces to the OpenAI platform.
    proc = StreamtapTracingProcessor()
    set_trace_processors([proc])
    yield proc
    set_trace_processors([])


@pytest.fixture(autouse=True)
def collect_garbage() -> t.Iterator[None]:
    # Each test leaves an openai AsyncClient and its closed event loop to the garbage collector. Their finalizers
    # run Python code; run later, inside pytest's ast.parse of another module, they trip CPython 3.11.7's
    # "AST constructor recursion depth mismatch" SystemError. Collect them here, at a harmless moment.
    yield
    gc.collect()


class Lookup(ModuleBase):
    """A streamtap module the tool calls: it must nest under the tool's run."""

    kind = "tool"
    fail_paris = False

    def forward(self, location: str) -> dict[str, t.Any]:
        if location.startswith("Paris") and self.fail_paris:
            raise LookupError("no station")
        return {"location": location, "temperature": "10" if "Tokyo" in location else "22", "unit": "celsius"}


@function_tool
def get_current_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location."""
    return json.dumps(Lookup()(location))


def agent_on(server: FakeOpenAI, model: str = "fake-model") -> Agent:
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return Agent(
        name="Weather",
        instructions="Answer about the weather.",
        tools=[get_current_weather],
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
    )


def test_agent_runs_stream_with_spans_as_nested_runs():
    with FakeOpenAI(reasoning=True) as server:
        stream = AgentModule(agent_on(server)).stream(QUERY)
        events = list(stream)
    root = events[0].run
    assert root.name == "Weather" and root.kind == "agent"
    starts = [e.run for e in events if e.kind == "start"]
    by_id = {r.run_id: r for r in starts}
    [flow] = [r for r in starts if r.kind == "flow"]
    assert flow.name == "Agent workflow" and flow.parent_id == root.run_id
    agents = [r for r in starts if r.kind == "agent" and r is not root]
    assert [a.name for a in agents] == ["Weather"]
    llms = [r for r in starts if r.kind == "llm"]
    assert [r.name for r in llms] == ["fake-model", "fake-model"]  # two model calls: the tool calls, then the answer
    tools = [r for r in starts if r.kind == "tool" and r.name == "get_current_weather"]
    assert len(tools) == 2
    lookups = [r for r in starts if r.name == "Lookup"]
    assert {by_id[r.parent_id].name for r in lookups} == {"get_current_weather"}  # nested under the tool's run
    assert all(r.root_id == root.run_id for r in starts) and [e.seq for e in events] == list(range(len(events)))
    # Live deltas: text, reasoning, tool arguments with the model's call ids; tool calls as Tool events.
    text = "".join(e.delta for e in events if e.kind == "chunk" and e.channel == "text")
    assert (
        text
        == "The current weather in Tokyo, Japan is 10 degrees Celsius, and in Paris, France, it is 22 degrees Celsius."
    )
    assert stream.handle.result() == text
    assert any(e.kind == "chunk" and e.channel == "reasoning" for e in events)
    args: dict[str, str] = {}
    for e in events:
        if e.kind == "chunk" and e.channel == "tool_args":
            args[e.call_id] = args.get(e.call_id, "") + e.delta
    assert sorted(json.loads(a)["location"] for a in args.values()) == ["Paris, France", "Tokyo, Japan"]
    phases = [(e.phase, e.call_id) for e in events if e.kind == "tool"]
    assert sorted(phases) == sorted([("requested", c) for c in args] + [("result", c) for c in args])
    [result] = [e for e in events if e.kind == "tool" and e.phase == "result" and "Tokyo" in json.dumps(e.result)]
    assert result.result["temperature"] == "10"
    ends = {e.run.run_id: e for e in events if e.kind == "end"}
    assert set(ends) == set(by_id) and all(e.status == "ok" for e in ends.values())


def test_a_failing_tool_ends_its_run_with_error_and_the_agent_goes_on():
    with FakeOpenAI() as server:
        Lookup.fail_paris = True
        try:
            events = list(AgentModule(agent_on(server)).stream(QUERY))
        finally:
            Lookup.fail_paris = False
    failed = [e for e in events if e.kind == "end" and e.run.name == "Lookup" and e.status == "error"]
    assert len(failed) == 1 and failed[0].error is not None and failed[0].error.message == "no station"
    [tool_run] = [e for e in events if e.kind == "end" and e.run.run_id == failed[0].run.parent_id]
    assert tool_run.status == "error" and tool_run.run.name == "get_current_weather"  # the SDK's span error
    assert events[-1].status == "ok"  # the SDK told the model, and the agent answered


def test_cancelling_the_run_closes_the_models_stream():
    story = " ".join(f"word{i}" for i in range(400))
    with FakeOpenAI(token_delay=0.02) as server:
        t0 = time.monotonic()
        stream = AgentModule(agent_on(server)).stream(story)
        for ev in stream:
            if ev.kind == "chunk" and ev.channel == "text" and ev.delta:
                stream.handle.cancel("stop")
                break
        record = server.wait_for_closed(timeout=10, after=t0)
        stream.close()
    assert record.closed_early and record.chunks_sent < 400


def test_an_agent_module_serves_the_web_app_with_its_spans_on_the_page():
    pytest.importorskip("starlette")
    import httpx

    from streamtap.web import create_app
    from streamtap.web.server import BackgroundServer

    with FakeOpenAI() as server, BackgroundServer(create_app(AgentModule(agent_on(server)))) as srv:
        body = {
            "id": "oa1",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": QUERY}]}],
            "trigger": "submit-message",
        }
        with httpx.stream("POST", srv.url + "/api/chat", json=body, timeout=30) as r:
            parts = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert text.startswith("The current weather in Tokyo, Japan is 10 degrees Celsius")
    tools = [p for p in parts if p["type"] == "tool-output-available"]
    assert len(tools) == 2 and all(p["output"]["unit"] == "celsius" for p in tools)
    runs = {p["data"]["name"] for p in parts if p["type"] == "data-run"}
    assert {"Agent workflow", "Weather", "fake-model", "get_current_weather", "Lookup"} <= runs
    assert parts[-1] == {"type": "finish", "finishReason": "stop"}
