"""Exporters are found through the streamtap.exporters entry points and turned on from the environment."""

from __future__ import annotations

import logging
import os

import pytest

from streamtap import ModuleBase
from streamtap.exporting import find_exporter, traces_from_env

streamtap_otlp = pytest.importorskip("streamtap_otlp")
from streamtap_otlp.testing import OtlpReceiver  # noqa: E402


class Hello(ModuleBase):
    def forward(self, name: str):
        yield f"hello {name}"


def test_installed_exporters_are_found_by_name():
    """The exporter distributions register their modules; unknown names give None."""
    assert find_exporter("otlp") is streamtap_otlp
    assert find_exporter("console").__name__ == "streamtap_console"
    assert find_exporter("no-such-exporter") is None


def test_nothing_happens_without_an_endpoint(monkeypatch):
    """With no OTEL_EXPORTER_OTLP_ENDPOINT, the block runs with nothing set up."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with traces_from_env() as export:
        assert Hello()("x") == "hello x"
    assert export is None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_reach_the_collector_over_both_protocols(monkeypatch, protocol):
    """With the endpoint set, the block's runs are exported over OTLP and flushed at its end."""
    receiver = OtlpReceiver().start()
    try:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        with traces_from_env(service_name="exporting-test", set_global=False) as export:
            assert export is not None
            Hello()("otlp")
        (span,) = receiver.wait_for_spans(1)
        assert span.name == "Hello" and span.resource["service.name"] == "exporting-test"
    finally:
        receiver.stop()


def test_missing_exporter_is_explained(monkeypatch, caplog):
    """An endpoint with no OTLP exporter installed logs what to install instead of failing."""
    from streamtap import exporting

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setattr(exporting, "find_exporter", lambda name: None)  # as if streamtap-otlp were not installed
    with caplog.at_level(logging.WARNING, logger="streamtap.exporting"), traces_from_env() as export:
        Hello()("x")
    assert export is None and "pip install streamtap-otlp" in caplog.text


# -- the standard variables, against the real receiver -------------------------------------------

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture
def no_otel_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def point_at(env, receiver, protocol, **variables):
    """Set the OTLP endpoint and protocol variables to ``receiver``, plus ``variables`` (name=value)."""
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint)
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    for name, value in variables.items():
        env.setenv(name, value)


class Chat(ModuleBase):
    kind = "llm"
    model = "gpt-test"

    def forward(self, prompt):
        yield "ok"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sdk_disabled_wins_over_an_endpoint(no_otel_env, protocol):
    """OTEL_SDK_DISABLED=true: nothing is set up, no request reaches the collector."""
    with OtlpReceiver() as receiver:
        point_at(no_otel_env, receiver, protocol, OTEL_SDK_DISABLED="true")
        with traces_from_env(set_global=False) as export:
            assert Chat()("x") == "ok"
        assert export is None
        assert receiver.trace_requests == [] and receiver.metric_requests == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_none_against_a_backend_without_metrics(no_otel_env, protocol, caplog):
    """OTEL_METRICS_EXPORTER=none against a backend that answers metrics UNIMPLEMENTED / 404: traces arrive,
    no metric request is made, nothing is logged."""
    with OtlpReceiver(metrics=False) as receiver:
        point_at(no_otel_env, receiver, protocol, OTEL_METRICS_EXPORTER="none")
        with caplog.at_level(logging.WARNING), traces_from_env(set_global=False) as export:
            assert export is not None and export.meter_provider is None
            Chat()("x")
        assert [s.name for s in receiver.wait_for_spans(1)] == ["chat gpt-test"]
        assert receiver.refused_metric_requests == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_traces_none_exports_no_span(no_otel_env, protocol):
    """OTEL_TRACES_EXPORTER=none: the block runs, not one span is sent (metrics still are)."""
    with OtlpReceiver() as receiver:
        point_at(no_otel_env, receiver, protocol, OTEL_TRACES_EXPORTER="none")
        with traces_from_env(set_global=False):
            Chat()("x")
        receiver.wait_for_metrics("gen_ai.client.operation.duration")
        assert receiver.spans() == []


def test_console_needs_no_endpoint(no_otel_env, capsys):
    """OTEL_TRACES_EXPORTER=console alone turns export on: spans are printed to stdout."""
    no_otel_env.setenv("OTEL_TRACES_EXPORTER", "console")
    no_otel_env.setenv("OTEL_METRICS_EXPORTER", "none")
    with traces_from_env(set_global=False) as export:
        assert export is not None
        Hello()("console")
    assert '"name": "Hello"' in capsys.readouterr().out
