"""The page, record/replay and live-spans examples run offline and show what they are about."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "STREAMTAP_RECORD"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=90, env=env, check=False)


def test_record_replay_example_finds_no_divergence_then_the_changed_tool(tmp_path):
    out = tmp_path / "weather.jsonl"
    proc = _run(str(EXAMPLES / "record_replay.py"), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "replayed offline: no divergence" in proc.stdout
    assert (
        "with a changed tool: Event" in proc.stdout
        and "get_current_weather" in proc.stdout
        and "output differs" in proc.stdout
    )
    assert out.exists() and f"streamtap replay {out}" in proc.stdout


def test_live_spans_example_shows_the_run_while_it_goes_on():
    pytest.importorskip("streamtap_otlp")
    proc = _run(str(EXAMPLES / "live_spans.py"))
    assert proc.returncode == 0, proc.stderr
    assert "while running: invoke_agent weather_agent (pending)" in proc.stdout
    assert "after the end: 5 spans, one per run, and 5 markers inside them" in proc.stdout


def test_page_example_prints_the_read_only_link():
    pytest.importorskip("starlette")
    proc = _run(str(EXAMPLES / "page_features.py"))
    assert proc.returncode == 0, proc.stderr
    assert "answer: The current weather in Tokyo" in proc.stdout and "/?run=" in proc.stdout
