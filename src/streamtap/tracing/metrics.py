"""The GenAI client metrics of ``llm`` runs: token usage, operation duration, time to first chunk."""

from __future__ import annotations

import typing as t

from opentelemetry import metrics

from .options import SCHEMA_URL, SCOPE

if t.TYPE_CHECKING:
    from ..events import End

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "GenAIMetrics"]

TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""Bucket advisory of ``gen_ai.client.token.usage``."""

DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""Bucket advisory of ``gen_ai.client.operation.duration`` and ``.time_to_first_chunk``."""

_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "server.address", "server.port")


class GenAIMetrics:
    """The three histograms of the conventions, created on the first record.

    Args:
        meter_provider: where they go; ``None``: the global provider at the first record.
        version: the instrumentation scope's version.
    """

    __slots__ = ("_instruments", "_plain_cache", "_provider", "_version")

    def __init__(self, meter_provider: metrics.MeterProvider | None, version: str) -> None:
        self._provider = meter_provider
        self._version = version
        self._instruments: tuple[t.Any, t.Any, t.Any] | None = None
        self._plain_cache: dict[tuple[str | None, str | None], dict[str, t.Any]] = {}

    def _histograms(self) -> tuple[t.Any, t.Any, t.Any]:
        if self._instruments is None:
            provider = self._provider or metrics.get_meter_provider()
            meter = provider.get_meter(SCOPE, self._version, schema_url=SCHEMA_URL)
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

    def record(
        self, ev: End, attrs: t.Mapping[str, t.Any], model: str | None, provider: str | None, ttfc: float | None
    ) -> None:
        """Record an ended ``llm`` run (``attrs``: its span's End attributes; model and provider as read at start)."""
        instruments = self._instruments
        tokens, duration, first_chunk = instruments if instruments is not None else self._histograms()
        # Only annotations put operation, provider, model or server attributes in the End's attributes;
        # without any, the metric attributes depend on the module's model and provider alone.
        common = _common(attrs, model, provider) if ev.attributes else self._plain(model, provider)
        timings = ev.timings
        if timings is not None:
            if ev.status == "error":
                duration.record(timings.duration, {**common, "error.type": attrs.get("error.type", "_OTHER")})
            else:
                duration.record(timings.duration, common)
        if ttfc is not None:
            first_chunk.record(ttfc, common)
        usage = ev.usage
        if usage is not None:
            tokens.record(usage.input_tokens, {**common, "gen_ai.token.type": "input"})
            tokens.record(usage.output_tokens, {**common, "gen_ai.token.type": "output"})

    def _plain(self, model: str | None, provider: str | None) -> dict[str, t.Any]:
        """The metric attributes of a run without annotations: one (never changed) dict per model and provider."""
        key = (model, provider)
        common = self._plain_cache.get(key)
        if common is None:
            common = _common({}, model, provider)
            if len(self._plain_cache) >= 64:
                self._plain_cache.clear()
            self._plain_cache[key] = common
        return common


def _common(attrs: t.Mapping[str, t.Any], model: str | None, provider: str | None) -> dict[str, t.Any]:
    get = attrs.get
    common: dict[str, t.Any] = {"gen_ai.operation.name": get("gen_ai.operation.name", "chat")}
    provider = get("gen_ai.provider.name") or provider
    if provider:
        common["gen_ai.provider.name"] = provider
    for key in _KEYS:
        value = get(key)
        if value is not None:
            common[key] = value
    if model and "gen_ai.request.model" not in common:
        common["gen_ai.request.model"] = model
    return common
