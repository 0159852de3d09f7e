"""Cost of the tracing subscriber, as ratios to the core with no subscriber, measured in the same run.

Three figures:

* **per run**: a module that returns at once, called N times -- with the
  tracing subscriber on an SDK TracerProvider whose BatchSpanProcessor feeds
  an exporter that drops everything (span start + attributes + end + enqueue),
  against the same calls with no subscriber. Reported as ns per run and as a ratio.
* **per run, nothing configured**: the subscriber on the global provider
  while none is set (the "costs nothing" case).
* **per chunk**: a module streaming M chunks with and without the subscriber;
  (difference - one run's overhead) / M is the per-chunk overhead (there is no
  span per chunk, so it should be ~0).

This machine's speed drifts by 2x within seconds, so every measurement is
interleaved with its baseline (baseline, case, baseline, case...); the median
per-round ratio is reported with absolute figures for scale.

Run:  .venv/bin/python bench/bench_tracing.py [--runs N] [--chunks M] [--rounds R]

Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import typing as t

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from streamtap import ModuleBase
from streamtap.tracing import TracingSubscriber

_SAME_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "bench-model",
    "streamtap.run.id": "0123456789abcdef",
    "streamtap.run.kind": "llm",
    "streamtap.root.id": "0123456789abcdef",
    "streamtap.run.name": "Plain",
}


class Plain(ModuleBase):
    """Returns at once: the per-run cost."""

    kind = "llm"
    model = "bench-model"

    def forward(self, x: int) -> int:
        return x


class Gen(ModuleBase):
    """Streams n one-character chunks."""

    def forward(self, n: int) -> t.Iterator[str]:
        for _ in range(n):
            yield "x"


class Drop(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def export(self, spans: t.Sequence[t.Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _NoopSubscriber:
    """Subscribes a function that does nothing to the same kinds as the tracer (a reference point)."""

    def __enter__(self) -> _NoopSubscriber:
        import streamtap

        self.sub = streamtap.subscribe(lambda e: None, kinds=["start", "tool", "custom", "end"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.sub.unsubscribe()


def timed(fn: t.Callable[[], None]) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        fn()
        return float(time.perf_counter_ns() - t0)
    finally:
        gc.enable()


def interleaved(
    baseline: t.Callable[[], None], case: t.Callable[[], None], subscriber: TracingSubscriber, rounds: int
) -> tuple[float, float, float]:
    """Median (baseline ns, case ns, per-round ratio) over rounds of baseline-then-case."""
    base: list[float] = []
    meas: list[float] = []
    ratios: list[float] = []
    baseline()  # warm up
    with subscriber:
        case()
    for _ in range(rounds):
        b = timed(baseline)
        with subscriber:
            m = timed(case)
        base.append(b)
        meas.append(m)
        ratios.append(m / b)
    return statistics.median(base), statistics.median(meas), statistics.median(ratios)


def main(argv: t.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2000, help="module calls per measurement")
    parser.add_argument("--chunks", type=int, default=20000, help="chunks per streaming run")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args(argv)

    provider = TracerProvider()
    processor = BatchSpanProcessor(Drop(), max_queue_size=65536, schedule_delay_millis=50)
    provider.add_span_processor(processor)
    traced = TracingSubscriber(provider)
    untraced = TracingSubscriber()  # global provider, none configured

    plain = Plain()
    gen = Gen()
    n, m = args.runs, args.chunks

    def runs() -> None:
        for i in range(n):
            plain(i)

    def stream() -> None:
        gen(m)

    b, c, r = interleaved(runs, runs, traced, args.rounds)
    per_run = (c - b) / n
    print(f"per run, SDK provider     : {b / n:8.0f} ns/run bare, {c / n:8.0f} ns/run traced, "
          f"overhead {per_run:7.0f} ns/run, ratio {r:.2f}x")  # fmt: skip
    b2, c2, r2 = interleaved(runs, runs, untraced, args.rounds)
    print(f"per run, nothing configured: {b2 / n:7.0f} ns/run bare, {c2 / n:8.0f} ns/run with subscriber, "
          f"overhead {(c2 - b2) / n:7.0f} ns/run, ratio {r2:.2f}x")  # fmt: skip
    noop = _NoopSubscriber()
    b4, c4, r4 = interleaved(runs, runs, noop, args.rounds)  # type: ignore[arg-type]
    print(f"per run, no-op subscriber  : {b4 / n:7.0f} ns/run bare, {c4 / n:8.0f} ns/run with a no-op subscriber, "
          f"overhead {(c4 - b4) / n:7.0f} ns/run, ratio {r4:.2f}x  (the core's cost of building events for anyone)")  # fmt: skip
    tracer = provider.get_tracer("bench")

    def sdk_spans() -> None:
        for _ in range(n):
            tracer.start_span("span").end()

    b5 = statistics.median(timed(sdk_spans) for _ in range(args.rounds))
    print(f"reference: one bare SDK span start+end on the same provider: {b5 / n:7.0f} ns")

    def like_for_like() -> None:
        # The traced run's span has seven attributes and is current around forward(): the same, by hand.
        start = tracer.start_as_current_span
        for i in range(n):
            with start("chat bench-model", kind=SpanKind.CLIENT, attributes=dict(_SAME_ATTRIBUTES)) as span:
                plain.forward(i)
                span.set_attribute("streamtap.status", "ok")

    b6 = statistics.median(timed(like_for_like) for _ in range(args.rounds))
    print(f"reference: the same span by hand (7 attributes, current around the call): {b6 / n:7.0f} ns; "
          f"traced run / that: {c / n / (b6 / n):.2f}x")  # fmt: skip
    b3, c3, r3 = interleaved(stream, stream, traced, args.rounds)
    per_chunk = (c3 - b3 - per_run) / m
    print(f"per chunk ({m} chunks/run): {b3 / m:7.1f} ns/chunk bare, {c3 / m:7.1f} ns/chunk traced, "
          f"overhead {per_chunk:6.2f} ns/chunk, ratio {r3:.3f}x")  # fmt: skip
    processor.shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main()
