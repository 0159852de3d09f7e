"""A real OTLP receiver on loopback, for tests: gRPC and HTTP, decoded with ``opentelemetry-proto``.

Jaeger speaks OTLP; this receiver speaks the same wire protocol, so a test can
export exactly as it would to Jaeger and inspect what arrived::

    with OtlpReceiver() as receiver:
        export = streamtap_otlp.configure(endpoint=receiver.grpc_endpoint, protocol="grpc")
        my_agent("hi")
        export.force_flush()
        spans = receiver.wait_for_spans(3)

gRPC: a ``grpcio`` server implementing ``TraceService`` and ``MetricsService``.
HTTP: a small threaded HTTP server accepting ``POST /v1/traces`` and
``POST /v1/metrics`` with ``application/x-protobuf`` bodies (gzip or deflate
encoded or not). Both listen on ``127.0.0.1`` on a free port.

``OtlpReceiver(metrics=False)`` is a backend that takes traces but not
metrics: gRPC answers ``UNIMPLEMENTED`` for the metrics service, HTTP ``404``
for ``/v1/metrics`` (what Jaeger does).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import http.server as http_server
import threading
import time
import typing as t
import zlib

__all__ = ["OtlpReceiver", "ReceivedSpan", "attributes_of", "value_of"]


def value_of(any_value: t.Any) -> t.Any:
    """The Python value of an OTLP ``AnyValue`` (lists for arrays, dicts for key-value lists)."""
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    v = getattr(any_value, which)
    if which == "array_value":
        return [value_of(x) for x in v.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.values}
    return v


def attributes_of(key_values: t.Iterable[t.Any]) -> dict[str, t.Any]:
    """OTLP ``KeyValue`` list -> dict of Python values."""
    return {kv.key: value_of(kv.value) for kv in key_values}


class ReceivedSpan(t.NamedTuple):
    """One span as decoded from the wire, with its resource and scope."""

    span: t.Any
    """The ``opentelemetry.proto.trace.v1.trace_pb2.Span`` message."""
    resource: dict[str, t.Any]
    scope_name: str
    protocol: str
    """``grpc`` or ``http``: how it arrived."""

    @property
    def name(self) -> str:
        """The span name."""
        return str(self.span.name)

    @property
    def span_id(self) -> str:
        """Hex span id."""
        return bytes(self.span.span_id).hex()

    @property
    def parent_span_id(self) -> str | None:
        """Hex parent span id, or ``None`` for a root span."""
        return bytes(self.span.parent_span_id).hex() or None

    @property
    def trace_id(self) -> str:
        """Hex trace id."""
        return bytes(self.span.trace_id).hex()

    @property
    def attributes(self) -> dict[str, t.Any]:
        """The span's attributes as Python values."""
        return attributes_of(self.span.attributes)

    def attribute_types(self) -> dict[str, str]:
        """Attribute key -> the OTLP value field that carried it (``string_value``, ``int_value``...)."""
        return {kv.key: str(kv.value.WhichOneof("value")) for kv in self.span.attributes}


class OtlpReceiver:
    """Collects OTLP trace and metric export requests over gRPC and HTTP (see the module docstring).

    Args:
        grpc: start the gRPC server.
        http: start the HTTP server.
        status: HTTP status the HTTP server answers with (use ``503`` to test a failing collector).
        metrics: serve the metrics endpoints; ``False`` answers them ``UNIMPLEMENTED`` (gRPC) and ``404`` (HTTP).
    """

    def __init__(self, *, grpc: bool = True, http: bool = True, status: int = 200, metrics: bool = True) -> None:
        self.trace_requests: list[tuple[str, t.Any]] = []
        """(protocol, ``ExportTraceServiceRequest``) in arrival order."""
        self.metric_requests: list[tuple[str, t.Any]] = []
        """(protocol, ``ExportMetricsServiceRequest``) in arrival order."""
        self.http_headers: list[dict[str, str]] = []
        self.grpc_metadata: list[dict[str, str]] = []
        self._cond = threading.Condition()
        self._want_grpc = grpc
        self._want_http = http
        self._status = status
        self._metrics = metrics
        self.refused_metric_requests = 0
        """How many metric export requests were answered ``UNIMPLEMENTED`` / ``404`` (``metrics=False``)."""
        self._grpc_server: t.Any = None
        self._http_server: http_server.ThreadingHTTPServer | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    # -- endpoints -------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the gRPC server."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` of the HTTP server (the exporter appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.http_port}"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start the servers; returns ``self``."""
        if self._want_grpc:
            self._start_grpc()
        if self._want_http:
            self._start_http()
        return self

    def stop(self) -> None:
        """Stop the servers."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, store: list[tuple[str, t.Any]], protocol: str, request: t.Any) -> None:
        with self._cond:
            store.append((protocol, request))
            self._cond.notify_all()

    def _refused(self) -> None:
        with self._cond:
            self.refused_metric_requests += 1
            self._cond.notify_all()

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: t.Any, context: t.Any) -> t.Any:  # noqa: N802 - gRPC method name
                receiver.grpc_metadata.append(dict(context.invocation_metadata()))
                receiver._record(receiver.trace_requests, "grpc", request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: t.Any, context: t.Any) -> t.Any:  # noqa: N802
                receiver._record(receiver.metric_requests, "grpc", request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]  # grpc generated code has no annotations
        if self._metrics:
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
        else:
            server.add_generic_rpc_handlers([_RefuseMetrics(self)])
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server

    def _start_http(self) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        receiver = self
        routes: dict[str, tuple[t.Any, t.Any, list[tuple[str, t.Any]]]] = {
            "/v1/traces": (
                trace_service_pb2.ExportTraceServiceRequest,
                trace_service_pb2.ExportTraceServiceResponse,
                receiver.trace_requests,
            ),
        }
        if self._metrics:
            routes["/v1/metrics"] = (
                metrics_service_pb2.ExportMetricsServiceRequest,
                metrics_service_pb2.ExportMetricsServiceResponse,
                receiver.metric_requests,
            )

        class Handler(http_server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                route = routes.get(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if route is None:
                    if self.path == "/v1/metrics":
                        receiver._refused()
                    self._reply(404, b"")
                    return
                receiver.http_headers.append({k.lower(): v for k, v in self.headers.items()})
                if receiver._status != 200:
                    self._reply(receiver._status, b"")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request_type, response_type, store = route
                request = request_type()
                request.ParseFromString(body)
                receiver._record(store, "http", request)
                self._reply(200, response_type().SerializeToString())

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.http_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="otlp-http-receiver", daemon=True).start()
        self._http_server = server

    # -- what arrived ----------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, flattened, in arrival order."""
        with self._cond:
            requests = list(self.trace_requests)
        out: list[ReceivedSpan] = []
        for protocol, request in requests:
            for rs in request.resource_spans:
                resource = attributes_of(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append(ReceivedSpan(span, resource, ss.scope.name, protocol))  # noqa: PERF401 - a loop reads more plainly here
        return out

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans arrived; return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds (the message says how many).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                spans = self.spans()
                if len(spans) >= count:
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"expected at least {count} spans at the OTLP receiver, got {len(spans)} in {timeout} s"
                    raise TimeoutError(msg)
                self._cond.wait(left)

    def metrics(self) -> dict[str, list[t.Any]]:
        """Metric name -> the ``Metric`` messages received with that name."""
        with self._cond:
            requests = list(self.metric_requests)
        out: dict[str, list[t.Any]] = {}
        for _, request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        out.setdefault(metric.name, []).append(metric)
        return out

    def wait_for_metrics(self, *names: str, timeout: float = 10.0) -> dict[str, list[t.Any]]:
        """Wait until every named metric arrived at least once; return :meth:`metrics`.

        Raises:
            TimeoutError: some did not arrive in time (the message names them).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self.metrics()
                missing = [n for n in names if n not in got]
                if not missing:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"metrics {missing} did not arrive at the OTLP receiver in {timeout} s (got {sorted(got)})"
                    raise TimeoutError(msg)
                self._cond.wait(left)


class _RefuseMetrics:
    """A gRPC handler lookup that counts calls to the metrics service and answers them UNIMPLEMENTED."""

    _METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def service(self, details: t.Any) -> t.Any:
        if details.method == self._METHOD:
            self._receiver._refused()
        return None  # no handler: grpc answers UNIMPLEMENTED
