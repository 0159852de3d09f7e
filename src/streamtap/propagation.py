"""W3C ``traceparent`` across processes: continue a run's trace in another process.

The producer side, inside a module (its span is current there)::

    headers = propagation.inject()          # {"traceparent": "00-<trace>-<span>-01", ...}
    queue.put({"task": task, "otel": headers})

The consumer side, in another process::

    with propagation.continue_trace(message["otel"]):
        worker(message["task"])             # its root run's span is a child of the remote span

Both use OpenTelemetry's global propagator (``tracecontext,baggage`` unless
``OTEL_PROPAGATORS`` says otherwise), so ``tracestate`` and baggage travel too.
Outside a module, pass the span context to inject, e.g. the one the tracing
subscriber keeps for a run: ``inject(span=tracing.span_context(run_id))``.

Runs, not only traces, cross with :func:`relay` and :func:`attach` (from
:mod:`streamtap.relay`): a child process's modules become children of the
tool run that handed the work out, in the parent's streams and trace::

    with propagation.relay() as r:                       # in the tool, parent process
        pool.submit(job, r.carry(), task).result()

    def job(carried, task):                              # in the child process
        with propagation.attach(carried):
            return summarise(task)                       # streams into the parent's run tree
"""

from __future__ import annotations

import contextlib
import typing as t

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from .exceptions import UsageError
from .relay import Attachment, Carried, Relay, attach, relay

__all__ = [
    "Attachment",
    "Carried",
    "Relay",
    "attach",
    "continue_trace",
    "extract",
    "inject",
    "relay",
    "traceparent",
]

Carrier = t.MutableMapping[str, str]


def inject(carrier: Carrier | None = None, *, span: trace.SpanContext | None = None) -> Carrier:
    """Write the current trace context (or ``span``'s) into ``carrier``; returns it.

    Args:
        carrier: a mutable mapping of headers (default: a new dict).
        span: inject this span context instead of the current one.

    Returns:
        The carrier, with ``traceparent`` (and ``tracestate``, ``baggage``)
        when a valid span is current; unchanged otherwise.
    """
    out: Carrier = {} if carrier is None else carrier
    ctx = None
    if span is not None:
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(span))
    propagate.inject(out, context=ctx)
    return out


def traceparent(span: trace.SpanContext | None = None) -> str | None:
    """The ``traceparent`` header value of the current span (or ``span``), or ``None``."""
    return inject(span=span).get("traceparent")


def extract(carrier: t.Mapping[str, str] | str) -> otel_context.Context:
    """The OpenTelemetry context carried by ``carrier`` (a headers mapping or a bare ``traceparent`` string).

    Raises:
        UsageError: ``carrier`` is neither a mapping nor a string.
    """
    if isinstance(carrier, str):
        carrier = {"traceparent": carrier}
    if not isinstance(carrier, t.Mapping):
        msg = f"extract() takes a mapping of headers or a traceparent string, not {type(carrier).__name__}."
        raise UsageError(msg)
    return propagate.extract(carrier)


@contextlib.contextmanager
def continue_trace(carrier: t.Mapping[str, str] | str) -> t.Iterator[trace.SpanContext]:
    """Make the remote context current: runs started in the block nest under the remote span.

    Yields the remote span context (invalid when the carrier had none, in
    which case runs start new traces as usual).
    """
    ctx = extract(carrier)
    token = otel_context.attach(ctx)
    try:
        yield trace.get_current_span(ctx).get_span_context()
    finally:
        otel_context.detach(token)
