"""Live spans: with ``live_spans`` on, each run's start exports a pending marker the final span supersedes.

Spans go through the real OpenTelemetry SDK (in-memory exporter, simple
processor) from the weather agent on the embedded model server over real HTTP.
"""

from __future__ import annotations

import json
import typing as t

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtap.agents import FunctionCallAgent
from streamtap.demo.weather import QUERY, get_n_day_weather_forecast, weather_agent
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI, capture_events
from streamtap.tools import tool
from streamtap.tracing import LIVE_SPANS_ENV, PENDING_ATTRIBUTE, TracingSubscriber


@pytest.fixture
def exporter() -> t.Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    provider.shutdown()


@pytest.fixture(scope="module")
def model() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def _hex(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def _parent(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def test_markers_arrive_while_the_run_goes_on_and_the_final_tree_is_the_run_tree(exporter, model):
    exp, provider = exporter
    seen_while_running: list[list[str]] = []

    @tool
    def get_current_weather(location: str, unit: str = "fahrenheit") -> str:
        """Get the current weather in a given location.

        Args:
            location (str): The city and state.
            unit (str): The temperature unit to use.
        """
        # What the backend holds while this tool runs: the markers of the runs in progress.
        seen_while_running.append(
            sorted(s.name for s in exp.get_finished_spans() if s.attributes.get(PENDING_ATTRIBUTE))
        )
        return json.dumps({"location": location, "temperature": "10", "unit": unit})

    agent = FunctionCallAgent(
        OpenAIChat("fake-gpt", base_url=model.base_url),
        [get_current_weather, get_n_day_weather_forecast],
        name="weather_agent",
    )
    with TracingSubscriber(provider, live_spans=True), capture_events(kinds=["start"]) as starts:
        agent(QUERY)
    # During the first tool call the agent (still running) was already in the backend, with the first model call.
    assert "invoke_agent weather_agent" in seen_while_running[0] and "chat fake-gpt" in seen_while_running[0]
    spans = list(exp.get_finished_spans())
    markers = [s for s in spans if s.attributes.get(PENDING_ATTRIBUTE)]
    real = [s for s in spans if not s.attributes.get(PENDING_ATTRIBUTE)]
    # The final tree equals the run tree: one real span per run, parented as the runs are.
    runs = {e.run.run_id: e.run for e in starts}
    by_run = {s.attributes["streamtap.run.id"]: s for s in real}
    assert len(real) == len(runs) == 5 and set(by_run) == set(runs)
    for rid, run in runs.items():
        assert _parent(by_run[rid]) == (_hex(by_run[run.parent_id]) if run.parent_id else None)
    # One marker per run: a zero-duration child of the run's real span, named like it, carrying no gen_ai.* attribute.
    assert len(markers) == len(runs)
    for m in markers:
        span = by_run[m.attributes["streamtap.run.id"]]
        assert _parent(m) == _hex(span) and m.context.trace_id == span.context.trace_id
        assert m.start_time == m.end_time == span.start_time and m.name == span.name
        assert not any(k.startswith("gen_ai.") for k in m.attributes)
        assert m.attributes["streamtap.pending.span_id"] == _hex(span)
        assert m.attributes["streamtap.pending.parent_span_id"] == (_parent(span) or "0" * 16)
        assert m.attributes["streamtap.run.kind"] == span.attributes["streamtap.run.kind"]


def test_live_spans_are_off_unless_asked_for(exporter, model, monkeypatch):
    exp, provider = exporter
    monkeypatch.delenv(LIVE_SPANS_ENV, raising=False)
    with TracingSubscriber(provider) as sub:
        weather_agent(base_url=model.base_url)("hello")
    assert sub.live_spans is False
    assert not [s for s in exp.get_finished_spans() if s.attributes.get(PENDING_ATTRIBUTE)]
    monkeypatch.setenv(LIVE_SPANS_ENV, "true")
    with TracingSubscriber(provider) as sub:
        weather_agent(base_url=model.base_url)("hello")
    assert sub.live_spans is True
    assert len([s for s in exp.get_finished_spans() if s.attributes.get(PENDING_ATTRIBUTE)]) == 2


def test_a_bad_live_spans_value_is_named_and_ignored(monkeypatch, caplog):
    monkeypatch.setenv(LIVE_SPANS_ENV, "maybe")
    with caplog.at_level("WARNING", logger="streamtap.tracing"):
        sub = TracingSubscriber(TracerProvider())
    assert sub.live_spans is False
    assert "STREAMTAP_LIVE_SPANS='maybe' is not true or false" in caplog.text
