"""Exporters are found through the streamtap.exporters entry points and turned on from the environment."""

from __future__ import annotations

import logging

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
    import streamtap.exporting as exporting

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setattr(exporting, "find_exporter", lambda name: None)  # as if streamtap-otlp were not installed
    with caplog.at_level(logging.WARNING, logger="streamtap.exporting"), traces_from_env() as export:
        Hello()("x")
    assert export is None and "pip install streamtap-otlp" in caplog.text
