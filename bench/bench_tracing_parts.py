"""Where a traced run's time goes: the core's hooks, the least a tracer can do with them, and the tracing subscriber.

Each case is a module that returns at once, called ``--runs`` times, timed in
**thread CPU time** (the BatchSpanProcessor's worker thread and other
processes on a shared machine are not counted); the cases are interleaved
in ``--rounds`` short rounds and the 10th percentile and the minimum of each
are reported, with ratios to the floor of ``python -m bench``'s tracing row:
a bare OpenTelemetry SDK span made current around the call with the same
seven attributes the traced run's span gets.

* **floor**: that bare span, by hand.
* **SDK work only**: the same ``start_span`` (seven attributes), attach and
  detach of its context, ``set_attribute`` and ``end``, no context manager.
* **nobody listening**: the module call alone.
* **no-op subscriber + no-op scope**: what the core costs a tracer before it
  does anything: Start and End built and delivered to a subscriber, the
  scope hook (``streamtap.bus.scope_signal``) sent, its factory's context
  manager entered around ``forward()``.
* **least tracer**: the least a tracer can do with those hooks: one span
  started in the scope hook with the seven attributes, current around
  ``forward()``, its status set and ended at End.
* **TracingSubscriber**: streamtap's.

Run:  .venv/bin/python bench/bench_tracing_parts.py [--runs N] [--rounds R]

Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import time
import typing as t

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import streamtap
from streamtap import ModuleBase
from streamtap._receivers import IsolatedReceivers
from streamtap.tracing import TracingSubscriber

_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "bench-model",
    "streamtap.run.id": "0123456789abcdef",
    "streamtap.run.kind": "llm",
    "streamtap.root.id": "0123456789abcdef",
    "streamtap.run.name": "Plain",
}


class Drop(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def export(self, spans: t.Sequence[t.Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Plain(ModuleBase):
    """Returns at once: the per-run cost."""

    kind = "llm"
    model = "bench-model"

    def forward(self, x: int) -> int:
        return x


class _Nothing:
    """A context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Current:
    """Makes a span current (what any tracer's scope must do)."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.token: object = None

    def __enter__(self) -> None:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]


class Hooks:
    """A subscriber for start/tool/custom/end and a scope receiver; ``least=True`` traces with them."""

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer
        self.spans: dict[str, trace.Span] = {}
        nothing = _Nothing()
        scope = self._scope if tracer is not None else (lambda module, run, ctx: lambda: nothing)
        self.receivers = IsolatedReceivers("bench hooks", {}, scope=scope)
        self.sub: streamtap.Subscription | None = None

    def _scope(self, module: t.Any, run: t.Any, ctx: t.Any) -> t.Any:
        assert self.tracer is not None
        attrs = dict(_ATTRIBUTES, **{"streamtap.run.id": run.run_id, "streamtap.root.id": run.root_id})
        span = self.tracer.start_span("chat bench-model", kind=SpanKind.CLIENT, attributes=attrs)
        self.spans[run.run_id] = span
        return lambda: _Current(span)

    def _on(self, ev: t.Any) -> None:
        if ev.kind == "end" and self.tracer is not None:
            span = self.spans.pop(ev.run.run_id)
            span.set_attribute("streamtap.status", ev.status)
            span.end()

    def __enter__(self) -> Hooks:
        self.sub = streamtap.subscribe(self._on, kinds=["start", "tool", "custom", "end"])
        self.receivers.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.sub is not None
        self.sub.unsubscribe()
        self.receivers.disconnect()


def main(argv: t.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="module calls per timed round")
    parser.add_argument("--rounds", type=int, default=400, help="interleaved rounds")
    args = parser.parse_args(argv)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    tracer = provider.get_tracer("bench")
    plain = Plain()
    n = args.runs

    def runs() -> None:
        for i in range(n):
            plain(i)

    def floor() -> None:
        start = tracer.start_as_current_span
        for i in range(n):
            with start("chat bench-model", kind=SpanKind.CLIENT, attributes=dict(_ATTRIBUTES)) as span:
                plain.forward(i)
                span.set_attribute("streamtap.status", "ok")

    def sdk_only() -> None:
        start = tracer.start_span
        for i in range(n):
            span = start("chat bench-model", kind=SpanKind.CLIENT, attributes=dict(_ATTRIBUTES))
            token = otel_context.attach(trace.set_span_in_context(span))
            plain.forward(i)
            otel_context.detach(token)
            span.set_attribute("streamtap.status", "ok")
            span.end()

    subscribers: dict[str, t.Callable[[], t.ContextManager[t.Any]] | None] = {
        "floor: bare SDK span, same attributes": None,
        "SDK work only": None,
        "nobody listening": None,
        "no-op subscriber + no-op scope": Hooks,
        "least tracer on today's hooks": lambda: Hooks(tracer),
        "TracingSubscriber": lambda: TracingSubscriber(tracer_provider=provider),
    }
    bodies = {"floor: bare SDK span, same attributes": floor, "SDK work only": sdk_only}
    times: dict[str, list[float]] = {name: [] for name in subscribers}

    def once(name: str) -> float:
        make = subscribers[name]
        body = bodies.get(name, runs)
        gc.collect()
        gc.disable()
        try:
            if make is None:
                t0 = time.thread_time_ns()
                body()
                return (time.thread_time_ns() - t0) / n
            with make():
                t0 = time.thread_time_ns()
                body()
                return (time.thread_time_ns() - t0) / n
        finally:
            gc.enable()

    for name in subscribers:  # warm up
        once(name)
    for _ in range(args.rounds):
        for name in subscribers:
            times[name].append(once(name))

    def p10(v: list[float]) -> float:
        return sorted(v)[len(v) // 10]

    base_p10 = p10(times["floor: bare SDK span, same attributes"])
    base_min = min(times["floor: bare SDK span, same attributes"])
    print(f"{'case':<40}{'p10 ns/run':>12}{'x floor':>9}{'min ns/run':>12}{'x floor':>9}")
    for name, v in times.items():
        print(f"{name:<40}{p10(v):>12,.0f}{p10(v) / base_p10:>8.2f}x{min(v):>12,.0f}{min(v) / base_min:>8.2f}x")
    provider.shutdown()


if __name__ == "__main__":
    main()
