"""OpenTelemetry spans and metrics for every run, named by the GenAI semantic conventions.

One call turns it on::

    from streamtap.tracing import instrument
    instrument()                        # the global TracerProvider / MeterProvider
    instrument(tracer_provider=tp)      # or explicit ones

(``streamtap_otlp.configure()`` sets up an OTLP exporter to Jaeger, Tempo or a
collector and calls this for you.)

What is recorded, pinned to the conventions of semantic-conventions
**v1.41.1** (every ``gen_ai.*`` item there is *Development*):

* **One span per run**, parented by the run tree -- ``Run.parent_id`` picks the
  parent span, whatever span happens to be current in the producing thread --
  started at :class:`~streamtap.events.Start` and ended at
  :class:`~streamtap.events.End` with the run's own wall-clock timings. A root
  run nests under the span current where it was called (a web request, a
  remote parent attached with :func:`streamtap.propagation.continue_trace`).
  No span per chunk.
* **Names and kinds**: ``chat {model}`` (CLIENT) for ``llm`` runs,
  ``execute_tool {name}`` for tools, ``invoke_agent {name}`` for agents,
  ``invoke_workflow {name}`` for flows (all INTERNAL); ``node`` and ``module``
  runs are named after the run, with ``streamtap.*`` attributes only.
* **Attributes**: ``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.*``, ``gen_ai.response.model`` / ``.id`` /
  ``.finish_reasons`` / ``.time_to_first_chunk``, ``gen_ai.usage.*``,
  ``gen_ai.tool.*``, ``gen_ai.agent.name``, ``gen_ai.workflow.name``,
  ``server.address`` / ``server.port``, ``error.type``, and on every span
  ``streamtap.run.id``, ``streamtap.run.kind``, ``streamtap.root.id``,
  ``streamtap.status`` (see :data:`ANNOTATIONS` for what a module's
  :meth:`~streamtap.RunContext.annotate` keys become).
* **Status**: ``error`` runs get status ERROR, ``error.type`` and an
  ``exception`` event (with the stack trace when the exception passed through
  ``forward``). ``cancelled`` and ``interrupted`` runs are not errors: their
  status stays UNSET and ``streamtap.status`` says which (plus
  ``streamtap.cancel.reason``). ``ok`` runs leave the status UNSET, as
  instrumentation libraries should.
* **Tool calls**: each tool's execution is its own ``execute_tool`` child span
  (with ``gen_ai.tool.call.id`` matched from the parent's ``requested`` tool
  event); the tool events of a run are also span events
  ``streamtap.tool.requested`` / ``.result`` / ``.error``. Custom events
  (:func:`streamtap.emit`) become span events named after them.
* **Content** -- inputs, outputs, messages, tool arguments and results, custom
  event data -- is recorded only on opt-in: ``capture_content=True``, or the
  environment variable ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
  set to ``true``, ``span_only`` or ``span_and_event``. Messages are written as
  the conventions' JSON (``gen_ai.input.messages``, ``gen_ai.output.messages``,
  ``gen_ai.system_instructions``, ``gen_ai.tool.definitions``; built by
  :mod:`streamtap.genai_messages`).
* **Redaction**, always on: API keys, bearer tokens, ``Authorization`` and
  similar headers and any configured pattern are replaced with ``[REDACTED]``
  in content, error messages, stack traces and annotations
  (:class:`~streamtap.redaction.Redactor`).
* **Metrics** for ``llm`` runs: the histograms ``gen_ai.client.token.usage``
  (``{token}``), ``gen_ai.client.operation.duration`` (``s``) and
  ``gen_ai.client.operation.time_to_first_chunk`` (``s``), with the
  conventions' bucket advisories.

* **Live spans** (opt-in: ``live_spans=True`` or ``STREAMTAP_LIVE_SPANS=true``):
  OpenTelemetry exports a span when it ends, so a long run is invisible in
  Jaeger or Phoenix until it finishes, and lost if the process dies. With
  live spans, each run's start also exports a *pending marker*: a
  zero-duration span in the run's trace, child of the run's own span (whose
  id is known at start), named like it, with ``streamtap.pending=true``,
  ``streamtap.pending.parent_span_id`` (the run span's own parent) and the
  ``streamtap.run.*`` attributes, but no ``gen_ai.*`` attribute, so no GenAI
  metric or LLM-span count sees it twice. When the run ends its real span
  arrives and the marker sits inside it as a zero-width child. A run whose
  process died leaves its marker. (The shape of Logfire's pending spans; see
  ``docs/guide/live-spans.md`` for why not a second copy of the span.)

OpenTelemetry's context is current inside ``forward()`` (through
:data:`streamtap.bus.scope_signal`), so libraries instrumented with
OpenTelemetry -- the HTTP client under the ``openai`` client -- nest their
spans under the module's span.

Cost: when no tracer provider is given and none is configured globally, a
root run is looked at and skipped (with its whole tree): nothing is built.
Only start, tool, custom and end events are received, never chunks, so the
per-chunk cost is zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import typing as t
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import genai_messages as genai
from ._receivers import IsolatedReceivers
from ._subscriber import KindDispatcher
from .dispatch import relaying
from .events import End, ErrorInfo, Run, Start, to_jsonable
from .redaction import REDACTED, Redactor

__all__ = [
    "ANNOTATIONS",
    "CONTENT_ENV",
    "DURATION_BUCKETS",
    "LIVE_SPANS_ENV",
    "PENDING_ATTRIBUTE",
    "SEMCONV_VERSION",
    "TOKEN_BUCKETS",
    "TracingSubscriber",
    "capture_content_from_env",
    "conversation",
    "instrument",
    "live_spans_from_env",
]

log = logging.getLogger("streamtap.tracing")

SEMCONV_VERSION = "1.41.1"
"""The OpenTelemetry semantic conventions release the names follow."""

_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
_SCOPE = "streamtap"

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The OpenTelemetry environment variable that opts in to message content."""

_CONTENT_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})

LIVE_SPANS_ENV = "STREAMTAP_LIVE_SPANS"
"""The environment variable that turns live spans (pending markers at each run's start) on: ``true``."""

PENDING_ATTRIBUTE = "streamtap.pending"
"""The attribute (``True``) that marks a pending marker span; real spans never carry it."""

TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""Bucket advisory of ``gen_ai.client.token.usage``."""

DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Bucket advisory of ``gen_ai.client.operation.duration`` and ``.time_to_first_chunk``."""

# run kind -> (gen_ai.operation.name, span kind, attribute naming the run)
_OPERATIONS: dict[str, tuple[str, SpanKind, str | None]] = {
    "llm": ("chat", SpanKind.CLIENT, None),
    "tool": ("execute_tool", SpanKind.INTERNAL, "gen_ai.tool.name"),
    "agent": ("invoke_agent", SpanKind.INTERNAL, "gen_ai.agent.name"),
    "flow": ("invoke_workflow", SpanKind.INTERNAL, "gen_ai.workflow.name"),
}

ANNOTATIONS: t.Mapping[str, tuple[str, type]] = {
    "operation_name": ("gen_ai.operation.name", str),
    "operation": ("gen_ai.operation.name", str),
    "provider_name": ("gen_ai.provider.name", str),
    "provider": ("gen_ai.provider.name", str),
    "request_model": ("gen_ai.request.model", str),
    "response_model": ("gen_ai.response.model", str),
    "response_id": ("gen_ai.response.id", str),
    "finish_reasons": ("gen_ai.response.finish_reasons", list),
    "server_address": ("server.address", str),
    "server_port": ("server.port", int),
    "temperature": ("gen_ai.request.temperature", float),
    "top_p": ("gen_ai.request.top_p", float),
    "top_k": ("gen_ai.request.top_k", float),
    "frequency_penalty": ("gen_ai.request.frequency_penalty", float),
    "presence_penalty": ("gen_ai.request.presence_penalty", float),
    "max_tokens": ("gen_ai.request.max_tokens", int),
    "seed": ("gen_ai.request.seed", int),
    "stop_sequences": ("gen_ai.request.stop_sequences", list),
    "stop": ("gen_ai.request.stop_sequences", list),
    "choice_count": ("gen_ai.request.choice.count", int),
    "stream": ("gen_ai.request.stream", bool),
    "output_type": ("gen_ai.output.type", str),
    "conversation_id": ("gen_ai.conversation.id", str),
    "agent_id": ("gen_ai.agent.id", str),
    "agent_description": ("gen_ai.agent.description", str),
    "agent_version": ("gen_ai.agent.version", str),
    "tool_call_id": ("gen_ai.tool.call.id", str),
    "tool_type": ("gen_ai.tool.type", str),
    "tool_description": ("gen_ai.tool.description", str),
    "data_source_id": ("gen_ai.data_source.id", str),
    "time_to_first_token": ("gen_ai.response.time_to_first_chunk", float),
    "time_to_first_chunk": ("gen_ai.response.time_to_first_chunk", float),
}
"""What the keys a module records with ``ctx.annotate(...)`` become on its span: key -> (attribute, type).

``request_`` prefixed spellings of the request parameters (``request_temperature``...)
are accepted too. A key that already contains a dot (``gen_ai.request.seed``,
``server.address``) is used as the attribute name as it is. Any other key with
a primitive value (or a list of them) becomes ``streamtap.attributes.<key>``.
The keys ``input_messages``, ``output_messages``, ``system_instructions`` and
``tool_definitions`` are content: recorded (as ``gen_ai.*`` JSON) only on opt-in.
"""

# input_messages -> gen_ai.input.messages, ..., tool_definitions -> gen_ai.tool.definitions
_CONTENT_ANNOTATIONS = {name.removeprefix("gen_ai.").replace(".", "_"): name for name in genai.ATTRIBUTES}
_CONTENT_ATTRS = frozenset(genai.ATTRIBUTES) | {
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
_PRIMITIVES = (str, bool, int, float)


def capture_content_from_env() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for content on spans."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON


def live_spans_from_env() -> bool:
    """Whether ``STREAMTAP_LIVE_SPANS`` asks for pending markers at each run's start."""
    value = os.environ.get(LIVE_SPANS_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    log.warning("%s=%r is not true or false; live spans stay off", LIVE_SPANS_ENV, value)
    return False


def _coerce(value: t.Any, tp: type) -> t.Any:
    if value is None:
        return None
    try:
        if tp is list:
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
        if tp is bool:
            return bool(value)
        if tp is str:
            return str(value)
        return tp(value)
    except (TypeError, ValueError):
        return None


def _is_attr_value(value: t.Any) -> bool:
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, (list, tuple)) and value:
        first = type(value[0])
        return first in (str, bool, int, float) and all(type(v) is first for v in value)
    return False


class _Entry:
    """A live span and what the tracer keeps about its run."""

    __slots__ = ("exc", "kind", "marker", "model", "pending", "provider", "request", "span", "start_ns", "tracer")

    def __init__(self, span: trace.Span, tracer: trace.Tracer, kind: str, start_ns: int) -> None:
        self.span = span
        self.tracer = tracer
        self.kind = kind
        self.start_ns = start_ns
        self.exc: BaseException | None = None
        self.pending: dict[str, list[str]] | None = None  # tool name -> requested call ids
        self.model: str | None = None
        self.provider: str | None = None
        self.request: genai.RequestContent | None = None  # content on opt-in, refined when forward() starts
        self.marker: tuple[str, SpanKind, dict[str, t.Any], t.Any, int | None] | None = (
            None  # a live-span marker not sent yet
        )


class _SpanScope:
    """Makes a run's span current around ``forward()`` and keeps the exception that left it."""

    __slots__ = ("entry", "token")

    def __init__(self, entry: _Entry) -> None:
        self.entry = entry
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = otel_context.attach(trace.set_span_in_context(self.entry.span))
        return self.entry.span

    def __exit__(self, tp: t.Any, exc: BaseException | None, tb: t.Any) -> None:  # noqa: PYI036 - the arguments are passed on untouched
        if exc is not None:
            self.entry.exc = exc
        otel_context.detach(self.token)  # type: ignore[arg-type]


class TracingSubscriber(KindDispatcher):
    """Turns every run into an OpenTelemetry span (and ``llm`` runs into metrics).

    Create it, then :meth:`subscribe` (or use :func:`instrument`, which does
    both); use it as a context manager to unsubscribe on exit.

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
            (see the module docstring). Default ``None``: follow ``STREAMTAP_LIVE_SPANS``.

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
            from .exceptions import UsageError

            msg = f"max_content_length must be 0 or more characters, got {max_content_length!r}."
            raise UsageError(msg)
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._tracer_of: object = None
        if tracer_provider is not None:
            self._tracer = tracer_provider.get_tracer(_SCOPE, _version(), schema_url=_SCHEMA_URL)
        self.capture_content = capture_content_from_env() if capture_content is None else bool(capture_content)
        """Whether content is recorded."""
        self.redact = Redactor(redact)
        """The :class:`~streamtap.redaction.Redactor` applied to everything recorded."""
        self.max_content_length = max_content_length
        self.live_spans = live_spans_from_env() if live_spans is None else bool(live_spans)
        """Whether each run's start exports a pending marker span."""
        self._meter_provider = meter_provider
        self._instruments: tuple[t.Any, t.Any, t.Any] | None = None
        self._entries: dict[str, _Entry] = {}
        self._recent: dict[str, trace.SpanContext] = {}
        self._recent_lock = threading.Lock()
        self._set_handlers(
            {"start": self._on_start, "tool": self._on_tool, "custom": self._on_custom, "end": self._on_end}
        )
        # The scope receiver is connected when the first traced run starts: until then (no
        # provider configured) no run pays for the scope signal.
        self._scope = IsolatedReceivers("the streamtap tracing subscriber's scope", {}, scope=self._on_scope, log=log)

    # -- lifecycle ------------------------------------------------------------

    def unsubscribe(self) -> None:
        """Stop tracing runs. Spans of runs still going are not ended (their End is no longer seen)."""
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

    # -- tracer / meter -------------------------------------------------------

    def _root_tracer(self) -> trace.Tracer | None:
        if self._provider is not None:
            return self._tracer
        provider = trace.get_tracer_provider()
        if provider is not self._tracer_of:
            if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None
            self._tracer = provider.get_tracer(_SCOPE, _version(), schema_url=_SCHEMA_URL)
            self._tracer_of = provider
        return self._tracer

    def _metrics(self) -> tuple[t.Any, t.Any, t.Any]:
        if self._instruments is None:
            provider = self._meter_provider or metrics.get_meter_provider()
            meter = provider.get_meter(_SCOPE, _version(), schema_url=_SCHEMA_URL)
            self._instruments = (
                meter.create_histogram(
                    "gen_ai.client.token.usage",
                    unit="{token}",
                    description="Number of input and output tokens used.",
                    explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
                ),
                meter.create_histogram(
                    "gen_ai.client.operation.duration",
                    unit="s",
                    description="GenAI operation duration.",
                    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
                ),
                meter.create_histogram(
                    "gen_ai.client.operation.time_to_first_chunk",
                    unit="s",
                    description="Time to receive the first chunk in a streaming operation.",
                    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
                ),
            )
        return self._instruments

    # -- content --------------------------------------------------------------

    def _content(self, value: t.Any) -> str:
        """JSON of a value, secrets redacted, cut at ``max_content_length``."""
        text = value if isinstance(value, str) else self._dumps(value)
        text = self.redact(text)
        limit = self.max_content_length
        if len(text) > limit:
            text = text[:limit] + "...[truncated]"
        return text

    def _dumps(self, value: t.Any) -> str:
        text = json.dumps(self.redact.scrub(to_jsonable(value)), ensure_ascii=False, separators=(",", ":"))
        return self.redact(text)

    def _genai(self, value: t.Any) -> str:
        """GenAI content JSON (messages, parts, tool definitions), redacted, kept valid JSON within the limit."""
        return genai.fit(value, self.max_content_length, self._dumps)

    def _request_attrs(self, request: genai.RequestContent) -> dict[str, str]:
        return {name: self._genai(value) for name, value in request.attributes().items()}

    # -- handlers ---------------------------------------------------------------

    def _start(self, ev: Start) -> _Entry | None:
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
            parent_ctx = None  # the caller's context: a web request span, a remote parent...
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
        op = _OPERATIONS.get(kind)
        attrs: dict[str, t.Any] = {
            "streamtap.run.id": rid,
            "streamtap.run.kind": kind,
            "streamtap.root.id": run.root_id,
        }
        if run.tags:
            attrs["streamtap.tags"] = [str(x) for x in run.tags]
        conversation_id = run.metadata.get("conversation_id") or _conversation.get()
        if conversation_id:
            attrs["gen_ai.conversation.id"] = self.redact(str(conversation_id))
        if op is None:
            name = run.name
            span_kind = SpanKind.INTERNAL
            attrs["streamtap.run.name"] = run.name
        else:
            operation, span_kind, name_attr = op
            attrs["gen_ai.operation.name"] = operation
            if name_attr is not None:
                attrs[name_attr] = run.name
                name = f"{operation} {run.name}"
            else:
                attrs["streamtap.run.name"] = run.name
                name = operation  # "chat {model}" once the scope receiver has seen the module
            if kind == "tool":
                attrs["gen_ai.tool.type"] = "function"
                call_id = self._claim_call_id(run)
                if call_id:
                    attrs["gen_ai.tool.call.id"] = call_id
        request = None
        if self.capture_content and ev.inputs is not None:
            if kind in ("llm", "agent"):
                request = genai.request_content(ev.inputs)
                attrs.update(self._request_attrs(request))
            else:
                attrs.update(self._input_content(kind, ev.inputs))
        start_ns = int(ev.started_at * 1e9) if ev.started_at else None
        span = tracer.start_span(name, context=parent_ctx, kind=span_kind, attributes=attrs, start_time=start_ns)
        entry = _Entry(span, tracer, kind, start_ns or 0)
        entry.request = request
        self._entries[rid] = entry
        if self.live_spans:
            if kind == "llm":
                entry.marker = (
                    name,
                    span_kind,
                    attrs,
                    parent_ctx,
                    start_ns,
                )  # named "chat {model}" once the module is seen
            else:
                self._pending_marker(tracer, span, name, span_kind, attrs, parent_ctx, start_ns)
        if not self._scope.connected:
            self._scope.connect()
        return entry

    def _on_start(self, ev: Start) -> None:
        self._start(ev)

    @staticmethod
    def _pending_marker(
        tracer: trace.Tracer,
        span: trace.Span,
        name: str,
        span_kind: SpanKind,
        attrs: t.Mapping[str, t.Any],
        parent_ctx: t.Any,
        start_ns: int | None,
    ) -> None:
        """Export a zero-duration marker, child of the run's span, saying the run is in progress."""
        if not span.is_recording():
            return
        parent = (
            trace.get_current_span(parent_ctx).get_span_context()
            if parent_ctx is not None
            else trace.get_current_span().get_span_context()
        )
        marker_attrs: dict[str, t.Any] = {k: v for k, v in attrs.items() if k.startswith("streamtap.")}
        marker_attrs[PENDING_ATTRIBUTE] = True
        marker_attrs["streamtap.pending.parent_span_id"] = (
            format(parent.span_id, "016x") if parent.is_valid else "0" * 16
        )
        marker_attrs["streamtap.pending.span_id"] = format(span.get_span_context().span_id, "016x")
        marker = tracer.start_span(
            name, context=trace.set_span_in_context(span), kind=span_kind, attributes=marker_attrs, start_time=start_ns
        )
        marker.end(end_time=start_ns)

    def _claim_call_id(self, run: Run) -> str | None:
        parent = self._entries.get(run.parent_id) if run.parent_id else None
        if parent is None or not parent.pending:
            return None
        ids = parent.pending.get(run.name)
        return ids.pop(0) if ids else None

    def _input_content(self, kind: str, inputs: t.Any) -> dict[str, str]:
        if kind == "tool":
            return {"gen_ai.tool.call.arguments": self._content(inputs)}
        return {"streamtap.input": self._content(inputs)}

    def _on_scope(self, module: t.Any, run: Run, context: t.Any) -> t.Any:
        entry = self._entries.get(run.run_id)
        if entry is None:
            return None
        if entry.kind in ("llm", "tool"):
            self._describe(entry, module)
        if entry.marker is not None:
            name, span_kind, attrs, parent_ctx, start_ns = entry.marker
            entry.marker = None
            self._pending_marker(
                entry.tracer,
                entry.span,
                f"chat {entry.model}" if entry.model else name,
                span_kind,
                attrs,
                parent_ctx,
                start_ns,
            )
        if entry.request is not None:
            self._describe_request(entry, module)
        return lambda: _SpanScope(entry)

    def _describe_request(self, entry: _Entry, module: t.Any) -> None:
        """Content read from the module before forward() runs.

        The request a chat module will send (:func:`streamtap.genai_messages.as_sent`),
        the tools of an agent.
        """
        request, entry.request = entry.request, None
        assert request is not None
        if entry.kind == "agent":
            tools = [] if request.tool_definitions else genai.agent_tool_definitions(module)
            if tools:
                entry.span.set_attribute("gen_ai.tool.definitions", self._genai(tools))
            return
        sent = genai.as_sent(request, module)
        if sent is not None:
            entry.span.set_attributes(self._request_attrs(sent))

    @staticmethod
    def _describe(entry: _Entry, module: t.Any) -> None:
        """Attributes read from the module itself, before forward() runs (model, server, tool description)."""
        span = entry.span
        if entry.kind == "tool":
            desc = _str_attr(module, "description")
            if desc:
                span.set_attribute("gen_ai.tool.description", desc)
            return
        attrs: dict[str, t.Any] = {}
        model = _str_attr(module, "model")
        provider = _str_attr(module, "provider_name") or _str_attr(module, "provider")
        address = _str_attr(module, "server_address")
        port = getattr(module, "server_port", None)
        if model:
            attrs["gen_ai.request.model"] = model
            span.update_name(f"chat {model}")
        if provider:
            attrs["gen_ai.provider.name"] = provider
        if address:
            attrs["server.address"] = address
        if isinstance(port, int) and not isinstance(port, bool):
            attrs["server.port"] = port
        if attrs:
            span.set_attributes(attrs)
        entry.model = model
        entry.provider = provider

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
                attrs["gen_ai.tool.call.arguments"] = self._content(ev.arguments)
        elif ev.phase == "result":
            if self.capture_content and ev.result is not None:
                attrs["gen_ai.tool.call.result"] = self._content(ev.result)
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
            attrs["streamtap.data"] = self._content(ev.data)
        entry.span.add_event(str(ev.name), attrs)

    def _on_end(self, ev: End) -> None:
        rid = ev.run.run_id
        entry = self._entries.pop(rid, None)
        if entry is None:
            return
        if entry.marker is not None:  # a model run that never reached forward(): its marker still goes out
            name, span_kind, attrs_, parent_ctx, start_ns = entry.marker
            entry.marker = None
            self._pending_marker(entry.tracer, entry.span, name, span_kind, attrs_, parent_ctx, start_ns)
        span = entry.span
        kind = entry.kind
        attrs: dict[str, t.Any] = {"streamtap.status": ev.status}
        if ev.attributes:
            attrs.update(self._annotations(ev.attributes))
        usage = ev.usage
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.reasoning_tokens is not None:
                attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
            if usage.cached_input_tokens is not None:
                attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
        timings = ev.timings
        ttfc = timings.time_to_first_chunk if timings is not None else None
        if kind == "llm" and "gen_ai.response.time_to_first_chunk" in attrs:
            ttfc = attrs["gen_ai.response.time_to_first_chunk"]  # the module measured it from the request
        elif ttfc is not None:
            if kind == "llm":
                attrs["gen_ai.response.time_to_first_chunk"] = ttfc
                attrs.setdefault("gen_ai.request.stream", True)
            else:
                attrs["streamtap.time_to_first_chunk"] = ttfc
        if self.capture_content and ev.output is not None and ev.status in ("ok", "interrupted", "error"):
            attrs.update(self._output_content(kind, ev, attrs))
        error = ev.error
        if ev.status == "error":
            err = error or ErrorInfo("_OTHER", "")
            attrs["error.type"] = err.type or "_OTHER"
            message = self.redact(err.message)
            span.set_status(Status(StatusCode.ERROR, f"{err.type}: {message}" if message else err.type))
            self._record_exception(entry, err, message)
        elif ev.status == "cancelled" and error is not None:
            attrs["streamtap.cancel.reason"] = self.redact(error.message)
        if kind == "llm":
            model = attrs.get("gen_ai.request.model") or entry.model
            if model and not entry.model:
                op = attrs.get("gen_ai.operation.name", "chat")
                span.update_name(f"{op} {model}")
        span.set_attributes(attrs)
        end_ns = entry.start_ns + int(timings.duration * 1e9) if timings is not None and entry.start_ns else None
        span.end(end_time=end_ns)
        with self._recent_lock:
            recent = self._recent
            recent[rid] = span.get_span_context()
            if len(recent) > 1024:
                del recent[next(iter(recent))]
        if kind == "llm":
            self._record_metrics(entry, ev, attrs, ttfc)

    def _annotations(self, annotations: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {}
        content = self.capture_content
        for key, value in annotations.items():
            if value is None:
                continue
            if self.redact.is_sensitive_key(key):
                out[f"streamtap.attributes.{key}"] = REDACTED
                continue
            spec = ANNOTATIONS.get(key)
            if spec is None and key.startswith("request_"):
                spec = ANNOTATIONS.get(key[8:])
            if spec is not None:
                name, tp = spec
                value = _coerce(value, tp)  # noqa: PLW2901 - the value is normalised in place on purpose
                if value is None:
                    continue
            elif key in _CONTENT_ANNOTATIONS or key in _CONTENT_ATTRS:
                if content:
                    name = _CONTENT_ANNOTATIONS.get(key, key)
                    out[name] = self._annotated_content(name, value, annotations)
                continue
            elif "." in key:
                name = key
                if not _is_attr_value(value):
                    continue
            elif _is_attr_value(value):
                name = f"streamtap.attributes.{key}"
            else:
                continue
            if isinstance(value, str):
                value = self.redact(value)  # noqa: PLW2901 - the value is normalised in place on purpose
            elif isinstance(value, (list, tuple)):
                value = [self.redact(v) if isinstance(v, str) else v for v in value]  # noqa: PLW2901 - the value is normalised in place on purpose
            out[name] = value
        return out

    def _annotated_content(self, name: str, value: t.Any, annotations: t.Mapping[str, t.Any]) -> str:
        """A content annotation (``input_messages=``...) in the conventions' shape."""
        if name not in genai.ATTRIBUTES:
            return self._content(value)  # tool call arguments and results: as they are
        reasons = _coerce(annotations.get("finish_reasons"), list) or [None]
        return self._genai(genai.shape(name, value, reasons[0]))

    def _output_content(self, kind: str, ev: End, attrs: t.Mapping[str, t.Any]) -> dict[str, str]:
        if kind == "tool":
            return {"gen_ai.tool.call.result": self._content(ev.output)}
        if kind in ("llm", "agent"):
            # The End's output wins over an annotated output_messages: a reply carries its reasoning too.
            reasons = attrs.get("gen_ai.response.finish_reasons") or [None]
            reason = "error" if ev.status == "error" else reasons[0]
            return {"gen_ai.output.messages": self._genai(genai.output_messages(ev.output, reason))}
        return {"streamtap.output": self._content(ev.output)}

    def _record_exception(self, entry: _Entry, err: ErrorInfo, message: str) -> None:
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

    def _record_metrics(self, entry: _Entry, ev: End, attrs: t.Mapping[str, t.Any], ttfc: float | None) -> None:
        tokens, duration, first_chunk = self._metrics()
        common: dict[str, t.Any] = {"gen_ai.operation.name": attrs.get("gen_ai.operation.name", "chat")}
        provider = attrs.get("gen_ai.provider.name") or entry.provider
        if provider:
            common["gen_ai.provider.name"] = provider
        for key in ("gen_ai.request.model", "gen_ai.response.model", "server.address", "server.port"):
            value = attrs.get(key)
            if value is not None:
                common[key] = value
        if "gen_ai.request.model" not in common and entry.model:
            common["gen_ai.request.model"] = entry.model
        with_error = dict(common)
        if ev.status == "error":
            with_error["error.type"] = attrs.get("error.type", "_OTHER")
        if ev.timings is not None:
            duration.record(ev.timings.duration, with_error)
        if ttfc is not None:
            first_chunk.record(ttfc, common)
        if ev.usage is not None:
            tokens.record(ev.usage.input_tokens, {**common, "gen_ai.token.type": "input"})
            tokens.record(ev.usage.output_tokens, {**common, "gen_ai.token.type": "output"})


def _str_attr(obj: t.Any, name: str) -> str | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, str) and value else None


def _version() -> str:
    from . import __version__

    return __version__


def instrument(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    *,
    capture_content: bool | None = None,
    redact: t.Iterable[str | t.Any] = (),
    max_content_length: int = 16_384,
    live_spans: bool | None = None,
) -> TracingSubscriber:
    """Trace every run from now on; returns the subscribed :class:`TracingSubscriber`.

    The arguments are those of :class:`TracingSubscriber`. Call
    ``.unsubscribe()`` on the result (or use it as a context manager) to stop.
    """
    return TracingSubscriber(
        tracer_provider,
        meter_provider,
        capture_content=capture_content,
        redact=redact,
        max_content_length=max_content_length,
        live_spans=live_spans,
    ).subscribe()


_conversation: ContextVar[str | None] = ContextVar("streamtap_conversation_id", default=None)


@contextlib.contextmanager
def conversation(conversation_id: str | None) -> t.Iterator[None]:
    """Runs started in the block -- and every run below them -- carry ``gen_ai.conversation.id``.

    The web app wraps each chat request in it with the chat id. A module's own
    ``metadata={"conversation_id": ...}`` takes precedence for its runs.
    """
    token = _conversation.set(conversation_id)
    try:
        yield
    finally:
        _conversation.reset(token)
