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
per-chunk cost is zero. A traced run's span is started once, right before
``forward()`` runs, with every attribute known by then in one
``attributes=`` (see ``docs/guide/tracing.md``, "Cost").

The package's modules, by concept: :mod:`.options` (names and environment
options), :mod:`.attributes` (runs, modules and annotations as attributes),
:mod:`.content` (opt-in content), :mod:`.metrics` (the GenAI histograms),
:mod:`.spans` (a run's span and its live marker), :mod:`.conversation`
and :mod:`.subscriber` (:class:`TracingSubscriber`).
"""

from __future__ import annotations

import typing as t

from .attributes import ANNOTATIONS
from .conversation import conversation
from .metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from .options import (
    CONTENT_ENV,
    LIVE_SPANS_ENV,
    PENDING_ATTRIBUTE,
    SEMCONV_VERSION,
    capture_content_from_env,
    live_spans_from_env,
)
from .subscriber import TracingSubscriber

if t.TYPE_CHECKING:
    from opentelemetry import metrics, trace

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
