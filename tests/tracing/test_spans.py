"""A run's span: started once, right before forward(), with its module's attributes and the run's own start time."""

from __future__ import annotations

import typing as t

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamtap
from streamtap import ModuleBase
from streamtap.testing import capture_events
from streamtap.tracing import TracingSubscriber


class Chat(ModuleBase):
    """An ``llm`` module whose model and server are class attributes."""

    kind = "llm"
    model = "m-1"
    provider_name = "acme"
    server_address = "models.example"
    server_port = 8443

    def forward(self, x: str) -> str:
        return x


class Starts(SpanProcessor):
    """Keeps what each span looked like when it started (what a tail sampler or live view sees)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, t.Any]]] = []

    def on_start(self, span: Span, parent_context: t.Any = None) -> None:
        self.seen.append((span.name, dict(span.attributes or {})))


def _provider() -> tuple[TracerProvider, InMemorySpanExporter, Starts]:
    exporter = InMemorySpanExporter()
    starts = Starts()
    provider = TracerProvider()
    provider.add_span_processor(starts)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, starts


def test_a_span_starts_named_and_attributed_by_its_module() -> None:
    provider, exporter, starts = _provider()
    with TracingSubscriber(provider):
        Chat()("hi")
    assert len(starts.seen) == 1  # one span, started once
    name, attrs = starts.seen[0]
    assert name == "chat m-1"
    assert attrs["gen_ai.request.model"] == "m-1"
    assert attrs["gen_ai.provider.name"] == "acme"
    assert attrs["server.address"] == "models.example"
    assert attrs["server.port"] == 8443
    assert attrs["gen_ai.operation.name"] == "chat"
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat m-1"
    assert span.attributes is not None and span.attributes["streamtap.status"] == "ok"


def test_the_span_keeps_the_runs_own_start_time() -> None:
    provider, exporter, _ = _provider()
    with TracingSubscriber(provider), capture_events() as events:
        Chat()("hi")
    start = next(e for e in events if e.kind == "start")
    (span,) = exporter.get_finished_spans()
    assert span.start_time == int(start.started_at * 1e9)


def test_a_span_asked_for_at_start_still_gets_the_modules_name_and_attributes() -> None:
    provider, exporter, starts = _provider()
    sub = TracingSubscriber(provider)
    asked: list[t.Any] = []

    def at_start(ev: t.Any) -> None:
        asked.append(sub.ensure_started(ev))  # what the log subscriber does: the span exists before forward()

    with sub, streamtap.subscribe(at_start, kinds=["start"]):
        Chat()("hi")
    assert asked and asked[0] is not None and asked[0].is_valid
    assert len(starts.seen) == 1
    (span,) = exporter.get_finished_spans()
    assert span.context is not None and span.context.span_id == asked[0].span_id
    assert span.name == "chat m-1"
    assert span.attributes is not None and span.attributes["gen_ai.request.model"] == "m-1"


def test_children_nest_under_a_span_started_before_forward() -> None:
    provider, exporter, _ = _provider()

    class Outer(ModuleBase):
        kind = "agent"

        def forward(self, x: str) -> str:
            return Chat()(x)

    with TracingSubscriber(provider):
        Outer()("hi")
    spans: dict[str, ReadableSpan] = {s.name: s for s in exporter.get_finished_spans()}
    outer, inner = spans["invoke_agent Outer"], spans["chat m-1"]
    assert inner.parent is not None and outer.context is not None
    assert inner.parent.span_id == outer.context.span_id


def test_a_span_asked_for_from_many_threads_before_it_started_starts_once() -> None:
    import threading

    with capture_events() as events:
        Chat()("hi")  # a real run's events, not traced: replayed below (a replayed run has no scope hook)
    start = next(e for e in events if e.kind == "start")
    end = next(e for e in events if e.kind == "end")
    provider, exporter, starts = _provider()
    sub = TracingSubscriber(provider)
    sub.handle(start)  # the run is known; its span is not started yet
    threads = 8
    barrier = threading.Barrier(threads)
    got: list[t.Any] = []

    def ask() -> None:
        barrier.wait(timeout=10)
        got.append(sub.span_context(start.run.run_id))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=10)
    sub.handle(end)
    assert len(got) == threads
    assert len({c.span_id for c in got}) == 1 and got[0].is_valid
    assert len(starts.seen) == 1
    (span,) = exporter.get_finished_spans()
    assert span.context is not None and span.context.span_id == got[0].span_id
    assert span.start_time == int(start.started_at * 1e9)


def test_events_handed_to_an_unsubscribed_tracer_leave_no_hook_connected() -> None:
    from streamtap import bus

    with capture_events() as events:
        Chat()("hi")
    provider, exporter, _ = _provider()
    sub = TracingSubscriber(provider)  # never subscribed: fed by hand, as a replay does
    for ev in events:
        sub.handle(ev)
    assert len(exporter.get_finished_spans()) == 1
    assert not bus.scope_signal.receivers  # no module run of this process pays for (or reaches) it
