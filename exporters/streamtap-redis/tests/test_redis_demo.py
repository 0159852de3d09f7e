"""``streamtap demo --redis URL``: a web process and a worker process, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from streamtap_redis.testing import RedisServer


def test_demo_on_redis_answers_through_a_worker_process(redis_server: RedisServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "demo", "--port", "0", "--delay", "0", "--exit-after", "25", "--redis", redis_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        url = None
        worker_line = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if "worker process" in line:
                worker_line = line
            if "open http" in line:
                url = line.split("open ", 1)[1].split()[0]
                break
        assert url is not None and "via Redis" in worker_line, proc.stderr.read() if proc.stderr else ""
        with httpx.Client(timeout=20) as client:
            body = {
                "id": "demo-r",
                "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
            }
            r = client.post(url + "api/chat", json=body)
        parts = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
        text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
        assert "Paris" in text and parts[-1]["type"] == "finish", parts[-3:]
    finally:
        proc.terminate()
        proc.wait(20)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
