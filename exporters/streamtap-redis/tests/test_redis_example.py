"""``examples/scale_out.py`` runs offline (its own redis-server, model server and worker) and exits 0."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "scale_out.py"


def test_scale_out_example_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_", "REDIS_URL"))}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "web A answered: The current weather in Paris is 22 degrees Celsius." in out
    assert "web B read the same answer: True" in out
    assert "stopped through web B: True, status cancelled" in out
