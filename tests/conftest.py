"""Shared fixtures: every test starts and ends with an empty bus."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import typing as t

import pytest

from streamtap import bus


def _connected() -> list[str]:
    found = [f"{kind}: {sub!r}" for kind in bus.KINDS for sub in getattr(bus.registry, kind)]
    found += [f"{kind}: raw receiver" for kind, sig in bus.signals.items() if sig.receivers]
    return found


@pytest.fixture(autouse=True)
def _clean_bus() -> t.Iterator[None]:
    """Fail a test that leaves a subscriber connected (it would leak events into later tests)."""
    before = _connected()
    yield
    after = _connected()
    leaked = [x for x in after if x not in before]
    if leaked:
        for kind in bus.KINDS:
            for sub in getattr(bus.registry, kind):
                sub.unsubscribe()
        pytest.fail(f"test left subscribers connected: {leaked}")


def _run_example(name: str, **env_vars: str) -> str:
    """Run ``examples/<name>`` as a user would (offline: no OPENAI_* or OTEL_* variables but ``env_vars``); return its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env.update(env_vars)
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / name
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def run_example() -> t.Callable[..., str]:
    """``run_example(name, **env_vars)``: run an example in a subprocess, check it exits 0, return its stdout."""
    return _run_example


@pytest.fixture
def traced() -> t.Iterator[tuple[t.Any, t.Any]]:
    """A subscribed :class:`~streamtap.tracing.TracingSubscriber` and the in-memory exporter its spans end in."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamtap.tracing import TracingSubscriber

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TracingSubscriber(provider) as sub:
        yield sub, exporter
    provider.shutdown()


@pytest.fixture
def misbehaving() -> t.Iterator[t.Any]:
    """A misbehaving OpenAI-compatible server on loopback (``tests/llm/misbehaving.py``), stopped after the test.

    Each request picks its fault by model name (``"fault-cut-close"``) or the ``x-fault`` header:
    500, 429 with Retry-After, a 401 echoing the key, malformed chunk, cuts, no finish reason, hangs, huge delta.
    """
    from llm.misbehaving import Misbehaving

    with Misbehaving() as srv:
        yield srv
