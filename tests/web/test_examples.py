"""The web examples run offline with no input and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_web_lifecycle_example_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "web_lifecycle.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "the first run: cancelled (RunCancelled: superseded by a new message)" in out
    assert "left unread for detach_timeout: cancelled (RunCancelled: client gone)" in out
    assert '{"type":"abort","reason":"shutdown"} then [DONE]' in out
