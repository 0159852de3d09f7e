"""The tracing subscriber: one OpenTelemetry span per run, GenAI metrics for ``llm`` runs."""

from __future__ import annotations

import collections
import logging
import threading
import time
import typing as t

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from .. import genai_messages as genai
from .._receivers import IsolatedReceivers
from .._subscriber import KindDispatcher
from ..dispatch import relaying
from ..events import End, ErrorInfo, Run, Start
from ..redaction import Redactor
from .attributes import ModuleAttributes, end_attributes, run_attributes
from .content import ContentWriter
from .conversation import current_conversation
from .metrics import GenAIMetrics
from .options import SCHEMA_URL, SCOPE, capture_content_from_env, live_spans_from_env
from .spans import RunSpan

if t.TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["TracingSubscriber"]

log = logging.getLogger("streamtap.tracing")

_RECENT = 1024  # span contexts of ended runs kept for span_context() and late background children


def _version() -> str:
    from .. import __version__

    return __version__


class TracingSubscriber(KindDispatcher):
    """Turns every run into an OpenTelemetry span (and ``llm`` runs into metrics).

    Create it, then :meth:`subscribe` (or use :func:`~streamtap.tracing.instrument`,
    which does both); use it as a context manager to unsubscribe on exit.

    Args:
        tracer_provider: where spans go. Default: the global provider, looked
            up at each root run, so one set later is picked up. While no
            provider is configured, runs cost one check and nothing else.
        meter_provider: where the GenAI client metrics go. Default: the global one.
        capture_content: record inputs, outputs, messages, tool arguments and
            results. Default ``None``: follow ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        redact: extra patterns (strings or compiled) whose matches are replaced
            with ``[REDACTED]``; API keys, bearer tokens and credential headers
            are always redacted.
        max_content_length: content longer than this (in characters of JSON)
            is cut, with a ``...[truncated]`` marker.
        live_spans: at each run's start, also export a pending marker span
            (see :mod:`streamtap.tracing`). Default ``None``: follow ``STREAMTAP_LIVE_SPANS``.

    Raises:
        UsageError: a redaction pattern that does not compile, or a negative
            ``max_content_length``.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
        redact: t.Iterable[str | t.Any] = (),
        max_content_length: int = 16_384,
        live_spans: bool | None = None,
    ) -> None:
        if max_content_length < 0:
            from ..exceptions import UsageError

            msg = f"max_content_length must be 0 or more characters, got {max_content_length!r}."
            raise UsageError(msg)
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._tracer_of: object = None
        if tracer_provider is not None:
            self._tracer = tracer_provider.get_tracer(SCOPE, _version(), schema_url=SCHEMA_URL)
        self.capture_content = capture_content_from_env() if capture_content is None else bool(capture_content)
        """Whether content is recorded."""
        self._writer = ContentWriter(Redactor(redact), max_content_length)
        self.live_spans = live_spans_from_env() if live_spans is None else bool(live_spans)
        """Whether each run's start exports a pending marker span."""
        self._metrics = GenAIMetrics(meter_provider, _version())
        self._entries: dict[str, RunSpan] = {}
        self._start_lock = threading.Lock()
        self._recent: collections.OrderedDict[str, trace.SpanContext] = collections.OrderedDict()
        self._modules = ModuleAttributes()
        self._set_handlers(
            {
                "start": t.cast("t.Callable[[t.Any], None]", self._start),
                "tool": self._on_tool,
                "custom": self._on_custom,
                "end": self._on_end,
            }
        )
        # The scope receiver is connected when the first traced run starts: until then (no
        # provider configured) no run pays for the scope signal.
        self._scope = IsolatedReceivers("the streamtap tracing subscriber's scope", {}, scope=self._on_scope, log=log)
        self._on_bus = False  # events handed in by hand (handle(), a replay) never connect the scope hook

    @property
    def redact(self) -> Redactor:
        """The :class:`~streamtap.redaction.Redactor` applied to everything recorded."""
        return self._writer.redact

    @redact.setter
    def redact(self, redactor: Redactor) -> None:
        self._writer.redact = redactor

    @property
    def max_content_length(self) -> int:
        """Content longer than this many characters is cut."""
        return self._writer.max_length

    @max_content_length.setter
    def max_content_length(self, limit: int) -> None:
        self._writer.max_length = limit

    # -- lifecycle ------------------------------------------------------------

    def subscribe(self) -> Self:
        """Start tracing runs (idempotent); returns ``self``."""
        self._on_bus = True  # before the first event can arrive
        return super().subscribe()

    def unsubscribe(self) -> None:
        """Stop tracing runs. Spans of runs still going are not ended (their End is no longer seen)."""
        self._on_bus = False
        super().unsubscribe()
        self._scope.disconnect()

    @property
    def errors(self) -> int:
        """How many times handling an event raised (each failure is isolated from the run)."""
        return self._bus_errors + self._scope.errors

    def span_context(self, run_id: str) -> trace.SpanContext | None:
        """The span context of a live or recently ended run, or ``None`` when it is not traced.

        The log subscriber uses it to put a run's own ``span_id`` on its lines.
        """
        entry = self._entries.get(run_id)
        if entry is not None:
            return entry.span.get_span_context()
        return self._recent.get(run_id)

    def handle(self, event: t.Any) -> None:
        """Handle one event as if the bus had delivered it (chunks are ignored).

        This is how a recording is replayed into a trace backend
        (``streamtap replay FILE --otlp``): the spans get the events' times.
        """
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)

    def ensure_started(self, event: Start) -> trace.SpanContext | None:
        """Start the span of ``event``'s run now if it is not started yet; return its context.

        Subscribers are called in no fixed order, so a subscriber that needs
        the span at ``Start`` (the log subscriber) calls this.
        """
        entry = self._start(event)
        return entry.span.get_span_context() if entry is not None else None

    def _root_tracer(self) -> trace.Tracer | None:
        if self._provider is not None:
            return self._tracer
        provider = trace.get_tracer_provider()
        if provider is not self._tracer_of:
            if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None
            self._tracer = provider.get_tracer(SCOPE, _version(), schema_url=SCHEMA_URL)
            self._tracer_of = provider
        return self._tracer

    # -- handlers ---------------------------------------------------------------

    def _start(self, ev: Start) -> RunSpan | None:
        run: Run = ev.run
        rid = run.run_id
        entry = self._entries.get(rid)
        if entry is not None:
            return entry
        if relaying():
            return None  # a run of another process: that process exports its own span (propagation.attach)
        if run.parent_id is None:
            tracer = self._root_tracer()
            if tracer is None:
                return None
            parent_ctx = otel_context.get_current()  # the caller's: a web request span, a remote parent...
        else:
            parent = self._entries.get(run.parent_id)
            if parent is not None:
                tracer = parent.tracer
                parent_ctx = trace.set_span_in_context(parent.span)
            else:
                # A background child (module.start() inside forward) may start after its parent ended.
                ended = self._recent.get(run.parent_id)
                if ended is None or self._tracer is None:
                    return None  # the tree is not traced (it began before subscribe, or no provider)
                tracer = self._tracer
                parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(ended))
        kind = run.kind
        name, span_kind, attrs = run_attributes(
            run, run.metadata.get("conversation_id") or current_conversation(), self.redact
        )
        if kind == "tool":
            call_id = self._claim_call_id(run)
            if call_id:
                attrs["gen_ai.tool.call.id"] = call_id
        request = None
        if self.capture_content and ev.inputs is not None:
            writer = self._writer
            if kind in ("llm", "agent"):
                request = genai.request_content(ev.inputs)
                attrs.update(writer.request_attrs(request))
            else:
                attrs.update(writer.input_attrs(kind, ev.inputs))
        start_ns = int(ev.started_at * 1e9) if ev.started_at else 0
        entry = RunSpan(
            tracer, kind, name, span_kind, attrs, parent_ctx, start_ns, start_ns or time.time_ns(), self._start_lock
        )
        if request is not None:
            entry.request = request
        self._entries[rid] = entry
        if self.live_spans:
            if kind == "llm":
                entry.marker_due = True  # named "chat {model}" once the module is seen
            else:
                entry.send_marker()
        if not self._scope.connected and self._on_bus:
            self._scope.connect()  # only while subscribed: events handed in by hand (a replay) have no module scope
        return entry

    def _claim_call_id(self, run: Run) -> str | None:
        parent = self._entries.get(run.parent_id) if run.parent_id else None
        if parent is None or not parent.pending:
            return None
        ids = parent.pending.get(run.name)
        return ids.pop(0) if ids else None

    def _on_scope(self, module: t.Any, run: Run, context: t.Any) -> t.Any:
        entry = self._entries.get(run.run_id)
        if entry is None:
            return None
        kind = entry.kind
        name = None
        attrs: t.Mapping[str, t.Any] | None = None
        if kind in ("llm", "tool"):
            model, provider, attrs = self._modules.of(kind, module)
            if model:
                name = f"chat {model}"
            entry.model = model
            entry.provider = provider
        if entry.request is not None:
            request = self._describe_request(entry, module)
            if request:
                attrs = {**attrs, **request} if attrs else request
        entry.start(name, attrs)  # the span starts here, with everything known before forward()
        if entry.marker_due:
            entry.send_marker()
        return entry.scope

    def _describe_request(self, entry: RunSpan, module: t.Any) -> dict[str, str]:
        """Content read from the module before forward() runs.

        The request a chat module will send (:func:`streamtap.genai_messages.as_sent`),
        the tools of an agent.
        """
        request, entry.request = entry.request, None
        assert request is not None
        writer = self._writer
        if entry.kind == "agent":
            tools = [] if request.tool_definitions else genai.agent_tool_definitions(module)
            return {"gen_ai.tool.definitions": writer.genai(tools)} if tools else {}
        sent = genai.as_sent(request, module)
        return writer.request_attrs(sent) if sent is not None else {}

    def _on_tool(self, ev: t.Any) -> None:
        entry = self._entries.get(ev.run.run_id)
        if entry is None:
            return
        attrs: dict[str, t.Any] = {"gen_ai.tool.name": ev.name, "gen_ai.tool.call.id": ev.call_id}
        if ev.phase == "requested":
            if entry.pending is None:
                entry.pending = {}
            entry.pending.setdefault(ev.name, []).append(ev.call_id)
            if self.capture_content and ev.arguments is not None:
                attrs["gen_ai.tool.call.arguments"] = self._writer.text(ev.arguments)
        elif ev.phase == "result":
            if self.capture_content and ev.result is not None:
                attrs["gen_ai.tool.call.result"] = self._writer.text(ev.result)
        elif ev.error is not None:
            attrs["error.type"] = ev.error.type
            attrs["streamtap.error.message"] = self.redact(ev.error.message)
        entry.span.add_event(f"streamtap.tool.{ev.phase}", attrs)

    def _on_custom(self, ev: t.Any) -> None:
        entry = self._entries.get(ev.run.run_id)
        if entry is None:
            return
        attrs: dict[str, t.Any] = {"streamtap.event": "custom"}
        if self.capture_content and ev.data is not None:
            attrs["streamtap.data"] = self._writer.text(ev.data)
        entry.span.add_event(str(ev.name), attrs)

    def _on_end(self, ev: End) -> None:
        rid = ev.run.run_id
        entry = self._entries.pop(rid, None)
        if entry is None:
            return
        if entry.marker_due:  # a model run that never reached forward(): its marker still goes out
            entry.send_marker()
        span = entry.span
        kind = entry.kind
        status = ev.status
        attrs, ttfc = end_attributes(ev, kind, self.redact, self._writer if self.capture_content else None)
        if status != "ok":
            self._not_ok(entry, span, ev, attrs)
        if kind == "llm" and not entry.model:
            model = attrs.get("gen_ai.request.model")
            if model:
                span.update_name(f"{attrs.get('gen_ai.operation.name', 'chat')} {model}")
        span.set_attributes(attrs)
        timings = ev.timings
        start_ns = entry.start_ns
        span.end(end_time=start_ns + int(timings.duration * 1e9) if timings is not None and start_ns else None)
        recent = self._recent
        recent[rid] = span.get_span_context()  # each OrderedDict operation is atomic: no lock
        if len(recent) > _RECENT:
            try:
                recent.popitem(last=False)
            except KeyError:  # another thread trimmed it meanwhile
                pass
        if kind == "llm":
            self._metrics.record(ev, attrs, entry.model, entry.provider, ttfc)

    def _not_ok(self, entry: RunSpan, span: trace.Span, ev: End, attrs: dict[str, t.Any]) -> None:
        """What an ``error`` or ``cancelled`` End adds: status ERROR with ``error.type`` and its exception, the cancel reason."""
        error = ev.error
        if ev.status == "error":
            err = error or ErrorInfo("_OTHER", "")
            attrs["error.type"] = err.type or "_OTHER"
            message = self.redact(err.message)
            span.set_status(Status(StatusCode.ERROR, f"{err.type}: {message}" if message else err.type))
            self._record_exception(entry, err, message)
        elif ev.status == "cancelled" and error is not None:
            attrs["streamtap.cancel.reason"] = self.redact(error.message)

    def _record_exception(self, entry: RunSpan, err: ErrorInfo, message: str) -> None:
        exc = entry.exc
        if exc is not None and ErrorInfo.from_exception(exc).type == err.type:
            import traceback

            stack = self.redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            entry.span.record_exception(
                exc, {"exception.message": message, "exception.stacktrace": stack}, escaped=True
            )
        else:
            entry.span.add_event("exception", {"exception.type": err.type, "exception.message": message})
        entry.exc = None
