"""The openai client's HTTP span nests under the chat module's span (OTel context is current in forward)."""

from __future__ import annotations

import asyncio
import gc
import typing as t

import pytest
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.llm.server import FakeOpenAI
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
