"""A chat continues the caller's W3C trace, its spans carry the chat id, and the UI stream links to the trace.

Spans are decoded from the OpenTelemetry SDK's in-memory exporter, fed by the
real tracing subscriber; the app runs in real uvicorn.
"""

from __future__ import annotations

import asyncio
import time
import typing as t

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtap.tracing import TracingSubscriber

from .helpers import Agent, chat_body, read_sse

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def traced() -> t.Iterator[tuple[TracingSubscriber, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sub = TracingSubscriber(provider).subscribe()
    yield sub, exporter
    sub.unsubscribe()
    provider.shutdown()


async def _spans_of(exporter: InMemorySpanExporter, root_id: str, timeout: float = 10.0) -> list[ReadableSpan]:
    """The finished spans of a run tree, once its root span has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in exporter.get_finished_spans() if s.attributes.get("streamtap.root.id") == root_id]
        if any(s.attributes.get("streamtap.run.id") == root_id for s in spans):
            return spans
        await asyncio.sleep(0.01)  # polling the exporter: it offers nothing to wait on
    raise AssertionError(f"the root span of {root_id} did not end within {timeout} s")


async def test_traceparent_is_continued_and_every_span_names_the_conversation(serve, client, traced):
    sub, exporter = traced
    srv = serve(Agent(), tracing=sub)
    res = await read_sse(
        client,
        "POST",
        srv.url + "/api/chat",
        json=chat_body("weather in Paris", chat_id="conv-7"),
        headers={"traceparent": TRACEPARENT},
    )
    assert res.done
    meta = res.parts[0]["messageMetadata"]
    spans = await _spans_of(exporter, meta["runId"])
    [root] = [s for s in spans if s.attributes["streamtap.run.id"] == meta["runId"]]
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == CALLER_SPAN and root.parent.is_remote
    assert len(spans) >= 4 and {s.attributes.get("gen_ai.conversation.id") for s in spans} == {"conv-7"}
    assert all(format(s.context.trace_id, "032x") == CALLER_TRACE for s in spans)
    assert meta["traceId"] == CALLER_TRACE


async def test_without_traceparent_the_stream_carries_the_runs_own_trace_id(serve, client, traced):
    sub, exporter = traced
    srv = serve(Agent(), tracing=sub)
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Oslo", chat_id="conv-8"))
    meta = res.parts[0]["messageMetadata"]
    spans = await _spans_of(exporter, meta["runId"])
    [root] = [s for s in spans if s.attributes["streamtap.run.id"] == meta["runId"]]
    assert root.parent is None
    assert meta["traceId"] == format(root.context.trace_id, "032x")
    replay = await read_sse(client, "GET", f"{srv.url}/api/chat/conv-8/stream?run={meta['runId']}")
    assert replay.parts[0]["messageMetadata"]["traceId"] == meta["traceId"]


async def test_without_a_subscriber_the_callers_trace_id_is_linked(serve, client):
    srv = serve(Agent())
    res = await read_sse(
        client,
        "POST",
        srv.url + "/api/chat",
        json=chat_body("weather in Rome", chat_id="c9"),
        headers={"traceparent": TRACEPARENT},
    )
    assert res.parts[0]["messageMetadata"]["traceId"] == CALLER_TRACE
    res = await read_sse(
        client,
        "POST",
        srv.url + "/api/chat",
        json=chat_body("weather in Rome", chat_id="c10"),
        headers={"traceparent": "00-garbage"},
    )
    assert res.done and "traceId" not in res.parts[0]["messageMetadata"]  # an invalid header is ignored, not an error


def test_a_modules_own_conversation_metadata_wins(traced):
    from streamtap import ModuleBase
    from streamtap.tracing import conversation

    _, exporter = traced

    class Tagged(ModuleBase):
        metadata: t.ClassVar[dict[str, str]] = {"conversation_id": "mine"}

        def forward(self, x):
            return x

    class Plain(ModuleBase):
        def forward(self, x):
            return Tagged()(x)

    with conversation("web-chat"):
        Plain()("hi")
    Plain()("outside")
    by_name: dict[str, list[t.Any]] = {}
    for s in exporter.get_finished_spans():
        by_name.setdefault(s.name, []).append(s.attributes.get("gen_ai.conversation.id"))
    assert by_name["Plain"] == ["web-chat", None] and by_name["Tagged"] == ["mine", "mine"]
