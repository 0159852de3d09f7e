"""Turn on the installed exporters from the environment, found through the ``streamtap.exporters`` entry points.

Exporters are separate distributions (``exporters/streamtap-otlp`` and
others, or a third party's) that register a module in the
``streamtap.exporters`` entry-point group. The core never imports them; this
module finds them by name when asked::

    from streamtap.exporting import traces_from_env

    with traces_from_env(service_name="my-app"):
        agent("What's the weather in Paris?")   # exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set

Every example and ``streamtap demo`` start this way, so setting
``OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317`` is all it takes to see
their traces in Jaeger; ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``
and ``OTEL_SDK_DISABLED`` are honoured.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import types
import typing as t

__all__ = ["ENTRY_POINT_GROUP", "find_exporter", "traces_from_env"]

log = logging.getLogger("streamtap.exporting")

ENTRY_POINT_GROUP = "streamtap.exporters"
"""The entry-point group exporter distributions register their module in."""


def find_exporter(name: str) -> types.ModuleType | None:
    """Load the exporter module registered as ``name`` in :data:`ENTRY_POINT_GROUP`, or ``None`` if none is installed."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            loaded = ep.load()
            return loaded if isinstance(loaded, types.ModuleType) else importlib.import_module(ep.module)
    return None


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _asked_for() -> str | None:
    """What in the environment asks for an export (for the message when no exporter is installed), or ``None``."""
    if _sdk_disabled():
        return None
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        if "console" in os.environ.get(name, "").lower():
            return f"{name}={os.environ[name]}"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if os.environ.get(name):
            return f"{name} is set"
    return None


@contextlib.contextmanager
def traces_from_env(**kwargs: t.Any) -> t.Iterator[t.Any]:
    """Export traces and metrics for the duration of the block when the standard ``OTEL_*`` variables ask for it.

    Uses the ``otlp`` exporter (the ``streamtap-otlp`` distribution); its
    ``export_from_env(**kwargs)`` reads the standard variables:

    * ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set: export over OTLP;
    * ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: ``otlp`` (default),
      ``console`` (no endpoint needed), a list of both, or ``none``;
    * ``OTEL_SDK_DISABLED=true``: nothing is set up, whatever else is set.

    Spans are flushed when the block ends. With nothing asked for nothing is
    set up; when an export is asked for but no exporter is installed, a
    warning says what to install.

    Yields:
        The exporter's handle, or ``None``.
    """
    asked = _asked_for()
    if asked is None:
        yield None
        return
    module = find_exporter("otlp")
    if module is None:
        log.warning(
            "%s but no OTLP exporter is installed, so no trace is exported. "
            "Install one with: pip install streamtap-otlp (in a checkout: pip install -e exporters/streamtap-otlp)",
            asked,
        )
        yield None
        return
    export = module.export_from_env(**kwargs)
    try:
        yield export
    finally:
        if export is not None:
            export.shutdown()
