"""W3C traceparent helpers: inject inside a module, continue the trace elsewhere."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamtap
from streamtap import ModuleBase, propagation
from streamtap.testing import capture_events
from streamtap.tracing import TracingSubscriber


@pytest.fixture
def exporter(traced: tuple[TracingSubscriber, InMemorySpanExporter]) -> tuple[InMemorySpanExporter, TracingSubscriber]:
    sub, exp = traced
    return exp, sub


class Producer(ModuleBase):
    def forward(self, x: str) -> dict[str, str]:
        return dict(propagation.inject())


class Consumer(ModuleBase):
    def forward(self, x: str) -> str:
        return x


def test_inject_inside_a_module_carries_its_span(exporter: tuple[InMemorySpanExporter, TracingSubscriber]) -> None:
    """The traceparent injected in forward() names the run's own span, sampled."""
    exp, _ = exporter
    headers = Producer()("x")
    (span,) = exp.get_finished_spans()
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_continue_trace_parents_the_root_run(exporter: tuple[InMemorySpanExporter, TracingSubscriber]) -> None:
    """A root run started inside continue_trace is a child of the remote span, in the same trace."""
    exp, _ = exporter
    headers = Producer()("x")
    with propagation.continue_trace(headers["traceparent"]) as remote:
        assert remote.is_remote and remote.is_valid
        Consumer()("y")
    producer, consumer = sorted(exp.get_finished_spans(), key=lambda s: s.name != "Producer")
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.parent.is_remote
    assert consumer.context.trace_id == producer.context.trace_id
    assert not trace.get_current_span().get_span_context().is_valid  # detached after the block


def test_inject_a_finished_runs_span(exporter: tuple[InMemorySpanExporter, TracingSubscriber]) -> None:
    """Outside any module, a run's span context from the tracer can be injected."""
    exp, sub = exporter
    with capture_events(kinds=["start"]) as starts:
        Consumer()("x")
    run_id = starts[0].run.run_id
    value = propagation.traceparent(span=sub.span_context(run_id))
    (span,) = exp.get_finished_spans()
    assert value is not None and value.split("-")[2] == f"{span.context.span_id:016x}"
    assert propagation.inject() == {}  # nothing current here


def test_no_context_and_bad_carrier() -> None:
    """Without a traceparent nothing is attached; a carrier of the wrong type is refused clearly."""
    with propagation.continue_trace({}) as remote:
        assert not remote.is_valid
    with pytest.raises(streamtap.UsageError, match="mapping of headers or a traceparent string"):
        propagation.extract(42)  # type: ignore[arg-type]
