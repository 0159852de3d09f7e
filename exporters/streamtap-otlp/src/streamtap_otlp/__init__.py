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
"""

from __future__ import annotations

import atexit
import os
import threading
import typing as t
import urllib.parse

__all__ = ["OtlpExport", "OtlpProtocol", "configure", "export_from_env"]

__version__ = "0.1.0"

OtlpProtocol = t.Literal["grpc", "http/protobuf"]
"""The OTLP transports: gRPC or protobuf over HTTP."""

_PROTOCOLS = {"grpc": "grpc", "http/protobuf": "http/protobuf", "http": "http/protobuf"}


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
    ) -> None:
        self.tracer_provider = tracer_provider
        """The :class:`opentelemetry.sdk.trace.TracerProvider` spans go through."""
        self.meter_provider = meter_provider
        """The :class:`opentelemetry.sdk.metrics.MeterProvider`, or ``None`` without metrics."""
        self.tracing = tracing
        """The subscribed :class:`streamtap.tracing.TracingSubscriber`."""
        self.endpoint = endpoint
        """The endpoint given or found in the environment (``None``: the exporter's default)."""
        self.protocol = protocol
        """``grpc`` or ``http/protobuf``."""
        self.shutdown_timeout = shutdown_timeout
        """The most :meth:`shutdown` and :meth:`force_flush` wait, in seconds."""
        self._closed = False
        atexit.register(self.shutdown)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export what is queued now; wait at most ``timeout`` (default ``shutdown_timeout``) seconds.

        Returns:
            ``True`` when everything was handed to the collector in time.
        """
        if self._closed:
            return False
        limit = self.shutdown_timeout if timeout is None else timeout
        result: list[bool] = []

        def flush() -> None:
            ok = bool(self.tracer_provider.force_flush(int(limit * 1000)))
            if self.meter_provider is not None:
                ok = bool(self.meter_provider.force_flush(int(limit * 1000))) and ok
            result.append(ok)

        return _bounded(flush, limit) and bool(result and result[0])

    def shutdown(self) -> None:
        """Stop tracing runs, export what is queued and close the exporters, within ``shutdown_timeout``.

        Idempotent; called at interpreter exit.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        self.tracing.unsubscribe()

        def close() -> None:
            self.tracer_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=self.shutdown_timeout * 1000)

        _bounded(close, self.shutdown_timeout)

    def __enter__(self) -> OtlpExport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
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
        metrics: also export the GenAI client metrics.
        metric_interval: seconds between metric exports.
        capture_content: record message content (see :class:`streamtap.tracing.TracingSubscriber`).
        redact: extra redaction patterns.
        set_global: make the providers global when none is set yet.

    Raises:
        UsageError: an unknown protocol or a non-positive timeout.
        MissingDependencyError: the OpenTelemetry SDK or the OTLP exporter is not installed.
    """
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - installed with this distribution
        raise _missing("OTLP export") from exc

    from streamtap.tracing import TracingSubscriber

    for label, value in (("timeout", timeout), ("shutdown_timeout", shutdown_timeout), ("metric_interval", metric_interval)):
        if value is not None and not value > 0:
            msg = f"{label} must be a positive number of seconds, got {value!r}."
            raise _usage_error(msg)
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    chosen = _resolve_protocol(protocol, endpoint or env_endpoint)
    export_timeout = timeout if timeout is not None else float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or 10)
    bound = shutdown_timeout if shutdown_timeout is not None else export_timeout

    attrs: dict[str, t.Any] = dict(resource_attributes or {})
    resource = Resource.create(attrs)
    if service_name:
        resource = resource.merge(Resource({"service.name": service_name}))
    elif str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "streamtap"}))

    span_exporter, metric_exporter = _exporters(chosen, endpoint, headers, export_timeout, metrics)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = None
    if metric_exporter is not None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(
            metric_exporter,
            export_interval_millis=metric_interval * 1000,
            export_timeout_millis=export_timeout * 1000,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    if set_global:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None and type(otel_metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
            otel_metrics.set_meter_provider(meter_provider)
    tracing = TracingSubscriber(
        tracer_provider, meter_provider, capture_content=capture_content, redact=redact
    ).subscribe()
    return OtlpExport(
        tracer_provider,
        meter_provider,
        tracing,
        endpoint=endpoint or env_endpoint,
        protocol=chosen,
        shutdown_timeout=bound,
    )


def _exporters(
    protocol: OtlpProtocol,
    endpoint: str | None,
    headers: t.Mapping[str, str] | None,
    timeout: float,
    metrics: bool,
) -> tuple[t.Any, t.Any]:
    hdrs = dict(headers) if headers else None
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise _missing("OTLP export over gRPC") from exc
        insecure = None
        if endpoint:
            insecure = urllib.parse.urlsplit(endpoint).scheme != "https"
        spans = OTLPSpanExporter(endpoint=endpoint, insecure=insecure, headers=hdrs, timeout=timeout)
        mets = OTLPMetricExporter(endpoint=endpoint, insecure=insecure, headers=hdrs, timeout=timeout) if metrics else None
        return spans, mets
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
    except ImportError as exc:
        raise _missing("OTLP export over HTTP") from exc
    base = endpoint.rstrip("/") if endpoint else None
    http_spans = HttpSpanExporter(endpoint=f"{base}/v1/traces" if base else None, headers=hdrs, timeout=timeout)
    http_metrics = (
        HttpMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=hdrs, timeout=timeout)
        if metrics
        else None
    )
    return http_spans, http_metrics


def export_from_env(**kwargs: t.Any) -> OtlpExport | None:
    """:func:`configure` from the environment when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set.

    Examples and ``streamtap demo`` call it, so that setting the variable is
    all it takes to see their traces in Jaeger. Keyword arguments go to
    :func:`configure`.

    Returns:
        The :class:`OtlpExport`, or ``None`` (and nothing is set up) when no endpoint is set.
    """
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    return configure(**kwargs)
