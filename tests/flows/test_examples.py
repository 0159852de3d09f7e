"""The flow examples run offline with no input and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("plan_act_flow.py", "answer: Done: 3 results for 'streamtap flows'; 42"),
        ("approval_flow.py", "is now resumed"),
        ("batch_flow.py", "24/24"),
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
