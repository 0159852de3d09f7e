"""A LangChain chain inside a streamtap run, seen live on the page's stream and in the exported spans."""

from __future__ import annotations

import json
import time
import typing as t

import httpx
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("starlette")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtap import ModuleBase
from streamtap.bridges.langchain import instrument
from streamtap.tracing import TracingSubscriber
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

ANSWER = "Chains stream onto the page and into the trace"


class ChainAgent(ModuleBase):
    """A streamtap agent answering with a LangChain chain (prompt | chat model)."""

    kind = "agent"

    def forward(self, q: str) -> t.Iterator[str]:
        model = GenericFakeChatModel(messages=iter([AIMessage(content=ANSWER)]))
        for piece in (ChatPromptTemplate.from_messages([("human", "{q}")]) | model).stream({"q": q}):
            yield str(piece.content)


def test_the_page_stream_and_the_trace_show_the_chains_tokens_and_steps():
    instrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sub = TracingSubscriber(provider).subscribe()
    try:
        with BackgroundServer(create_app(ChainAgent(), tracing=sub)) as srv:
            body = {
                "id": "lc1",
                "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
                "trigger": "submit-message",
            }
            with httpx.stream("POST", srv.url + "/api/chat", json=body, timeout=20) as r:
                parts = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        root_id = parts[0]["messageMetadata"]["runId"]
        deadline = time.monotonic() + 10
        spans: list[t.Any] = []
        while time.monotonic() < deadline:  # the exporter offers nothing to wait on
            spans = [s for s in exporter.get_finished_spans() if s.attributes.get("streamtap.root.id") == root_id]
            if any(s.attributes.get("streamtap.run.id") == root_id for s in spans):
                break
            time.sleep(0.01)
    finally:
        sub.unsubscribe()
        provider.shutdown()
    # The page: the chain's tokens as text deltas (shown once), its steps as runs.
    deltas = [p["delta"] for p in parts if p["type"] == "text-delta"]
    assert "".join(deltas) == ANSWER and len(deltas) > 5
    runs = {p["data"]["name"]: p["data"] for p in parts if p["type"] == "data-run"}
    assert {"RunnableSequence", "ChatPromptTemplate", "GenericFakeChatModel"} <= set(runs)
    assert runs["GenericFakeChatModel"]["kind"] == "llm" and runs["GenericFakeChatModel"]["status"] == "ok"
    assert parts[-1] == {"type": "finish", "finishReason": "stop"}
    # The trace: one span per LangChain run, parented by the run tree under the agent's span.
    by_run = {s.attributes["streamtap.run.id"]: s for s in spans}
    names = {
        s.attributes.get("streamtap.run.name") or s.attributes.get("gen_ai.request.model") or s.name: s for s in spans
    }
    [llm] = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    seq = next(s for s in spans if s.name == "RunnableSequence")
    assert llm.parent is not None and llm.parent.span_id == seq.context.span_id
    assert seq.parent is not None and seq.parent.span_id == by_run[root_id].context.span_id
    assert {s.context.trace_id for s in spans} == {by_run[root_id].context.trace_id}
    assert {"ChatPromptTemplate", "chat", "invoke_agent ChainAgent"} <= {s.name for s in spans} and names
