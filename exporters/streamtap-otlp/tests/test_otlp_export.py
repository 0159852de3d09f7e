"""OTLP export over gRPC and HTTP into a real receiver on loopback, checked from the decoded protobuf."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import typing as t

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

import streamtap
import streamtap_otlp
from streamtap import ModuleBase
from streamtap.events import Usage
from streamtap.testing import capture_events
from streamtap_otlp.testing import OtlpReceiver, ReceivedSpan

SECRET = "sk-test-ABCDEFGHIJKLMNOPQRSTUV0123"
PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(scope="module")
def receiver() -> t.Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def fresh(receiver: OtlpReceiver) -> OtlpReceiver:
    with receiver._cond:
        receiver.trace_requests.clear()
        receiver.metric_requests.clear()
        receiver.http_headers.clear()
        receiver.grpc_metadata.clear()
    return receiver


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def endpoint_of(receiver: OtlpReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


# -- the application under test ---------------------------------------------------


class Chat(ModuleBase):
    kind = "llm"
    model = "gpt-test"

    def forward(self, prompt: t.Any) -> t.Iterator[str]:
        ctx = streamtap.current()
        assert ctx is not None
        ctx.annotate(provider="openai", response_model="gpt-test-1", finish_reasons=["stop"], server_port=4318,
                     note=f"Authorization: Bearer {SECRET}")  # fmt: skip
        ctx.add_usage(Usage(12, 5))
        yield "It is "
        yield "sunny."


class Lookup(ModuleBase):
    kind = "node"

    def forward(self, city: str) -> str:
        return f"{city}: 21C"


class Weather(ModuleBase):
    kind = "tool"
    name = "get_weather"

    def forward(self, city: str) -> str:
        return Lookup()(city)  # a module inside a tool


class Fan(ModuleBase):
    """Calls the tool from threads and from tasks."""

    kind = "flow"
    name = "fan_out"

    def forward(self, cities: list[str]) -> list[str]:
        with streamtap.Executor(2) as pool:
            threaded = list(pool.map(Weather(), cities))

        async def tasks() -> list[str]:
            return list(await asyncio.gather(*(Weather().acall(c) for c in cities)))

        return threaded + asyncio.run(tasks())


class Failing(ModuleBase):
    def forward(self, x: str) -> str:
        raise ValueError(f"upstream said api_key={SECRET}")


class Agent(ModuleBase):
    kind = "agent"
    name = "weather_agent"

    def forward(self, question: str) -> str:
        ctx = streamtap.current()
        assert ctx is not None
        ctx.tool("call_9", "get_weather", "requested", arguments={"city": "Paris", "api_key": SECRET})
        result = Weather()("Paris")
        ctx.tool("call_9", "get_weather", "result", result=result)
        Fan()(["Oslo", "Rome"])
        try:
            Failing()("x")
        except ValueError:
            pass
        return str(Chat()(f"{question} {result}"))


def run_app() -> dict[str, str | None]:
    """Run the agent; return its run tree (run id -> parent run id)."""
    with capture_events(kinds=["start"]) as starts:
        assert Agent()("Weather in Paris?") == "It is sunny."
    return {e.run.run_id: e.run.parent_id for e in starts}


def span_tree(spans: list[ReceivedSpan]) -> dict[str, str | None]:
    run_of = {s.span_id: s.attributes["streamtap.run.id"] for s in spans}
    return {s.attributes["streamtap.run.id"]: run_of.get(s.parent_span_id or "") for s in spans}


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_export_run_tree(fresh: OtlpReceiver, protocol: str) -> None:
    """One trace whose span tree is the run tree, with GenAI names, kinds, typed attributes, statuses, service.name."""
    export = streamtap_otlp.configure(
        endpoint_of(fresh, protocol), protocol=protocol, service_name="weather-svc", set_global=False
    )
    try:
        runs = run_app()
        assert export.force_flush(10)
    finally:
        export.shutdown()
    spans = fresh.wait_for_spans(len(runs))
    assert len(spans) == len(runs) == 14
    assert {s.protocol for s in spans} == {"grpc" if protocol == "grpc" else "http"}
    assert len({s.trace_id for s in spans}) == 1
    assert span_tree(spans) == runs
    assert {s.resource["service.name"] for s in spans} == {"weather-svc"}
    assert {s.scope_name for s in spans} == {"streamtap"}

    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert sorted((n, len(v)) for n, v in by_name.items()) == [
        ("Failing", 1),
        ("Lookup", 5),
        ("chat gpt-test", 1),
        ("execute_tool get_weather", 5),
        ("invoke_agent weather_agent", 1),
        ("invoke_workflow fan_out", 1),
    ]
    chat = by_name["chat gpt-test"][0]
    assert chat.span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert by_name["execute_tool get_weather"][0].span.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
    a = chat.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-test"
    assert a["gen_ai.response.model"] == "gpt-test-1"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 5)
    types = chat.attribute_types()
    assert types["gen_ai.usage.input_tokens"] == "int_value"
    assert types["server.port"] == "int_value"
    assert types["gen_ai.response.finish_reasons"] == "array_value"
    assert types["gen_ai.response.time_to_first_chunk"] == "double_value"
    assert types["gen_ai.request.stream"] == "bool_value"
    tool_spans = by_name["execute_tool get_weather"]
    assert [s.attributes.get("gen_ai.tool.call.id") for s in tool_spans].count("call_9") == 1
    assert all(s.attributes["gen_ai.tool.name"] == "get_weather" for s in tool_spans)

    failing = by_name["Failing"][0]
    assert failing.span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert failing.attributes["error.type"] == "ValueError"
    ok = [s for s in spans if s.name != "Failing"]
    assert all(s.span.status.code == trace_pb2.Status.STATUS_CODE_UNSET for s in ok)

    # no content without opt-in, and secrets nowhere on the wire
    wire = repr([s.span for s in spans])
    assert "Paris" not in wire and "sunny" not in wire
    assert SECRET not in wire and "[REDACTED]" in wire


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_exported(fresh: OtlpReceiver, protocol: str) -> None:
    """The GenAI client histograms arrive with their units and the token type attribute."""
    export = streamtap_otlp.configure(endpoint_of(fresh, protocol), protocol=protocol, set_global=False)
    try:
        Chat()("hi")
        assert export.force_flush(10)
    finally:
        export.shutdown()
    got = fresh.wait_for_metrics(
        "gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"
    )
    usage = got["gen_ai.client.token.usage"][0]
    assert usage.unit == "{token}"
    kinds = sorted(
        kv.value.string_value
        for p in usage.histogram.data_points
        for kv in p.attributes
        if kv.key == "gen_ai.token.type"
    )
    assert kinds == ["input", "output"]
    assert got["gen_ai.client.operation.duration"][0].unit == "s"


def test_content_opt_in_from_env(fresh: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, messages arrive, secrets still redacted."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    export = streamtap_otlp.configure(fresh.http_endpoint, set_global=False)
    try:
        run_app()
        export.force_flush(10)
    finally:
        export.shutdown()
    spans = fresh.wait_for_spans(14)
    chat = next(s for s in spans if s.name == "chat gpt-test")
    messages = json.loads(chat.attributes["gen_ai.output.messages"])
    assert messages == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It is sunny."}], "finish_reason": "stop"}
    ]
    agent = next(s for s in spans if s.name == "invoke_agent weather_agent")
    requested = next(e for e in agent.span.events if e.name == "streamtap.tool.requested")
    args = {kv.key: kv.value.string_value for kv in requested.attributes}["gen_ai.tool.call.arguments"]
    assert json.loads(args) == {"city": "Paris", "api_key": "[REDACTED]"}
    assert SECRET not in repr([s.span for s in spans])


def test_configuration_from_standard_env(fresh: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """export_from_env reads the endpoint, protocol, service name, resource attributes and headers from OTEL_* variables."""
    assert streamtap_otlp.export_from_env() is None  # nothing set: nothing configured
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fresh.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ai")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    export = streamtap_otlp.export_from_env(set_global=False)
    assert export is not None and export.protocol == "grpc"
    try:
        Lookup()("x")
        export.force_flush(10)
    finally:
        export.shutdown()
    (span,) = fresh.wait_for_spans(1)
    assert span.protocol == "grpc"
    assert span.resource["service.name"] == "from-env"
    assert span.resource["deployment.environment"] == "test" and span.resource["team"] == "ai"
    assert fresh.grpc_metadata[-1]["x-tenant"] == "acme"


def test_http_headers_and_default_service_name(fresh: OtlpReceiver) -> None:
    """Headers given as arguments reach the collector; service.name defaults to 'streamtap'."""
    export = streamtap_otlp.configure(
        fresh.http_endpoint, headers={"authorization": "Basic dXNlcg=="}, set_global=False
    )
    assert export.protocol == "http/protobuf"
    try:
        Lookup()("x")
        export.force_flush(10)
    finally:
        export.shutdown()
    (span,) = fresh.wait_for_spans(1)
    assert span.resource["service.name"] == "streamtap"
    assert fresh.http_headers[0]["authorization"] == "Basic dXNlcg=="
    assert fresh.http_headers[0]["content-type"] == "application/x-protobuf"


def test_port_4317_means_grpc() -> None:
    """Without a protocol, an endpoint on 4317 is gRPC and anything else HTTP; unknown protocols are refused."""
    assert streamtap_otlp._resolve_protocol(None, "http://localhost:4317") == "grpc"
    assert streamtap_otlp._resolve_protocol(None, "http://localhost:4318") == "http/protobuf"
    assert streamtap_otlp._resolve_protocol(None, None) == "http/protobuf"
    with pytest.raises(streamtap.UsageError, match="'http/json'"):
        streamtap_otlp.configure("http://127.0.0.1:1", protocol="http/json")
    with pytest.raises(streamtap.UsageError, match="timeout"):
        streamtap_otlp.configure("http://127.0.0.1:1", timeout=0)


def test_entry_point_registered() -> None:
    """The distribution is discoverable in the streamtap.exporters entry-point group."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="streamtap.exporters")}
    assert eps["otlp"].load() is streamtap_otlp  # the module: find_exporter("otlp").export_from_env(...)


class _Blackhole:
    """A TCP server that accepts connections and never answers: the worst kind of dead collector."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_collector_never_slows_the_run(protocol: str) -> None:
    """A collector that never answers: runs are as fast as ever, shutdown returns within its documented bound."""
    hole = _Blackhole()
    try:
        export = streamtap_otlp.configure(
            f"http://127.0.0.1:{hole.port}", protocol=protocol, timeout=1.0, shutdown_timeout=1.5, set_global=False
        )
        t0 = time.monotonic()
        for _ in range(200):
            Lookup()("x")
        # force a first export into the black hole, then keep running while it hangs
        flushed = export.force_flush(0.3)
        for _ in range(200):
            Lookup()("x")
        run_time = time.monotonic() - t0 - 0.3
        t1 = time.monotonic()
        export.shutdown()
        shutdown_time = time.monotonic() - t1
    finally:
        hole.close()
    assert flushed is False
    # Had a run waited for the network even once, 400 runs would take at least the 1 s export timeout.
    assert run_time < 0.5, f"400 runs took {run_time:.3f} s with a dead collector"
    assert shutdown_time < 1.5 + 0.5, f"shutdown took {shutdown_time:.3f} s, documented bound 1.5 s"


def test_collector_errors_never_break_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector answering 503 and a closed port: runs succeed; force_flush reports the failure in time."""
    with OtlpReceiver(grpc=False, status=503) as failing:
        export = streamtap_otlp.configure(failing.http_endpoint, timeout=1.0, set_global=False)
        try:
            assert Agent()("x") == "It is sunny."
            t0 = time.monotonic()
            export.force_flush(2)
            assert time.monotonic() - t0 < 2.5
        finally:
            export.shutdown()
        assert failing.http_headers  # the export did reach the failing collector
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    export = streamtap_otlp.configure(f"http://127.0.0.1:{closed_port}", protocol="grpc", timeout=1.0, set_global=False)
    try:
        assert Agent()("x") == "It is sunny."
    finally:
        t0 = time.monotonic()
        export.shutdown()
        assert time.monotonic() - t0 < 1.5


def test_traceparent_continues_the_trace_in_another_process(fresh: OtlpReceiver) -> None:
    """A run in a child process, given the parent run's traceparent, exports a span parented by the parent's span.

    The child never calls shutdown(): its span is flushed at interpreter exit.
    """
    from streamtap import propagation

    child_code = textwrap.dedent(
        """
        import os, sys
        import streamtap_otlp
        from streamtap import ModuleBase, propagation

        class Remote(ModuleBase):
            def forward(self, x):
                return x

        export = streamtap_otlp.configure(sys.argv[1], protocol="grpc", service_name="worker", set_global=False)
        with propagation.continue_trace({"traceparent": os.environ["TRACEPARENT"]}) as remote:
            assert remote.is_remote
            Remote()("x")
        # no shutdown() here: the span must still leave at interpreter exit
        """
    )

    class Producer(ModuleBase):
        def forward(self, x: str) -> str:
            headers = propagation.inject()
            env = {**os.environ, "TRACEPARENT": headers["traceparent"]}
            subprocess.run([sys.executable, "-c", child_code, fresh.grpc_endpoint], env=env, check=True, timeout=60)
            return headers["traceparent"]

    export = streamtap_otlp.configure(fresh.grpc_endpoint, protocol="grpc", service_name="producer", set_global=False)
    try:
        traceparent = Producer()("x")
        export.force_flush(10)
    finally:
        export.shutdown()
    spans = {s.name: s for s in fresh.wait_for_spans(2)}
    producer, remote = spans["Producer"], spans["Remote"]
    assert traceparent.split("-")[1:3] == [producer.trace_id, producer.span_id]
    assert remote.trace_id == producer.trace_id
    assert remote.parent_span_id == producer.span_id
    assert (producer.resource["service.name"], remote.resource["service.name"]) == ("producer", "worker")


# -- standard variables ------------------------------------------------------------------------

SDK_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk")


def _records(caplog: pytest.LogCaptureFixture) -> tuple[list[logging.LogRecord], list[logging.LogRecord]]:
    """(warnings and errors of streamtap_otlp, warnings and errors of the OpenTelemetry SDK and its exporters)."""
    ours = [r for r in caplog.records if r.name == "streamtap_otlp" and r.levelno >= logging.WARNING]
    sdk = [r for r in caplog.records if r.name.startswith(SDK_LOGGERS) and r.levelno >= logging.WARNING]
    return ours, sdk


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_backend_without_metrics_is_logged_once_and_counted(
    protocol: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend that takes traces but answers metrics UNIMPLEMENTED (gRPC) / 404 (HTTP), as Jaeger does:
    every run's spans arrive, the metrics failure is one warning saying what to do, and every failure is counted."""
    caplog.set_level(logging.INFO)
    with OtlpReceiver(metrics=False) as backend:
        export = streamtap_otlp.configure(endpoint_of(backend, protocol), protocol=protocol, set_global=False)
        try:
            for _ in range(3):  # three short runs, each flushed as a script's exit would
                Chat()("hi")
                assert export.force_flush(10) is False  # the metrics did not go through
        finally:
            export.shutdown()
        assert len(backend.wait_for_spans(3)) == 3 and backend.refused_metric_requests >= 3
    ours, sdk = _records(caplog)
    assert sdk == [], [r.getMessage() for r in sdk]
    # One warning for the metrics outage. (Under heavy load another test's exporter, still shutting down, may
    # log a line of its own to the same logger: only this backend's metrics warnings count here.)
    mine = [
        r
        for r in ours
        if endpoint_of(backend, protocol).split("//")[-1] in r.getMessage()
        and r.getMessage().startswith("OTLP metrics")
    ]
    assert len(mine) == 1, ([r.getMessage() for r in ours], export.health.snapshot())
    assert "OTEL_METRICS_EXPORTER=none" in mine[0].getMessage()
    assert export.health.failures("metrics") == backend.refused_metric_requests
    assert export.health.failures("traces") == 0 and export.health.successes("traces") >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_exporter_none(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_METRICS_EXPORTER=none: spans are exported, no metric request is ever sent."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    with OtlpReceiver(metrics=False) as backend:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint_of(backend, protocol))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        export = streamtap_otlp.export_from_env(set_global=False)
        assert export is not None and export.meter_provider is None
        try:
            Chat()("hi")
            assert export.force_flush(10) is True
        finally:
            export.shutdown()
        assert [s.name for s in backend.wait_for_spans(1)] == ["chat gpt-test"]
        assert backend.refused_metric_requests == 0 and backend.metric_requests == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_traces_exporter_none_keeps_metrics(
    fresh: OtlpReceiver, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_EXPORTER=none: no span leaves the process; the GenAI metrics still do."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint_of(fresh, protocol))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    export = streamtap_otlp.export_from_env(set_global=False)
    assert export is not None
    try:
        Chat()("hi")
        assert export.force_flush(10) is True
    finally:
        export.shutdown()
    assert "gen_ai.client.operation.duration" in fresh.wait_for_metrics("gen_ai.client.operation.duration")
    assert fresh.spans() == []


def test_console_exporter_needs_no_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OTEL_TRACES_EXPORTER=console writes the spans to stdout, with no endpoint configured."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    export = streamtap_otlp.export_from_env(set_global=False)
    assert export is not None
    try:
        Lookup()("x")
        assert export.force_flush(10) is True
    finally:
        export.shutdown()
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "Lookup" and printed["attributes"]["streamtap.run.kind"] == "node"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sdk_disabled_sets_up_nothing(fresh: OtlpReceiver, protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true: export_from_env gives None and configure() a disabled export; nothing is sent."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint_of(fresh, protocol))
    assert streamtap_otlp.export_from_env(set_global=False) is None
    export = streamtap_otlp.configure(endpoint_of(fresh, protocol), protocol=protocol, set_global=False)
    assert not export.enabled and export.tracing is None and "disabled" in repr(export)
    with capture_events(kinds=["start"]) as starts:
        Chat()("hi")
    assert len(starts) == 1
    assert export.force_flush(1) is True
    export.shutdown()
    assert fresh.trace_requests == [] and fresh.metric_requests == []


@pytest.mark.parametrize("variable", ["OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"])
def test_unknown_exporter_name_is_explained(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """An exporter this distribution does not have is refused with the variable, the value and the choices."""
    monkeypatch.setenv(variable, "otlp,jaeger")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    with pytest.raises(
        streamtap.UsageError, match=rf"{variable}='otlp,jaeger' names 'jaeger'.*'otlp', 'console', 'none'"
    ):
        streamtap_otlp.export_from_env(set_global=False)


# -- a collector that is down or hangs ----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fault", ["down", "hanging"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_collector_is_logged_once_and_counted(
    protocol: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed port (down) or a port that accepts and never answers (hanging), gRPC and HTTP: runs are not
    slowed or broken, the failure is one warning, every failed export is counted, shutdown keeps its bound."""
    caplog.set_level(logging.INFO)
    hole = _Blackhole() if fault == "hanging" else None
    port = hole.port if hole is not None else _closed_port()
    timeout = 0.5
    try:
        export = streamtap_otlp.configure(
            f"http://127.0.0.1:{port}", protocol=protocol, timeout=timeout, shutdown_timeout=1.0, set_global=False
        )
        slowest = 0.0
        for batch in range(3):
            assert Agent()("x") == "It is sunny."  # not broken: a whole agent run, with its tools and model call
            for _ in range(200):
                t0 = time.monotonic()
                Lookup()("x")
                slowest = max(slowest, time.monotonic() - t0)
            assert export.force_flush(timeout * 6) is False
            assert export.health.wait_for_failures("traces", batch + 1, timeout=timeout * 6)
        t1 = time.monotonic()
        export.shutdown()
        shutdown_time = time.monotonic() - t1
    finally:
        if hole is not None:
            hole.close()
    # had one of the 600 runs waited for the network, it would have taken the 0.5 s export timeout
    assert slowest < timeout, f"a run took {slowest:.3f} s with the collector {fault}"
    assert shutdown_time < 1.0 + 0.5, f"shutdown took {shutdown_time:.3f} s, documented bound 1.0 s"
    ours, sdk = _records(caplog)
    assert sdk == [], [r.getMessage() for r in sdk]
    where = f"export to http://127.0.0.1:{port} over {protocol} failed"
    # one line per signal for the whole outage (the agent's model call also records metrics)
    assert sorted(r.getMessage().split(" ")[1] for r in ours) == ["metrics", "traces"], [r.getMessage() for r in ours]
    assert all(where in r.getMessage() for r in ours)
    assert export.health.failures("traces") >= 3 and export.health.successes("traces") == 0


def test_recovery_is_logged_and_the_next_outage_again(caplog: pytest.LogCaptureFixture) -> None:
    """Failures are logged once per outage: the export working again is an INFO line, a new outage one warning."""
    caplog.set_level(logging.INFO)
    with OtlpReceiver(grpc=False, status=503) as failing:
        export = streamtap_otlp.configure(failing.http_endpoint, timeout=0.5, metrics=False, set_global=False)
        try:
            for status in (503, 503, 200, 200, 503, 503):
                failing._status = status
                Lookup()("x")
                export.force_flush(5)
        finally:
            export.shutdown()
    lines = [
        (r.levelname, r.getMessage().split(" failed")[0].split(" works")[0])
        for r in caplog.records
        if r.name == "streamtap_otlp"
    ]
    where = f"OTLP traces export to {failing.http_endpoint} over http/protobuf"
    assert lines == [("WARNING", where), ("INFO", where), ("WARNING", where)]
    assert export.health.snapshot()["traces"] == {"ok": 2, "failed": 4}


def test_raising_exporter_is_a_counted_failure(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter that raises (a bug, a broken dependency) is a FAILURE, counted and logged once, never an exception
    in the SDK's export thread. (A raising exporter cannot be made from a real collector: this one is a stand-in.)"""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from streamtap_otlp.health import ExportHealth, WatchedSpanExporter

    class Broken(SpanExporter):
        def export(self, spans: t.Any) -> SpanExportResult:
            raise RuntimeError("encoder blew up")

    health = ExportHealth(lambda signal: "to test")
    watched = WatchedSpanExporter(Broken(), health)
    try:
        with caplog.at_level(logging.WARNING, logger="streamtap_otlp"):
            results = [watched.export([]) for _ in range(3)]
    finally:
        health.close()
    assert results == [SpanExportResult.FAILURE] * 3
    assert health.snapshot()["traces"] == {"ok": 0, "failed": 3}
    assert [r.getMessage().split(". Runs")[0] for r in caplog.records] == [
        "OTLP traces export to test failed: RuntimeError: encoder blew up"
    ]
