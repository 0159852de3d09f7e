"""The weather agent, traced: OpenTelemetry spans (GenAI conventions), the HTTP calls nested inside, structlog lines.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (e.g. Jaeger all-in-one on
``http://localhost:4317``), the run tree is exported over OTLP: open
http://localhost:16686 and find the service ``traced-agent``. Without it, the
spans are kept in memory and printed as a tree at the end, so the example runs
offline with nothing to set up.

Either way, each step writes one JSON log line (``run.start``, ``tool.*``,
``run.end``) carrying its run's ``trace_id`` and ``span_id``, and the HTTP
requests of the ``openai`` client (httpx2) appear as ``POST`` spans inside
their ``chat`` span.

Run: python examples/traced_agent.py
"""

from __future__ import annotations

import sys
import typing as t

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamtap_otlp
from streamtap import logs
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import model_endpoint
from streamtap.tracing import TracingSubscriber


def print_tree(spans: t.Sequence[ReadableSpan]) -> None:
    """Print spans as an indented tree with a few GenAI attributes."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    keys = ("gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
            "gen_ai.response.finish_reasons", "gen_ai.tool.call.id", "http.status_code", "http.response.status_code")  # fmt: skip
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        attrs = " ".join(f"{k.rsplit('.', 1)[-1]}={span.attributes[k]}" for k in keys if k in (span.attributes or {}))
        print(f"{'    ' * depth}{span.name}  {ms:.1f} ms  {attrs}")
        stack.extend((c, depth + 1) for c in reversed(children.get(span.context.span_id, [])))


def main() -> int:
    logs.configure(json=True, file=sys.stdout)
    export = streamtap_otlp.export_from_env(service_name="traced-agent")
    memory: InMemorySpanExporter | None = None
    if export is not None:
        provider = export.tracer_provider
        tracing = export.tracing
    else:
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracing = TracingSubscriber(provider).subscribe()
    try:
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
    except ImportError:  # the HTTP spans are optional
        instrumentor = None
    else:
        instrumentor = HTTPX2ClientInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
    try:
        with logs.LogSubscriber(tracing=tracing), model_endpoint() as base_url:
            answer = weather_agent(base_url=base_url)(QUERY)
        print(f"answer: {answer}")
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        if export is not None:
            export.shutdown()
            print(f"spans exported over OTLP ({export.protocol}) to {export.endpoint}")
        else:
            tracing.unsubscribe()
    if memory is not None:
        print_tree(memory.get_finished_spans())
    return 0


if __name__ == "__main__":
    sys.exit(main())
