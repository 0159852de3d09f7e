"""The names the tracing subscriber's spans are pinned to, and its options read from the environment."""

from __future__ import annotations

import logging
import os

__all__ = [
    "CONTENT_ENV",
    "LIVE_SPANS_ENV",
    "PENDING_ATTRIBUTE",
    "SCHEMA_URL",
    "SCOPE",
    "SEMCONV_VERSION",
    "capture_content_from_env",
    "live_spans_from_env",
]

log = logging.getLogger("streamtap.tracing")

SEMCONV_VERSION = "1.41.1"
"""The OpenTelemetry semantic conventions release the names follow."""

SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
"""The schema URL of the tracer and the meter (that release's)."""

SCOPE = "streamtap"
"""The instrumentation scope name of every span and metric."""

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The OpenTelemetry environment variable that opts in to message content."""

_CONTENT_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})

LIVE_SPANS_ENV = "STREAMTAP_LIVE_SPANS"
"""The environment variable that turns live spans (pending markers at each run's start) on: ``true``."""

PENDING_ATTRIBUTE = "streamtap.pending"
"""The attribute (``True``) that marks a pending marker span; real spans never carry it."""


def capture_content_from_env() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for content on spans."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON


def live_spans_from_env() -> bool:
    """Whether ``STREAMTAP_LIVE_SPANS`` asks for pending markers at each run's start."""
    value = os.environ.get(LIVE_SPANS_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    log.warning("%s=%r is not true or false; live spans stay off", LIVE_SPANS_ENV, value)
    return False
