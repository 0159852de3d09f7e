"""Export failures counted, and logged once per outage instead of once per export.

The OpenTelemetry SDK's OTLP exporters log every failed export (and every
retry) at WARNING / ERROR: a collector that is down, or a backend that takes
traces but not metrics (Jaeger answers ``UNIMPLEMENTED`` / ``404`` for
metrics), fills the application's log with the same line on every flush --
in a short-lived script, on every run. :class:`WatchedSpanExporter` and
:class:`WatchedMetricExporter` wrap an exporter so that:

* every export's outcome is counted in an :class:`ExportHealth`
  (``export.health.failures("traces")``);
* the first failure of an outage is logged **once**, on the ``streamtap_otlp``
  logger, with the SDK's own explanation and what to do; the exporter's own
  log records during our exports are held back (only records logged by the
  thread while it runs one of these exports, so other exporters in the
  process keep their logs);
* the first success after an outage is logged at INFO, and the next outage is
  logged once again;
* an exporter that raises is a failure, never an exception in the SDK's threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import typing as t

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from streamtap.redaction import Redactor

__all__ = ["SDK_EXPORTER_LOGGERS", "ExportHealth", "WatchedMetricExporter", "WatchedSpanExporter"]

log = logging.getLogger("streamtap_otlp")

SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)
"""The loggers of the SDK's OTLP exporters whose records are held back while one of ours exports."""

Signal = t.Literal["traces", "metrics"]


class _Hold(logging.Filter):
    """Drops the records logged by a thread while it is inside :meth:`holding`; keeps the first message."""

    def __init__(self) -> None:
        super().__init__("streamtap_otlp.hold")
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[str] | None = getattr(self._local, "held", None)
        if held is None:
            return True
        if record.levelno >= logging.WARNING and not held:
            held.append(record.getMessage())
        return False

    @contextlib.contextmanager
    def holding(self) -> t.Iterator[list[str]]:
        outer = getattr(self._local, "held", None)
        held: list[str] = []
        self._local.held = held
        try:
            yield held
        finally:
            self._local.held = outer


class ExportHealth:
    """How the exports of one :class:`~streamtap_otlp.OtlpExport` went, per signal (``traces``, ``metrics``).

    Args:
        describe: ``signal -> "to <endpoint> over <protocol>"`` for the log lines.
        loggers: names of the loggers whose records are held back during our exports.
    """

    def __init__(self, describe: t.Callable[[str], str], loggers: t.Iterable[str] = SDK_EXPORTER_LOGGERS) -> None:
        self._describe = describe
        self._cond = threading.Condition()
        self._ok: dict[str, int] = {"traces": 0, "metrics": 0}
        self._failed: dict[str, int] = {"traces": 0, "metrics": 0}
        self._streak: dict[str, int] = {"traces": 0, "metrics": 0}
        self._hold = _Hold()
        self._loggers = [logging.getLogger(name) for name in loggers]
        self._redact = Redactor()
        for lg in self._loggers:
            # First in line: the gRPC exporter's own DuplicateFilter would otherwise drop the record we report.
            lg.filters.insert(0, self._hold)

    def close(self) -> None:
        """Stop holding back the SDK exporters' records (called by ``OtlpExport.shutdown``)."""
        for lg in self._loggers:
            lg.removeFilter(self._hold)

    def total_failures(self) -> int:
        """Failed exports of every signal so far."""
        with self._cond:
            return sum(self._failed.values())

    def failures(self, signal: Signal) -> int:
        """How many exports of ``signal`` failed so far."""
        with self._cond:
            return self._failed[signal]

    def successes(self, signal: Signal) -> int:
        """How many exports of ``signal`` succeeded so far."""
        with self._cond:
            return self._ok[signal]

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{"traces": {"ok": n, "failed": n}, "metrics": {...}}``."""
        with self._cond:
            return {s: {"ok": self._ok[s], "failed": self._failed[s]} for s in self._ok}

    def wait_for_failures(self, signal: Signal, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` exports of ``signal`` failed; ``False`` if not within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._failed[signal] >= count, timeout)

    @contextlib.contextmanager
    def watch(self, signal: Signal) -> t.Iterator[list[bool]]:
        """Around one export: yields a one-item list the caller sets to the export's success."""
        outcome = [False]
        error: BaseException | None = None
        with self._hold.holding() as held:
            try:
                yield outcome
            except Exception as exc:
                error = exc
                outcome[0] = False
        detail = (
            held[0] if held else (f"{type(error).__name__}: {error}" if error else "the exporter reported a failure")
        )
        self._record(signal, outcome[0], detail)

    def _record(self, signal: Signal, ok: bool, detail: str) -> None:
        with self._cond:
            if ok:
                self._ok[signal] += 1
                streak, self._streak[signal] = self._streak[signal], 0
            else:
                self._failed[signal] += 1
                self._streak[signal] += 1
                streak = self._streak[signal]
            self._cond.notify_all()
        where = self._describe(signal)
        if ok and streak:
            log.info("OTLP %s export %s works again, after %d failed exports.", signal, where, streak)
        elif not ok and streak == 1:
            hint = ""
            if signal == "metrics":
                hint = (
                    " If this backend takes no metrics, set OTEL_METRICS_EXPORTER=none (or configure(metrics=False))."
                )
            log.warning(
                "OTLP %s export %s failed: %s. Runs are not affected; further failures are counted "
                "(export.health), not logged, until an export succeeds again.%s",
                signal,
                where,
                self._redact(detail.rstrip(".")),
                hint,
            )


class WatchedSpanExporter(SpanExporter):
    """A span exporter whose exports are counted and whose failures are logged once per outage."""

    def __init__(self, inner: SpanExporter, health: ExportHealth) -> None:
        self.inner = inner
        """The wrapped exporter."""
        self._health = health

    def export(self, spans: t.Sequence[t.Any]) -> SpanExportResult:
        """Export through the wrapped exporter; a raised exception is a ``FAILURE``."""
        result = SpanExportResult.FAILURE
        with self._health.watch("traces") as outcome:
            result = self.inner.export(spans)
            outcome[0] = result == SpanExportResult.SUCCESS
        return result

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return bool(self.inner.force_flush(timeout_millis))


class WatchedMetricExporter(MetricExporter):
    """A metric exporter whose exports are counted and whose failures are logged once per outage."""

    def __init__(self, inner: MetricExporter, health: ExportHealth) -> None:
        # The metric reader takes its temporality and aggregation from its exporter: pass on the wrapped one's.
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner = inner
        """The wrapped exporter."""
        self._health = health

    def export(self, metrics_data: t.Any, timeout_millis: float = 10_000, **kwargs: t.Any) -> MetricExportResult:
        """Export through the wrapped exporter; a raised exception is a ``FAILURE``."""
        result = MetricExportResult.FAILURE
        with self._health.watch("metrics") as outcome:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            outcome[0] = result == MetricExportResult.SUCCESS
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Flush the wrapped exporter."""
        return bool(self.inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: t.Any) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
