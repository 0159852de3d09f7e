"""The openai client's HTTP span nests under the chat module's span (OTel context is current in forward)."""

from __future__ import annotations

import asyncio
import gc
import json
import typing as t

import pytest
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.testing import FakeOpenAI
from streamtap.tracing import TracingSubscriber


@pytest.fixture
def spans() -> t.Iterator[InMemorySpanExporter]:
    """Our tracer plus the OpenTelemetry httpx2 instrumentation (openai 3.x sends its requests with httpx2)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = HTTPX2ClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with TracingSubscriber(provider):
            yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        # Finalise the clients now: CPython 3.11's compiler fails ("AST constructor recursion
        # depth mismatch") if a finaliser runs in the middle of a later import's compilation.
        gc.collect()


def _check(finished: t.Sequence[ReadableSpan], server: FakeOpenAI) -> None:
    chat = [s for s in finished if s.name == "chat fake-model"]
    http = [s for s in finished if s.attributes.get("streamtap.run.id") is None]
    assert len(chat) == 1 and len(http) == 1, [s.name for s in finished]
    chat_span, http_span = chat[0], http[0]
    assert http_span.name == "POST"
    assert http_span.kind == SpanKind.CLIENT
    assert http_span.parent is not None and http_span.parent.span_id == chat_span.context.span_id
    assert http_span.context.trace_id == chat_span.context.trace_id
    assert chat_span.start_time <= http_span.start_time and http_span.end_time <= chat_span.end_time
    a = chat_span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "fake-model"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.request.stream"] is True
    assert "gen_ai.input.messages" not in a  # content is opt-in


def test_http_span_is_a_child_of_the_chat_span(spans: InMemorySpanExporter, server: FakeOpenAI) -> None:
    """Sync client, streaming: httpx2's POST span is the chat span's child, in the same trace."""
    llm = OpenAIChat("fake-model", base_url=server.base_url)
    assert "You said" in str(llm("hello there"))
    llm.close()
    _check(spans.get_finished_spans(), server)


def test_http_span_is_a_child_of_the_chat_span_async(spans: InMemorySpanExporter, server: FakeOpenAI) -> None:
    """Async client, streamed through astream: the same nesting."""
    llm = AsyncOpenAIChat("fake-model", base_url=server.base_url)

    async def main() -> str:
        return "".join([piece async for piece in llm.astream("hello there").text()])

    assert "You said" in asyncio.run(main())
    _check(spans.get_finished_spans(), server)


# -- content in the GenAI shape, decoded from the wire ------------------------------------------

streamtap_otlp = pytest.importorskip("streamtap_otlp")
from genai_schema import check, check_all  # noqa: E402 - imported after the environment is set for it

from streamtap.demo.weather import weather_agent  # noqa: E402 - imported after the environment is set for it
from streamtap_otlp.testing import OtlpReceiver, ReceivedSpan  # noqa: E402 - imported after the environment is set for it

WEATHER_QUESTION = "What's the weather in Tokyo and Paris?"


def _exported_weather_run(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, protocol: str) -> list[ReceivedSpan]:
    """The weather agent (streaming, two tool calls), exported with content on to a real OTLP receiver."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with OtlpReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        export = streamtap_otlp.configure(endpoint, protocol=protocol, metrics=False, set_global=False)
        try:
            agent = weather_agent(base_url=server.base_url, system="You answer weather questions briefly.")
            answer = agent(WEATHER_QUESTION)
            assert "Tokyo" in answer and "Paris" in answer
            assert export.force_flush(10)
        finally:
            export.shutdown()
            gc.collect()
        return receiver.wait_for_spans(5)  # the agent, two chat turns, two tool calls


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_chat_spans_carry_genai_messages(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    """Both chat turns of a tool-calling agent: messages with parts, tool_call / tool_call_response parts,
    finish reasons, system instructions and tool definitions, all valid against the conventions' schemas."""
    spans = _exported_weather_run(server, monkeypatch, protocol)
    chats = sorted((s for s in spans if s.name == "chat fake-gpt"), key=lambda s: s.span.start_time_unix_nano)
    assert len(chats) == 2, [s.name for s in spans]
    first, second = (check_all(s.attributes) for s in chats)
    for decoded in (first, second):
        assert set(decoded) == {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"}
        assert [d["name"] for d in decoded["gen_ai.tool.definitions"]] == [
            "get_current_weather",
            "get_n_day_weather_forecast",
        ]
        assert decoded["gen_ai.tool.definitions"][0]["parameters"]["required"] == ["location"]

    # turn 1: system + user in, two tool calls out (no empty text part), finish_reason tool_call
    assert [m["role"] for m in first["gen_ai.input.messages"]] == ["system", "user"]
    assert first["gen_ai.input.messages"][1]["parts"] == [{"type": "text", "content": WEATHER_QUESTION}]
    (out1,) = first["gen_ai.output.messages"]
    assert out1["role"] == "assistant" and out1["finish_reason"] == "tool_call"
    calls = out1["parts"]
    assert [p["type"] for p in calls] == ["tool_call", "tool_call"]
    assert [p["arguments"]["location"].split(",")[0] for p in calls] == ["Tokyo", "Paris"]

    # turn 2: the history with the assistant's tool calls and one tool_call_response per call, text out
    roles = [m["role"] for m in second["gen_ai.input.messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert second["gen_ai.input.messages"][2]["parts"] == calls
    responses = [m["parts"][0] for m in second["gen_ai.input.messages"][3:]]
    assert [r["type"] for r in responses] == ["tool_call_response"] * 2
    assert [r["id"] for r in responses] == [c["id"] for c in calls]
    assert "Tokyo" in responses[0]["response"]
    (out2,) = second["gen_ai.output.messages"]
    assert (
        out2["finish_reason"] == "stop"
        and out2["parts"][0]["type"] == "text"
        and "Paris" in out2["parts"][0]["content"]
    )

    agent = next(s for s in spans if s.name == "invoke_agent weather_agent")
    decoded = check_all(agent.attributes)
    assert decoded["gen_ai.input.messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": WEATHER_QUESTION}]}
    ]
    assert decoded["gen_ai.output.messages"][0]["parts"] == out2["parts"]
    assert [d["name"] for d in decoded["gen_ai.tool.definitions"]] == [
        "get_current_weather",
        "get_n_day_weather_forecast",
    ]


def test_string_prompt_system_and_kept_history(server: FakeOpenAI) -> None:
    """Called with a string, the chat module's own system prompt is gen_ai.system_instructions and its kept
    history is in gen_ai.input.messages: the span shows what was sent."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    llm = OpenAIChat("fake-model", base_url=server.base_url, system="Be brief.", keep_history=True)
    try:
        with TracingSubscriber(provider, capture_content=True):
            llm("hello there")
            llm("and again")
    finally:
        llm.close()
        provider.shutdown()
    first, second = (s.attributes for s in exporter.get_finished_spans())
    assert check("gen_ai.system_instructions", second["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]
    sent = check("gen_ai.input.messages", second["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["parts"] == check("gen_ai.output.messages", first["gen_ai.output.messages"])[0]["parts"]
    assert sent[2]["parts"] == [{"type": "text", "content": "and again"}]


def test_reasoning_is_a_reasoning_part(server: FakeOpenAI) -> None:
    """A reasoning model's thoughts are a reasoning part before the text of the output message."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    llm = OpenAIChat("fake-reasoning", base_url=server.base_url)
    try:
        with TracingSubscriber(provider, capture_content=True):
            reply = llm("think about it")
    finally:
        llm.close()
        provider.shutdown()
    assert reply.reasoning
    (span,) = exporter.get_finished_spans()
    (out,) = check("gen_ai.output.messages", span.attributes["gen_ai.output.messages"])
    assert out["parts"] == [{"type": "reasoning", "content": reply.reasoning}, {"type": "text", "content": reply.text}]


# -- compared with the official instrumentation --------------------------------------------------


def test_richer_than_and_consistent_with_openai_v2(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """One streaming call with a tool, traced by streamtap and by opentelemetry-instrumentation-openai-v2 at once:
    streamtap's chat span has every gen_ai.* key the official one has, and each shared key is well formed."""
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    from streamtap.demo.weather import get_current_weather

    # util-genai 1.0-1.1 (what openai-v2 2.4b0 imports) take span_only; streamtap takes it too
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    llm = OpenAIChat("fake-model", base_url=server.base_url, system="Be brief.")
    try:
        with TracingSubscriber(provider):
            reply = llm("What's the weather in Paris?", tools=[get_current_weather])
    finally:
        instrumentor.uninstrument()
        llm.close()
        provider.shutdown()
        gc.collect()
    assert reply.tool_calls and reply.tool_calls[0].name == "get_current_weather"
    ours = [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "streamtap"]
    theirs = [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name != "streamtap"]
    assert len(ours) == 1 and len(theirs) == 1, [
        (s.name, s.instrumentation_scope.name) for s in exporter.get_finished_spans()
    ]
    mine, official = dict(ours[0].attributes), dict(theirs[0].attributes)
    assert theirs[0].parent is not None and theirs[0].parent.span_id == ours[0].context.span_id  # the same call

    official_keys = {k for k in official if k.startswith("gen_ai.")}
    assert {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.usage.input_tokens"} <= official_keys
    assert official_keys <= set(mine), f"missing: {sorted(official_keys - set(mine))}"
    assert len({k for k in mine if k.startswith("gen_ai.")}) > len(official_keys)  # richer
    check_all(mine)  # every content attribute valid against the strict schemas
    for key in official_keys:
        if key in ("gen_ai.input.messages", "gen_ai.output.messages"):
            continue
        assert type(mine[key]) is type(official[key]), (key, mine[key], official[key])
        if key in (
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.response.id",
        ):
            assert mine[key] == official[key], key
    # the same conversation, part for part (apart from each one's key order)
    assert json.loads(mine["gen_ai.input.messages"])[-1] == json.loads(official["gen_ai.input.messages"])[-1]
    (out,) = json.loads(mine["gen_ai.output.messages"])
    (official_out,) = json.loads(official["gen_ai.output.messages"])
    assert out["parts"] == [p for p in official_out["parts"] if p != {"type": "text", "content": ""}]
    assert out["finish_reason"] == "tool_call"  # the conventions' value (openai-v2 writes OpenAI's "tool_calls")
