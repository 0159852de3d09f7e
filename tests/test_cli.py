"""The streamtap command line dispatches to its sub-commands."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_the_commands():
    """`streamtap --help` names every sub-command."""
    out = subprocess.run([sys.executable, "-m", "streamtap.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "demo" in out.stdout and "fake-openai" in out.stdout


def test_unknown_command_is_a_clear_error():
    """An unknown sub-command exits non-zero and says which are valid."""
    out = subprocess.run([sys.executable, "-m", "streamtap.cli", "dmeo"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "invalid choice: 'dmeo'" in out.stderr
