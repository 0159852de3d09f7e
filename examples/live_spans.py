"""Live spans: a run shows in the trace backend while it goes on, not only once it ends.

``streamtap_otlp.configure(live_spans=True)`` exports a pending marker at each
run's start. Set ``OTEL_EXPORTER_OTLP_ENDPOINT`` (e.g. Jaeger's
``http://localhost:4318``) to watch a real backend; without it, the example
starts the small OTLP receiver of ``streamtap_otlp.testing`` as the backend
and prints what it holds while the weather agent is still answering, then
after it ended.

Run: python examples/live_spans.py
"""

from __future__ import annotations

import contextlib
import os

import streamtap_otlp
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import model_endpoint
from streamtap.tracing import PENDING_ATTRIBUTE
from streamtap_otlp.testing import OtlpReceiver


def describe(spans: list[object]) -> str:
    """``name (pending)`` / ``name`` for each span, in arrival order."""
    return ", ".join(f"{s.name}{' (pending)' if s.attributes.get(PENDING_ATTRIBUTE) else ''}" for s in spans)  # type: ignore[attr-defined]


def main() -> None:
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "100")  # markers leave within 0.1 s (the default is 5 s)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    with contextlib.ExitStack() as stack, model_endpoint(token_delay=0.02) as base_url:
        backend = None
        if not endpoint:
            backend = stack.enter_context(OtlpReceiver(grpc=False))
            endpoint = backend.http_endpoint
        export = streamtap_otlp.configure(endpoint=endpoint, metrics=False, live_spans=True)
        stack.callback(export.shutdown)
        stream = weather_agent(base_url=base_url).stream(QUERY)
        shown = False
        for event in stream:
            if backend is not None and not shown and event.kind == "tool" and event.phase == "requested":
                # The agent is still running: its marker and the model call's are in the backend already.
                print(f"while running: {describe(backend.wait_for_spans(2))}")
                shown = True
        print(f"answer: {stream.handle.result()}")
        export.force_flush()
        if backend is not None:
            spans = backend.wait_for_spans(10)
            real = [s for s in spans if not s.attributes.get(PENDING_ATTRIBUTE)]
            print(f"after the end: {len(real)} spans, one per run, and {len(spans) - len(real)} markers inside them")
        else:
            print(f"sent to {endpoint}")


if __name__ == "__main__":
    main()
