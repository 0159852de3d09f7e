"""Export streamtap runs as OpenTelemetry traces and metrics over OTLP (gRPC or HTTP): Jaeger, Tempo, a collector.

One call::

    import streamtap_otlp
    streamtap_otlp.configure(endpoint="http://localhost:4317", service_name="my-agent")
    my_agent("What's the weather in Paris?")       # one trace in Jaeger

or, in examples and ``streamtap demo``, only when the standard variable is set::

    streamtap_otlp.export_from_env()    # None when OTEL_EXPORTER_OTLP_ENDPOINT is unset

:func:`configure` builds a :class:`~opentelemetry.sdk.trace.TracerProvider`
with a :class:`~opentelemetry.sdk.trace.export.BatchSpanProcessor` and the OTLP
span exporter, a :class:`~opentelemetry.sdk.metrics.MeterProvider` with a
periodic OTLP metric reader, makes them global when no provider is set yet
(so that instrumented libraries such as the httpx2 client under ``openai``
export to the same place), subscribes :class:`streamtap.tracing.TracingSubscriber`
and registers a flush at interpreter exit.

Settings come from the arguments, else from the standard environment variables:

======================================  ===========================================================
``OTEL_EXPORTER_OTLP_ENDPOINT``         base URL; HTTP appends ``/v1/traces`` and ``/v1/metrics``
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``  full traces URL, used as it is (wins over the above)
``OTEL_EXPORTER_OTLP_PROTOCOL``         ``grpc`` or ``http/protobuf`` (``..._TRACES_PROTOCOL`` wins)
``OTEL_EXPORTER_OTLP_HEADERS``          ``key=value,...`` sent with every export (e.g. an API key)
``OTEL_EXPORTER_OTLP_TIMEOUT``          seconds one export may take (default 10)
``OTEL_SERVICE_NAME``                   ``service.name`` (default ``streamtap``)
``OTEL_RESOURCE_ATTRIBUTES``            ``key=value,...`` resource attributes
``OTEL_TRACES_SAMPLER`` / ``_ARG``      the sampler (default ``parentbased_always_on``)
``OTEL_TRACES_EXPORTER``                ``otlp`` (default), ``console``, both (``otlp,console``) or ``none``
``OTEL_METRICS_EXPORTER``               the same for the GenAI metrics; ``none`` for a backend without metrics
``OTEL_SDK_DISABLED``                   ``true``: nothing is set up, nothing is exported
======================================  ===========================================================

With no protocol given, an endpoint on port 4317 means gRPC, anything else
``http/protobuf`` (the OpenTelemetry default).

**What a dead or slow collector costs** (the documented bound): nothing on the
run. Spans are handed to an in-memory queue (2,048 spans; the oldest are
dropped when it is full) and exported by a background thread; a run never
waits for the network. One export attempt, retries included, gives up after
``timeout`` seconds (default 10). :meth:`OtlpExport.shutdown` and
:meth:`OtlpExport.force_flush` -- and so interpreter exit -- wait at most
``shutdown_timeout`` seconds (default: ``timeout``), whatever the collector does.

**Failures are logged once and counted.** A collector that is down or hangs,
or a backend that takes traces but not metrics (Jaeger answers metrics with
``UNIMPLEMENTED`` / ``404``), is logged once per outage on the ``streamtap_otlp``
logger, with what to do; every failed export is counted in
:attr:`OtlpExport.health` (:class:`streamtap_otlp.health.ExportHealth`). The
SDK exporters' own per-export log lines are held back.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import typing as t
import urllib.parse

__all__ = [
    "EXPORTER_NAMES",
    "OtlpExport",
    "OtlpProtocol",
    "configure",
    "export_from_env",
    "exporter_names",
    "sdk_disabled",
    "wanted_from_env",
]

__version__ = "0.1.0"

OtlpProtocol = t.Literal["grpc", "http/protobuf"]
"""The OTLP transports: gRPC or protobuf over HTTP."""

_PROTOCOLS = {"grpc": "grpc", "http/protobuf": "http/protobuf", "http": "http/protobuf"}

EXPORTER_NAMES = frozenset({"otlp", "console", "none"})
"""The values ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` may list."""


def sdk_disabled() -> bool:
    """Whether ``OTEL_SDK_DISABLED`` is ``true``: then nothing is set up."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def exporter_names(signal: t.Literal["traces", "metrics"], given: str | None = None) -> frozenset[str]:
    """The exporters asked for ``signal``: ``given``, else ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``.

    A comma-separated list of ``otlp`` (the default), ``console`` and ``none``;
    ``none`` anywhere means no exporter (an empty set).

    Raises:
        UsageError: a name this distribution does not export with (the message names it and the variable).
    """
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    raw = given if given is not None else os.environ.get(variable, "")
    names = {n.strip().lower() for n in raw.split(",") if n.strip()} or {"otlp"}
    unknown = names - EXPORTER_NAMES
    if unknown:
        source = f"{signal}_exporter=" if given is not None else f"{variable}="
        msg = (
            f"{source}{raw!r} names {', '.join(repr(n) for n in sorted(unknown))}, which streamtap-otlp cannot export "
            "with; use 'otlp', 'console', 'none', or a comma-separated list of them."
        )
        raise _usage_error(msg)
    return frozenset() if "none" in names else frozenset(names)


def _endpoint_from_env() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def _usage_error(msg: str) -> Exception:
    from streamtap.exceptions import UsageError

    return UsageError(msg)


def _missing(feature: str) -> Exception:
    from streamtap.exceptions import MissingDependencyError

    return MissingDependencyError(feature, "otel")


def _resolve_protocol(protocol: str | None, endpoint: str | None) -> OtlpProtocol:
    chosen = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    if not chosen:
        port = urllib.parse.urlsplit(endpoint if endpoint and "//" in endpoint else f"//{endpoint or ''}").port
        return "grpc" if port == 4317 else "http/protobuf"
    value = _PROTOCOLS.get(chosen.strip().lower())
    if value is None:
        msg = (
            f"OTLP protocol {chosen!r} is not supported; use 'grpc' (port 4317) or 'http/protobuf' (port 4318). "
            "Set it with protocol= or OTEL_EXPORTER_OTLP_PROTOCOL."
        )
        raise _usage_error(msg)
    return t.cast(OtlpProtocol, value)


def _bounded(fn: t.Callable[[], t.Any], seconds: float) -> bool:
    """Run ``fn`` in a daemon thread and wait at most ``seconds``; ``True`` when it finished in time."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    threading.Thread(target=run, name="streamtap-otlp-flush", daemon=True).start()
    return done.wait(max(0.0, seconds))


class OtlpExport:
    """What :func:`configure` set up: the providers, the tracing subscriber, and how to flush them.

    Use it as a context manager to shut everything down on exit (otherwise it
    happens at interpreter exit).
    """

    def __init__(
        self,
        tracer_provider: t.Any,
        meter_provider: t.Any,
        tracing: t.Any,
        *,
        endpoint: str | None,
        protocol: OtlpProtocol,
        shutdown_timeout: float,
        health: t.Any = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        """The :class:`opentelemetry.sdk.trace.TracerProvider` spans go through (``None`` when nothing is exported)."""
        self.meter_provider = meter_provider
        """The :class:`opentelemetry.sdk.metrics.MeterProvider`, or ``None`` without metrics."""
        self.tracing = tracing
        """The subscribed :class:`streamtap.tracing.TracingSubscriber` (``None`` when nothing is exported)."""
        self.health = health
        """The :class:`~streamtap_otlp.health.ExportHealth`: exports counted per signal (``None``: nothing exported)."""
        self.endpoint = endpoint
        """The endpoint given or found in the environment (``None``: the exporter's default)."""
        self.protocol = protocol
        """``grpc`` or ``http/protobuf``."""
        self.shutdown_timeout = shutdown_timeout
        """The most :meth:`shutdown` and :meth:`force_flush` wait, in seconds."""
        self._closed = False
        if tracer_provider is not None:
            atexit.register(self.shutdown)

    @property
    def enabled(self) -> bool:
        """Whether anything is exported (``False`` under ``OTEL_SDK_DISABLED=true`` or with every exporter ``none``)."""
        return self.tracer_provider is not None

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export what is queued now; wait at most ``timeout`` (default ``shutdown_timeout``) seconds.

        Returns:
            ``True`` when everything was handed to the collector in time and no export failed meanwhile.
        """
        if self._closed:
            return False
        if self.tracer_provider is None:
            return True  # nothing is exported, so nothing is waiting
        limit = self.shutdown_timeout if timeout is None else timeout
        result: list[bool] = []
        failed_before = self.health.total_failures() if self.health is not None else 0

        def flush() -> None:
            ok = bool(self.tracer_provider.force_flush(int(limit * 1000)))
            if self.meter_provider is not None:
                ok = bool(self.meter_provider.force_flush(int(limit * 1000))) and ok
            result.append(ok)

        done = _bounded(flush, limit) and bool(result and result[0])
        return done and (self.health is None or self.health.total_failures() == failed_before)

    def shutdown(self) -> None:
        """Stop tracing runs, export what is queued and close the exporters, within ``shutdown_timeout``.

        Idempotent; called at interpreter exit.
        """
        if self._closed:
            return
        self._closed = True
        if self.tracer_provider is None:
            return
        atexit.unregister(self.shutdown)
        self.tracing.unsubscribe()

        def close() -> None:
            try:
                self.tracer_provider.shutdown()
                if self.meter_provider is not None:
                    self.meter_provider.shutdown(timeout_millis=self.shutdown_timeout * 1000)
            finally:
                # Only once the exporters are done (an export into a hanging collector may outlive
                # the bound): until then their retry and shutdown lines are still held back.
                if self.health is not None:
                    self.health.close()

        _bounded(close, self.shutdown_timeout)

    def __enter__(self) -> OtlpExport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self.enabled else "disabled"
        return f"<OtlpExport {self.protocol} {self.endpoint or '(default endpoint)'} {state}>"


def configure(
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    service_name: str | None = None,
    resource_attributes: t.Mapping[str, t.Any] | None = None,
    headers: t.Mapping[str, str] | None = None,
    timeout: float | None = None,
    shutdown_timeout: float | None = None,
    metrics: bool = True,
    metric_interval: float = 60.0,
    capture_content: bool | None = None,
    redact: t.Iterable[str | t.Any] = (),
    set_global: bool = True,
    traces_exporter: str | None = None,
    metrics_exporter: str | None = None,
    live_spans: bool | None = None,
) -> OtlpExport:
    """Export every streamtap run over OTLP; returns the :class:`OtlpExport`.

    Args:
        endpoint: collector URL, e.g. ``http://localhost:4317`` (gRPC) or
            ``http://localhost:4318`` (HTTP; ``/v1/traces`` is appended).
            Default: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
            ``OTEL_EXPORTER_OTLP_ENDPOINT``, else the exporter's default
            (``localhost:4317`` or ``localhost:4318``).
        protocol: ``grpc`` or ``http/protobuf``. Default: ``OTEL_EXPORTER_OTLP_PROTOCOL``,
            else gRPC for port 4317 and HTTP otherwise.
        service_name: ``service.name`` of the resource. Default: ``OTEL_SERVICE_NAME``,
            ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else ``streamtap``.
        resource_attributes: more resource attributes (they win over ``OTEL_RESOURCE_ATTRIBUTES``).
        headers: sent with every export (default: ``OTEL_EXPORTER_OTLP_HEADERS``).
        timeout: seconds one export may take, retries included (default:
            ``OTEL_EXPORTER_OTLP_TIMEOUT``, else 10).
        shutdown_timeout: the most :meth:`OtlpExport.shutdown` and
            :meth:`~OtlpExport.force_flush` wait, in seconds (default: ``timeout``).
        metrics: also export the GenAI client metrics (``False`` wins over ``OTEL_METRICS_EXPORTER``).
        metric_interval: seconds between metric exports.
        capture_content: record message content (see :class:`streamtap.tracing.TracingSubscriber`).
        redact: extra redaction patterns.
        set_global: make the providers global when none is set yet.
        traces_exporter: ``otlp``, ``console``, ``otlp,console`` or ``none``
            (default: ``OTEL_TRACES_EXPORTER``, else ``otlp``). With ``none`` no
            span is exported (the metrics still are, from unsampled spans).
        metrics_exporter: the same for metrics (default: ``OTEL_METRICS_EXPORTER``, else ``otlp``).
        live_spans: export a pending marker at each run's start, so backends show runs in
            progress and keep the start of a run whose process died (default:
            ``STREAMTAP_LIVE_SPANS``; see :class:`streamtap.tracing.TracingSubscriber`).
            Markers go through the same batch processor: ``OTEL_BSP_SCHEDULE_DELAY``
            (milliseconds, default 5000) bounds how late they arrive.

    With ``OTEL_SDK_DISABLED=true``, or no exporter for either signal, nothing
    is set up and the returned export is disabled (:attr:`OtlpExport.enabled`
    is ``False``; flushing and shutting it down do nothing).

    Raises:
        UsageError: an unknown protocol or exporter name, or a non-positive timeout.
        MissingDependencyError: the OpenTelemetry SDK or the OTLP exporter is not installed.
    """
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    except ImportError as exc:  # pragma: no cover - installed with this distribution
        raise _missing("OTLP export") from exc

    from streamtap.tracing import TracingSubscriber

    from .health import ExportHealth, WatchedMetricExporter, WatchedSpanExporter

    for label, value in (
        ("timeout", timeout),
        ("shutdown_timeout", shutdown_timeout),
        ("metric_interval", metric_interval),
    ):
        if value is not None and not value > 0:
            msg = f"{label} must be a positive number of seconds, got {value!r}."
            raise _usage_error(msg)
    span_names = exporter_names("traces", traces_exporter)
    metric_names = exporter_names("metrics", metrics_exporter) if metrics else frozenset()
    env_endpoint = _endpoint_from_env()
    chosen = _resolve_protocol(protocol, endpoint or env_endpoint)
    export_timeout = timeout if timeout is not None else float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or 10)
    bound = shutdown_timeout if shutdown_timeout is not None else export_timeout
    where = endpoint or env_endpoint
    if sdk_disabled() or not (span_names or metric_names):
        return OtlpExport(None, None, None, endpoint=where, protocol=chosen, shutdown_timeout=bound)

    attrs: dict[str, t.Any] = dict(resource_attributes or {})
    resource = Resource.create(attrs)
    if service_name:
        resource = resource.merge(Resource({"service.name": service_name}))
    elif str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "streamtap"}))

    health = ExportHealth(lambda signal: f"to {where or '(the default endpoint)'} over {chosen}")
    span_exporters, metric_exporters = _exporters(chosen, endpoint, headers, export_timeout, span_names, metric_names)
    if span_names:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for exporter in span_exporters:
            tracer_provider.add_span_processor(BatchSpanProcessor(WatchedSpanExporter(exporter, health)))
    else:  # metrics only: spans are made unsampled (cheap, never exported) so that the metrics are recorded
        tracer_provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF, shutdown_on_exit=False)
    meter_provider = None
    if metric_exporters:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers = [
            PeriodicExportingMetricReader(
                WatchedMetricExporter(exporter, health),
                export_interval_millis=metric_interval * 1000,
                export_timeout_millis=export_timeout * 1000,
            )
            for exporter in metric_exporters
        ]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    if set_global:
        if span_names and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None and type(otel_metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
            otel_metrics.set_meter_provider(meter_provider)
    tracing = TracingSubscriber(
        tracer_provider, meter_provider, capture_content=capture_content, redact=redact, live_spans=live_spans
    ).subscribe()
    return OtlpExport(
        tracer_provider,
        meter_provider,
        tracing,
        endpoint=where,
        protocol=chosen,
        shutdown_timeout=bound,
        health=health,
    )


def _exporters(
    protocol: OtlpProtocol,
    endpoint: str | None,
    headers: t.Mapping[str, str] | None,
    timeout: float,
    span_names: frozenset[str],
    metric_names: frozenset[str],
) -> tuple[list[t.Any], list[t.Any]]:
    """The span and metric exporters named (``otlp`` over ``protocol``, ``console``)."""
    spans: list[t.Any] = []
    mets: list[t.Any] = []
    if "otlp" in span_names or "otlp" in metric_names:
        otlp_spans, otlp_metrics = _otlp_exporters(protocol, endpoint, headers, timeout)
        if "otlp" in span_names:
            spans.append(otlp_spans())
        if "otlp" in metric_names:
            mets.append(otlp_metrics())
    if "console" in span_names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        spans.append(ConsoleSpanExporter(out=sys.stdout))  # today's stdout, not the one at the SDK's import
    if "console" in metric_names:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        mets.append(ConsoleMetricExporter(out=sys.stdout))
    return spans, mets


def _otlp_exporters(
    protocol: OtlpProtocol, endpoint: str | None, headers: t.Mapping[str, str] | None, timeout: float
) -> tuple[t.Callable[[], t.Any], t.Callable[[], t.Any]]:
    """Makers of the OTLP span and metric exporters for ``protocol``."""
    hdrs = dict(headers) if headers else None
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise _missing("OTLP export over gRPC") from exc
        insecure = urllib.parse.urlsplit(endpoint).scheme != "https" if endpoint else None
        opts: dict[str, t.Any] = {"endpoint": endpoint, "insecure": insecure, "headers": hdrs, "timeout": timeout}
        return (lambda: OTLPSpanExporter(**opts)), (lambda: OTLPMetricExporter(**opts))
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
    except ImportError as exc:
        raise _missing("OTLP export over HTTP") from exc
    base = endpoint.rstrip("/") if endpoint else None

    def url(path: str) -> str | None:
        return f"{base}{path}" if base else None

    return (
        lambda: HttpSpanExporter(endpoint=url("/v1/traces"), headers=hdrs, timeout=timeout),
        lambda: HttpMetricExporter(endpoint=url("/v1/metrics"), headers=hdrs, timeout=timeout),
    )


def wanted_from_env() -> bool:
    """Whether the standard variables ask for any export.

    ``False`` under ``OTEL_SDK_DISABLED=true``; otherwise ``True`` when an
    OTLP endpoint is set and some signal's exporter is ``otlp``, or when
    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` lists ``console``.
    Without an endpoint, ``otlp`` alone (the default) asks for nothing: no
    export to a collector nobody configured.

    Raises:
        UsageError: an unknown exporter name in the variables.
    """
    if sdk_disabled():
        return False
    names = exporter_names("traces") | exporter_names("metrics")
    return "console" in names or ("otlp" in names and _endpoint_from_env() is not None)


def export_from_env(**kwargs: t.Any) -> OtlpExport | None:
    """:func:`configure` from the environment when the standard variables ask for an export (:func:`wanted_from_env`).

    Examples and ``streamtap demo`` call it, so that setting
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is all it takes to see their traces in
    Jaeger. ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` and
    ``OTEL_METRICS_EXPORTER`` are honoured. Keyword arguments go to :func:`configure`.

    Returns:
        The :class:`OtlpExport`, or ``None`` (and nothing is set up) when nothing is asked for.
    """
    if not wanted_from_env():
        return None
    export = configure(**kwargs)
    return export if export.enabled else None
