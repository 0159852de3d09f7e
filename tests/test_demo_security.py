"""``streamtap demo``'s security options: the token is never printed; hosts and origins are configurable."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx


def _demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_", "STREAMTAP_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "demo", "--port", "0", "--delay", "0", "--exit-after", "20", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_startup_line_masks_the_token_and_the_options_reach_the_app():
    secret = "s3cret-T0KEN-value-42"
    proc = _demo("--token", secret, "--allowed-host", "chat.lan", "--allowed-origin", "https://app.example.com")
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "open http" in line:
                break
        printed = "".join(seen)
        assert secret not in printed, printed
        assert "#token=<your token>" in printed
        base = printed.split("open ", 1)[1].split()[0].split("#", 1)[0]
        port = base.rsplit(":", 1)[1].strip("/")
        auth = {"authorization": f"Bearer {secret}"}
        with httpx.Client(timeout=20) as client:
            assert (
                client.get(base + "api/chat/x/stream", headers={**auth, "host": f"chat.lan:{port}"}).status_code == 204
            )
            assert client.get(base + "api/chat/x/stream", headers={**auth, "host": "evil.example"}).status_code == 400
            r = client.post(base + "api/chat/x/stop", headers={**auth, "origin": "https://app.example.com"})
            assert r.status_code == 200
            r = client.post(base + "api/chat/x/stop", headers={**auth, "origin": "https://evil.example"})
            assert r.status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None and proc.stderr is not None
        rest = proc.stdout.read() + proc.stderr.read()
        assert secret not in rest
