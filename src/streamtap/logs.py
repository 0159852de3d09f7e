"""structlog integration: run and trace ids on every line written inside a module, one line per step.

Three pieces, usable separately:

* :func:`add_run_ids`, a structlog processor that adds ``run_id``, ``root_id``,
  ``trace_id`` and ``span_id`` to any line written while a module runs -- in
  its thread, in tasks it creates, in threads started through
  :class:`streamtap.Executor`, :func:`streamtap.propagate` or :func:`streamtap.wrap`.
  (``trace_id``/``span_id`` are the run's own span's when tracing is on,
  because the tracing subscriber makes that span current inside ``forward()``.)
* :class:`LogSubscriber`, which writes one structured line per run start, tool
  event and run end (``run.start``, ``tool.requested``/``tool.result``/
  ``tool.error``, ``run.end``), custom events (``run.event``) and, only when
  asked, chunks (``run.chunk``, at debug level).
* :func:`configure`, one call for JSON or pretty console output. It respects
  an existing structlog configuration: if structlog is already configured, it
  only inserts :func:`add_run_ids` into the existing processor chain.

Nothing is configured at import. Content (inputs, outputs, tool arguments and
results, chunk text) goes into lines only on opt-in, and is redacted like span
content (:class:`~streamtap.redaction.Redactor`).

Example::

    from streamtap import logs
    logs.configure(json=True)
    logs.LogSubscriber().subscribe()
    log = structlog.get_logger()

    class Fetch(ModuleBase):
        def forward(self, url):
            log.info("fetching", url=url)   # carries run_id, root_id, trace_id, span_id
"""

from __future__ import annotations

import logging
import sys
import typing as t

from opentelemetry import context as otel_context
from opentelemetry import trace

from ._subscriber import KindDispatcher
from .context import current_var as _current
from .events import to_jsonable
from .exceptions import UsageError
from .redaction import Redactor

__all__ = ["LogSubscriber", "add_run_ids", "configure"]

EventDict = t.MutableMapping[str, t.Any]
"""What structlog passes along its processor chain."""

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def add_run_ids(logger: t.Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Structlog processor: add ``run_id``, ``root_id``, ``trace_id`` and ``span_id`` when known.

    Ids the caller passed explicitly win (``setdefault``). Outside any module
    and any span the line is left as it is.
    """
    ctx = _current.get()
    if ctx is not None:
        run = ctx.run
        event_dict.setdefault("run_id", run.run_id)
        event_dict.setdefault("root_id", run.root_id)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(span.span_id))
    return event_dict


class _SpanSource(t.Protocol):
    def span_context(self, run_id: str) -> trace.SpanContext | None: ...

    def ensure_started(self, event: t.Any) -> trace.SpanContext | None: ...


class LogSubscriber(KindDispatcher):
    """Writes one structlog line per run start, tool event, custom event and run end.

    Args:
        logger: the structlog logger to write with (default ``structlog.get_logger("streamtap")``).
        chunks: also write one debug line per chunk (``run.chunk``).
        capture_content: put inputs, outputs, tool arguments/results and chunk
            text in the lines. Default ``None``: follow
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, like the spans.
        redact: extra redaction patterns (secrets are always redacted).
        tracing: a :class:`streamtap.tracing.TracingSubscriber`; when given,
            each line carries its own run's ``trace_id`` and ``span_id``.
            Without it, step lines carry no trace ids (the span current when a
            run starts or ends is its parent's, which would mislead).

    Levels: ``run.end`` is ``error`` for failed runs, ``warning`` for cancelled
    and interrupted ones, ``info`` otherwise; ``tool.error`` is ``warning``.
    """

    def __init__(
        self,
        logger: t.Any = None,
        *,
        chunks: bool = False,
        capture_content: bool | None = None,
        redact: t.Iterable[t.Any] = (),
        tracing: _SpanSource | None = None,
    ) -> None:
        if logger is None:
            import structlog

            logger = structlog.get_logger("streamtap")
        from .tracing import capture_content_from_env

        self.logger = logger
        """Where the lines go."""
        self.capture_content = capture_content_from_env() if capture_content is None else bool(capture_content)
        self.redact = Redactor(redact)
        self.tracing = tracing
        handlers: dict[str, t.Callable[[t.Any], None]] = {
            "start": self._on_start,
            "tool": self._on_tool,
            "custom": self._on_custom,
            "end": self._on_end,
        }
        if chunks:
            handlers["chunk"] = self._on_chunk
        self._set_handlers(handlers)

    @property
    def errors(self) -> int:
        """How many times writing a line raised (isolated from the run)."""
        return self._bus_errors

    # -- lines ----------------------------------------------------------------

    def _content(self, value: t.Any) -> t.Any:
        return self.redact.scrub(to_jsonable(value))

    def _write(
        self, level: str, event: str, run: t.Any, span: trace.SpanContext | None, fields: dict[str, t.Any]
    ) -> None:
        fields["run_id"] = run.run_id
        fields["root_id"] = run.root_id
        if run.parent_id is not None:
            fields["parent_id"] = run.parent_id
        fields["run_name"] = run.name
        fields["run_kind"] = run.kind
        if span is not None and span.is_valid:
            fields["trace_id"] = trace.format_trace_id(span.trace_id)
            fields["span_id"] = trace.format_span_id(span.span_id)
        # The current OTel span is the parent's here; hide it from add_run_ids.
        token = otel_context.attach(otel_context.Context())
        try:
            getattr(self.logger, level)(event, **fields)
        finally:
            otel_context.detach(token)

    def _span(self, run_id: str) -> trace.SpanContext | None:
        return self.tracing.span_context(run_id) if self.tracing is not None else None

    def _on_start(self, ev: t.Any) -> None:
        span = self.tracing.ensure_started(ev) if self.tracing is not None else None
        fields: dict[str, t.Any] = {}
        if ev.run.tags:
            fields["tags"] = list(ev.run.tags)
        if self.capture_content and ev.inputs is not None:
            fields["inputs"] = self._content(ev.inputs)
        self._write("info", "run.start", ev.run, span, fields)

    def _on_tool(self, ev: t.Any) -> None:
        fields: dict[str, t.Any] = {"tool": ev.name, "call_id": ev.call_id}
        level = "info"
        if ev.phase == "requested" and self.capture_content and ev.arguments is not None:
            fields["arguments"] = self._content(ev.arguments)
        elif ev.phase == "result" and self.capture_content and ev.result is not None:
            fields["result"] = self._content(ev.result)
        elif ev.phase == "error" and ev.error is not None:
            level = "warning"
            fields["error_type"] = ev.error.type
            fields["error"] = self.redact(ev.error.message)
        self._write(level, f"tool.{ev.phase}", ev.run, self._span(ev.run.run_id), fields)

    def _on_custom(self, ev: t.Any) -> None:
        fields: dict[str, t.Any] = {"name": ev.name}
        if self.capture_content and ev.data is not None:
            fields["data"] = self._content(ev.data)
        self._write("info", "run.event", ev.run, self._span(ev.run.run_id), fields)

    def _on_chunk(self, ev: t.Any) -> None:
        fields: dict[str, t.Any] = {"channel": ev.channel, "seq": ev.seq}
        if self.capture_content:
            fields["delta"] = self._content(ev.delta)
        self._write("debug", "run.chunk", ev.run, self._span(ev.run.run_id), fields)

    def _on_end(self, ev: t.Any) -> None:
        fields: dict[str, t.Any] = {"status": ev.status}
        timings = ev.timings
        if timings is not None:
            fields["duration_ms"] = round(timings.duration * 1000, 3)
            if timings.time_to_first_chunk is not None:
                fields["ttfc_ms"] = round(timings.time_to_first_chunk * 1000, 3)
        if ev.usage is not None:
            fields["input_tokens"] = ev.usage.input_tokens
            fields["output_tokens"] = ev.usage.output_tokens
        if ev.error is not None:
            fields["error_type"] = ev.error.type
            fields["error"] = self.redact(ev.error.message)
        if self.capture_content and ev.output is not None:
            fields["output"] = self._content(ev.output)
        level = {"error": "error", "cancelled": "warning", "interrupted": "warning"}.get(ev.status, "info")
        self._write(level, "run.end", ev.run, self._span(ev.run.run_id), fields)


def configure(
    *,
    json: bool | None = None,
    level: str = "info",
    force: bool = False,
    file: t.TextIO | None = None,
) -> None:
    """Configure structlog for streamtap in one call: JSON lines or a pretty console.

    If structlog is already configured (and ``force`` is false), the existing
    configuration is kept and :func:`add_run_ids` is only inserted into its
    processor chain, just before the final renderer. Calling it twice is harmless.

    Args:
        json: JSON lines (``True``) or structlog's coloured console renderer
            (``False``). Default: JSON unless the output is a terminal.
        level: the lowest level written (``debug``, ``info``, ``warning``, ``error``, ``critical``).
        force: replace an existing structlog configuration.
        file: where lines go (default ``sys.stderr``).

    Raises:
        UsageError: an unknown ``level``.
    """
    import structlog

    lvl = _LEVELS.get(str(level).lower())
    if lvl is None:
        msg = f"Unknown log level {level!r}; use one of {sorted(_LEVELS, key=_LEVELS.__getitem__)}."
        raise UsageError(msg)
    if structlog.is_configured() and not force:
        processors = list(structlog.get_config()["processors"])
        if add_run_ids not in processors:
            processors.insert(max(0, len(processors) - 1), add_run_ids)
            structlog.configure(processors=processors)
        return
    out = file or sys.stderr
    as_json = (not out.isatty()) if json is None else json
    renderer: t.Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    processors = [
        structlog.contextvars.merge_contextvars,
        add_run_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
