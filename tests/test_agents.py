"""The function-call agent, on the real ``openai`` client against the embedded server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import typing as t

import pytest

import streamtap
from streamtap.agents import AgentStepLimitError, FunctionCallAgent
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.events import End
from streamtap.exceptions import RunCancelled
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.testing import FakeOpenAI, capture_events, check_invariants
from streamtap.tools import ToolRegistry, tool

ANSWER = "The current weather in Tokyo is 10 degrees Celsius, and in Paris, it is 22 degrees Celsius."


@pytest.fixture(scope="module")
def server() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def agent_on(srv: FakeOpenAI, model: str = "fake-gpt", **kw: t.Any) -> FunctionCallAgent:
    return weather_agent(base_url=srv.base_url, model=model, max_retries=0, **kw)


def test_the_seed_weather_agent(server: FakeOpenAI) -> None:
    agent = agent_on(server)
    with capture_events() as events:
        answer = agent(QUERY)
    check_invariants(events)
    assert answer == ANSWER
    runs = events.runs()
    agent_run = next(r for r in runs.values() if r.kind == "agent")
    # The user-facing text streamed live from the model's runs; the agent never re-yields it.
    text_chunks = [e for e in events.of("chunk") if e.channel == "text"]
    assert "".join(e.delta for e in text_chunks) == ANSWER and len(text_chunks) > 10
    assert all(e.run.kind == "llm" and e.run.parent_id == agent_run.run_id for e in text_chunks)
    agent_end = events.ends()[agent_run.run_id]
    assert agent_end.status == "ok" and agent_end.output == ANSWER
    assert text_chunks[-1].seq < agent_end.seq
    # Each tool call: requested -> result on the agent's run, and a child run of kind tool.
    tools = events.of("tool")
    assert all(e.run.run_id == agent_run.run_id for e in tools)
    requested = [e for e in tools if e.phase == "requested"]
    assert [e.arguments["location"] for e in requested] == ["Tokyo, Japan", "Paris, France"]
    for req in requested:
        result = next(e for e in tools if e.call_id == req.call_id and e.phase == "result")
        assert req.seq < result.seq and json.loads(result.result)["unit"] == "celsius"
    tool_runs = [r for r in runs.values() if r.kind == "tool"]
    assert len(tool_runs) == 2 and all(r.parent_id == agent_run.run_id for r in tool_runs)
    # The tool-call arguments streamed on their own channel, with the ids the Tool events use.
    arg_ids = {e.call_id for e in events.of("chunk") if e.channel == "tool_args"}
    assert arg_ids == {e.call_id for e in requested}
    # The second model request carried the tool results.
    sent = server.chat_records()[-1].messages
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]


def test_stream_gives_output_and_trace_from_one_iterator(server: FakeOpenAI) -> None:
    agent = agent_on(server)
    outputs, traces = [], []
    stream = agent.stream(QUERY)
    for event in stream:
        if event.kind == "chunk" and event.channel == "text":
            outputs.append(event.delta)
        elif event.kind == "tool":
            traces.append((event.phase, event.name))
    assert "".join(outputs) == ANSWER == stream.handle.result(timeout=5)
    assert traces == [("requested", "get_current_weather")] * 2 + [("result", "get_current_weather")] * 2


def test_parallel_tool_calls_run_concurrently(server: FakeOpenAI) -> None:
    barrier = threading.Barrier(2, timeout=5)
    threads: set[str] = set()

    @tool
    def get_current_weather(location: str, unit: str = "celsius") -> str:
        """Weather that waits for the other call: it only returns if both run at once."""
        threads.add(threading.current_thread().name)
        barrier.wait()
        return json.dumps({"location": location.split(",", maxsplit=1)[0], "temperature": "1", "unit": unit})

    llm = OpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    agent = FunctionCallAgent(llm, [get_current_weather])
    assert agent(QUERY) == "The current weather in Tokyo is 1 degrees Celsius, and in Paris, it is 1 degrees Celsius."
    assert len(threads) == 2


def test_bad_arguments_and_unknown_tools_go_back_to_the_model(server: FakeOpenAI) -> None:
    agent = agent_on(server)
    for directive, errors in (("[bad-args]", 2), ("[unknown-tool]", 1)):
        with capture_events() as events:
            answer = agent(f"What's the weather in Tokyo? {directive}")
        end = next(e for e in events if isinstance(e, End) and e.run.kind == "agent")
        assert end.status == "ok"
        failed = [e for e in events.of("tool") if e.phase == "error"]
        assert len(failed) == errors and all(e.error is not None for e in failed)
        assert not [e for e in events.of("tool") if e.phase == "result"]
        # The errors reached the model as tool messages, and it answered from them.
        tool_msgs = [m for m in server.chat_records()[-1].messages if m["role"] == "tool"]
        assert len(tool_msgs) == errors and all(m["content"].startswith("Error: ") for m in tool_msgs)
        assert [e.error.message for e in failed] == [m["content"][len("Error: ") :] for m in tool_msgs]
        assert answer.startswith("I could not get that: Error: ")
    assert "There is no tool named 'get_stock_price'" in answer


def test_a_failing_tool_is_reported_and_the_agent_goes_on(server: FakeOpenAI) -> None:
    @tool
    def get_current_weather(location: str) -> str:
        """Broken."""
        raise RuntimeError(f"sensor offline in {location}")

    agent = FunctionCallAgent(OpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0), [get_current_weather])
    with capture_events() as events:
        answer = agent("weather in Tokyo?")
    assert "sensor offline in Tokyo, Japan" in answer
    tool_end = next(e for e in events if isinstance(e, End) and e.run.kind == "tool")
    assert tool_end.status == "error"
    assert [e.phase for e in events.of("tool")] == ["requested", "error"]
    assert next(e for e in events if isinstance(e, End) and e.run.kind == "agent").status == "ok"


def test_step_limit(server: FakeOpenAI) -> None:
    agent = agent_on(server, max_steps=1)
    with capture_events() as events, pytest.raises(AgentStepLimitError, match="after 1 model turns"):
        agent(QUERY)
    end = next(e for e in events if isinstance(e, End) and e.run.kind == "agent")
    assert end.status == "error" and end.attributes["steps"] == 1


@pytest.mark.parametrize("model", ["fake-inline", "internlm2-chat-20b"])
def test_inline_markup_never_reaches_the_user(server: FakeOpenAI, model: str) -> None:
    agent = agent_on(server, model=model)
    with capture_events() as events:
        answer = agent(QUERY)
    text = "".join(e.delta for e in events.of("chunk") if e.channel == "text")
    assert text == "Let me look that up.\n\n" + ANSWER
    assert not any(m in text for m in ("<tool_call>", "</tool_call>", "<|action", "<|plugin|>", '"name"'))
    assert answer == ANSWER
    assert [e.phase for e in events.of("tool")] == ["requested", "requested", "result", "result"]


def test_cancelling_the_agent_closes_the_model_stream() -> None:
    with FakeOpenAI(token_delay=0.02) as srv:
        agent = agent_on(srv)
        with capture_events() as events:
            stream = agent.stream(QUERY)
            for event in stream:
                if event.kind == "chunk" and event.channel == "text":
                    break  # the final answer has begun streaming
            cancelled = time.monotonic()
            stream.close()
            rec = srv.wait_for_closed()
            with pytest.raises(RunCancelled):
                stream.handle.result(timeout=5)
        assert rec.finished_at - cancelled < 0.1
        statuses = {e.run.kind: e.status for e in events if isinstance(e, End)}
        assert statuses["agent"] == "cancelled"
        check_invariants(events)


async def test_async_use(server: FakeOpenAI) -> None:
    llm = AsyncOpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    agent = FunctionCallAgent(llm, ToolRegistry(agent_on(server).tools))
    assert await agent.acall(QUERY) == ANSWER
    texts = [e.delta async for e in agent.astream(QUERY) if e.kind == "chunk" and e.channel == "text"]
    assert "".join(texts) == ANSWER


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        FunctionCallAgent(object(), [], max_steps=0)  # type: ignore[arg-type]


def test_weather_agent_example(run_example: t.Callable[..., str]) -> None:
    lines = run_example("weather_agent.py").splitlines()
    outputs = [line[len("output: ") :] for line in lines if line.startswith("output: ")]
    assert "".join(outputs) == ANSWER
    assert sum(line.startswith("trace: [{'id'") for line in lines) == 2
    assert lines[-1] == f"ret: {ANSWER}"
    first_output = next(i for i, line in enumerate(lines) if line.startswith("output: "))
    assert all(line.startswith("trace: ") for line in lines[:first_output])  # tool calls traced before the answer


async def test_async_agent_runs_tool_calls_as_tasks(server: FakeOpenAI) -> None:
    from streamtap.agents import AsyncFunctionCallAgent

    both_started = asyncio.Event()
    started: list[str] = []

    @tool
    async def get_current_weather(location: str, unit: str = "celsius") -> str:
        """Weather that returns only once both calls have started: they must run concurrently."""
        started.append(location)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5)
        return json.dumps({"location": location.split(",", maxsplit=1)[0], "temperature": "3", "unit": unit})

    llm = AsyncOpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    agent = AsyncFunctionCallAgent(llm, [get_current_weather])
    with capture_events() as events:
        answer = await agent.acall(QUERY)
    assert answer == "The current weather in Tokyo is 3 degrees Celsius, and in Paris, it is 3 degrees Celsius."
    check_invariants(events)
    agent_run = next(r for r in events.runs().values() if r.kind == "agent")
    assert [e.phase for e in events.of("tool")] == ["requested", "requested", "result", "result"]
    assert all(r.parent_id == agent_run.run_id for r in events.runs().values() if r.kind in ("tool", "llm"))
    texts = [e.delta async for e in agent.astream(QUERY) if e.kind == "chunk" and e.channel == "text"]
    assert "".join(texts) == answer


def test_weather_agent_example_uses_the_configured_endpoint(
    server: FakeOpenAI, run_example: t.Callable[..., str]
) -> None:
    before = len(server.chat_records())
    stdout = run_example(
        "weather_agent.py",
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="from-env",
        OPENAI_MODEL="internlm2-chat-20b",
    )
    recs = server.chat_records()[before:]
    assert [r.model for r in recs] == ["internlm2-chat-20b"] * 2
    assert all(r.headers["authorization"] == "Bearer from-env" for r in recs)
    assert "<|action_start|>" not in stdout and stdout.splitlines()[-1] == f"ret: {ANSWER}"


def test_interrupt_inside_a_tool_pauses_the_agent_and_its_flow(server: FakeOpenAI) -> None:
    """A tool asking a human (interrupt()) pauses the agent and the flow around it; it is no tool error."""
    from streamtap.flows import Flow, Node
    from streamtap.interrupts import Interrupt, interrupt

    @tool
    def get_current_weather(location: str, unit: str = "celsius") -> str:
        """Weather, after a human's approval."""
        return "sunny" if interrupt({"approve": location}) else "denied"

    agent = FunctionCallAgent(
        OpenAIChat("fake-gpt", base_url=server.base_url, api_key="k", max_retries=0), [get_current_weather]
    )

    class AskAgent(Node):
        def exec(self, prep: t.Any) -> str:
            return agent("What's the weather like today in Tokyo?")

    with capture_events() as events, pytest.raises(Interrupt) as paused:
        Flow(AskAgent(), name="F")({})
    assert paused.value.record["interrupts"][0]["payload"] == {"approve": "Tokyo, Japan"}
    assert [e.phase for e in events.of("tool")] == ["requested"]
    assert {e.run.name: e.status for e in events.of("end")}["FunctionCallAgent"] == "interrupted"
    check_invariants(events)


def test_cancelled_agent_reports_no_tool_event_after_its_end(server: FakeOpenAI) -> None:
    """Tools still running when the agent is cancelled end before it, and report nothing on its run."""
    started = threading.Event()

    @tool
    def get_current_weather(location: str, unit: str = "celsius") -> str:
        """Weather, slowly, checking for cancellation."""
        started.set()
        for _ in range(200):
            streamtap.current().raise_if_cancelled()
            time.sleep(0.005)
        return "{}"

    agent = FunctionCallAgent(
        OpenAIChat("fake-gpt", base_url=server.base_url, api_key="k", max_retries=0), [get_current_weather]
    )
    with capture_events() as events:
        handle = agent.start("What's the weather like today in Tokyo and Paris?")
        assert started.wait(5)
        handle.cancel("stop")
        with pytest.raises(RunCancelled):
            handle.result(5)
    check_invariants(events)  # no Tool event after the agent's End; tool runs end before it
    assert {e.run.name: e.status for e in events.of("end")}["FunctionCallAgent"] == "cancelled"


def test_unhashable_items_for_a_set_are_an_error_for_the_model() -> None:
    """A set parameter given lists is a validation error the model can read, not a TypeError."""
    from streamtap.tools import ToolArgumentError

    @tool
    def tag(labels: set) -> str:  # type: ignore[type-arg]
        """Tag.

        Args:
            labels: the labels.
        """
        return ",".join(sorted(map(str, labels)))

    with pytest.raises(ToolArgumentError, match="hashable"):
        tag.validate('{"labels": [["a"], ["b"]]}')
