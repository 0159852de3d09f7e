"""A recorded weather-agent run re-run offline against its recorded model answers; a changed tool is the divergence point.

The recording is made from a real run (the weather agent, the real ``openai``
client, the embedded model server over real HTTP); the re-run uses the real
agent and real tools, with :class:`ReplayChat` in place of the model.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from streamtap.agents import FunctionCallAgent
from streamtap.demo.weather import QUERY, get_n_day_weather_forecast, weather_agent, weather_tools
from streamtap.exceptions import UsageError
from streamtap.llm.replay import ReplayChat, ReplayExhaustedError
from streamtap.recording import Recorder
from streamtap.testing import FakeOpenAI, capture_events, check_invariants, first_divergence, replay
from streamtap.tools import tool


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("rec") / "weather.jsonl"
    with FakeOpenAI(reasoning=True) as model, Recorder(path):
        weather_agent(base_url=model.base_url)(QUERY)
    return path


def test_the_recorded_answers_reproduce_the_run(recording):
    recorded = replay(recording)
    llm = ReplayChat(recording)
    with capture_events() as events:
        answer = weather_agent(llm=llm)(QUERY)
    check_invariants(events)
    assert llm.calls == 2 and answer == recorded.of("end")[-1].output
    assert events.text() == recorded.text()
    assert first_divergence(recorded, events) is None
    # The reasoning and the tool-call arguments stream again, with their call ids.
    channels = {(e.channel, e.call_id) for e in events.of("chunk")}
    assert {(e.channel, e.call_id) for e in recorded.of("chunk")} == channels
    assert any(c == "reasoning" for c, _ in channels) and any(c == "tool_args" and i for c, i in channels)


@tool
def get_current_weather(location: str, unit: str = "fahrenheit") -> str:
    """Get the current weather in a given location (Paris got warmer).

    Args:
        location (str): The city and state, e.g. San Francisco, CA.
        unit (str): The temperature unit to use. Infer this from the users location.
    """
    if "paris" in location.lower():
        return json.dumps({"location": "Paris", "temperature": "31", "unit": "celsius"})
    return json.dumps({"location": "Tokyo", "temperature": "10", "unit": "celsius"})


def test_a_changed_tool_result_is_the_divergence_point(recording):
    recorded = replay(recording)
    agent = FunctionCallAgent(
        ReplayChat(recording), [get_current_weather, get_n_day_weather_forecast], name="weather_agent"
    )
    with capture_events() as events:
        agent(QUERY)
    d = first_divergence(recorded, events)
    assert d is not None
    # The first event that differs is the end of the Paris tool run: its output, the tool's result.
    assert d.field == "output" and d.expected is recorded[d.position]
    assert d.expected.kind == "end" and d.expected.run.kind == "tool" and d.expected.run.name == "get_current_weather"
    assert '"Paris' in d.path and d.path.startswith("weather_agent/get_current_weather")
    assert '"temperature": "22"' in d.expected.output and '"temperature": "31"' in d.actual.output
    assert "output differs" in str(d) and "22" in str(d) and "31" in str(d)
    # Nothing before it differs (the first model turn, the Tokyo call): the recording's first d.position
    # events are all reproduced, and only runs they do not reach yet are left over.
    before = first_divergence(recorded[: d.position], events)
    assert before is not None and before.field == "extra"


def test_streamed_text_that_departs_is_found_at_its_chunk(recording):
    recorded = replay(recording)
    lines = [e.to_dict() for e in recorded]
    texts = [i for i, x in enumerate(lines) if x["kind"] == "chunk" and x["channel"] == "text"]
    changed = [dict(x) for x in lines]
    changed[texts[3]] = {**changed[texts[3]], "delta": " Oslo"}
    d = first_divergence(lines, changed)
    assert d is not None and d.field == "text" and d.position == texts[3]
    assert "departs at character" in d.message
    # Chunk boundaries do not matter, only the text.
    merged = [x for i, x in enumerate(lines) if i not in texts[1:]]
    first = merged.index(lines[texts[0]])
    merged[first] = {**lines[texts[0]], "delta": "".join(lines[i]["delta"] for i in texts)}
    assert first_divergence(lines, merged) is None


def test_a_missing_run_and_an_extra_run_are_reported(recording):
    recorded = replay(recording)
    lines = [e.to_dict() for e in recorded]
    tool_run = next(x["run"]["run_id"] for x in lines if x["run"]["kind"] == "tool")
    fewer = [x for x in lines if x["run"]["run_id"] != tool_run]
    d = first_divergence(lines, fewer)
    assert d is not None and d.field == "missing" and d.expected.kind == "start" and d.expected.run.run_id == tool_run
    d = first_divergence(fewer, lines)
    assert d is not None and d.field == "extra" and d.expected is None and d.actual.run.run_id == tool_run


def test_more_model_calls_than_recorded_is_a_clear_error(recording):
    llm = ReplayChat(recording)
    weather_agent(llm=llm)(QUERY)
    with pytest.raises(ReplayExhaustedError, match="has 2 model calls and the new run asks for call 3"):
        llm([{"role": "user", "content": "again"}])


def test_a_recording_without_a_model_call_is_refused(tmp_path):
    path = tmp_path / "tools-only.jsonl"
    with Recorder(path):
        weather_tools().get("get_current_weather")(location="Tokyo")
    with pytest.raises(UsageError, match="no finished model call"):
        ReplayChat(path)
