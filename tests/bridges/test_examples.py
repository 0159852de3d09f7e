"""The bridge examples run offline with no input and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "needs", "expected"),
    [
        (
            "langchain_bridge.py",
            "langchain_core",
            ["trace: requested get_weather {'city': 'Paris'}", "ret: It is 22 degrees Celsius in Paris, a fine day."],
        ),
        (
            "openai_agents_bridge.py",
            "agents",
            [
                "step: llm fake-model",
                "trace: result get_current_weather",
                "ret: The current weather in Tokyo, Japan is 10 degrees Celsius",
            ],
        ),
        (
            "llama_index_bridge.py",
            "llama_index.core",
            ["step: tool VectorIndexRetriever.retrieve", "step: llm MockLLM.stream_complete", "ret: text text"],
        ),
    ],
)
def test_bridge_example_runs(script: str, needs: str, expected: list[str]) -> None:
    pytest.importorskip(needs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=90, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for line in expected:
        assert line in proc.stdout
