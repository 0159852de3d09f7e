"""A run's span: started once its attributes are known, current around ``forward()``, and its live marker."""

from __future__ import annotations

import threading
import typing as t

from opentelemetry import context as otel_context
from opentelemetry import trace

from .options import PENDING_ATTRIBUTE

if t.TYPE_CHECKING:
    from opentelemetry.trace import SpanKind

    from .. import genai_messages as genai

__all__ = ["RunSpan", "SpanScope"]


class RunSpan:
    """The span of one run and what the subscriber keeps about the run until its End.

    The span is started as late as possible, with every attribute known by
    then passed to ``start_span`` at once (``attributes=``: one validation
    pass, one lock, no rename): normally when the scope hook has read the
    module, right before ``forward()`` runs; earlier when something needs it
    first (a child's parent, a span context asked for, an event of the run,
    its End). Its start time is the run's own, whenever it is started.

    Args:
        tracer: where the span is started.
        kind: the run kind.
        name: the span name so far.
        span_kind: the span kind.
        attrs: the attributes so far (kept and added to until the start).
        parent_ctx: the OpenTelemetry context holding the parent span.
        start_ns: the run's start, ns since the epoch (0: unknown).
        start_time: the span's start time (the run's start, or when it was seen).
        lock: serialises starting the span (any thread may be first).
    """

    # No __slots__: the fields most runs never set are class defaults, so a run pays for the nine it sets.
    _span: trace.Span | None = None
    exc: BaseException | None = None
    """The exception that left ``forward()``, for the ``exception`` event's stack trace."""
    pending: dict[str, list[str]] | None = None
    """Tool name -> the call ids of ``requested`` tool events not yet claimed by a tool run."""
    model: str | None = None
    """The model read from the module (``llm`` runs)."""
    provider: str | None = None
    """The provider read from the module (``llm`` runs)."""
    request: genai.RequestContent | None = None
    """Request content on opt-in, refined when ``forward()`` starts."""
    marker_due = False
    """A live-span marker is still to be sent (``llm`` runs: once the model is known)."""

    def __init__(
        self,
        tracer: trace.Tracer,
        kind: str,
        name: str,
        span_kind: SpanKind,
        attrs: dict[str, t.Any],
        parent_ctx: otel_context.Context,
        start_ns: int,
        start_time: int,
        lock: threading.Lock,
    ) -> None:
        self.tracer = tracer
        self.kind = kind
        self.name = name
        self.span_kind = span_kind
        self.attrs = attrs
        self.parent_ctx = parent_ctx
        self.start_ns = start_ns
        self.start_time = start_time
        self._lock = lock

    @property
    def span(self) -> trace.Span:
        """The span, started now if it is not yet."""
        span = self._span
        return span if span is not None else self.start()

    def start(self, name: str | None = None, attrs: t.Mapping[str, t.Any] | None = None) -> trace.Span:
        """Start the span with ``name`` and ``attrs`` added, or add them to it if it is started already."""
        with self._lock:
            span = self._span
            if span is None:
                if name is not None:
                    self.name = name
                if attrs:
                    self.attrs.update(attrs)
                span = self._span = self.tracer.start_span(
                    self.name,
                    context=self.parent_ctx,
                    kind=self.span_kind,
                    attributes=self.attrs,
                    start_time=self.start_time,
                )
                return span
        if attrs:
            span.set_attributes(attrs)
        if name is not None:
            span.update_name(name)
        return span

    def scope(self) -> SpanScope:
        """A context manager making the span current (the scope hook's factory)."""
        return SpanScope(self)

    def send_marker(self) -> None:
        """Export a zero-duration marker, child of the run's span, saying the run is in progress."""
        self.marker_due = False
        span = self.span
        if not span.is_recording():
            return
        parent = trace.get_current_span(self.parent_ctx).get_span_context()
        marker_attrs: dict[str, t.Any] = {k: v for k, v in self.attrs.items() if k.startswith("streamtap.")}
        marker_attrs[PENDING_ATTRIBUTE] = True
        marker_attrs["streamtap.pending.parent_span_id"] = (
            format(parent.span_id, "016x") if parent.is_valid else "0" * 16
        )
        marker_attrs["streamtap.pending.span_id"] = format(span.get_span_context().span_id, "016x")
        marker = self.tracer.start_span(
            self.name,
            context=trace.set_span_in_context(span),
            kind=self.span_kind,
            attributes=marker_attrs,
            start_time=self.start_time,
        )
        marker.end(end_time=self.start_time)


class SpanScope:
    """Makes a run's span current around ``forward()`` and keeps the exception that left it."""

    __slots__ = ("entry", "token")

    def __init__(self, entry: RunSpan) -> None:
        self.entry = entry
        self.token: object = None

    def __enter__(self) -> trace.Span:
        span = self.entry.span
        self.token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, tp: t.Any, exc: BaseException | None, tb: t.Any) -> None:  # noqa: PYI036 - the arguments are passed on untouched
        if exc is not None:
            self.entry.exc = exc
        otel_context.detach(self.token)  # type: ignore[arg-type]
