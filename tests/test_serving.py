"""``streamtap serve TARGET`` without Redis: the module named by TARGET served in the web process, as today."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import typing as t
from contextlib import contextmanager

import httpx
import pytest

from streamtap.exceptions import UsageError
from streamtap.serving import load_target
from streamtap.testing import FakeOpenAI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(model: FakeOpenAI, *options: str) -> t.Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``streamtap serve streamtap.demo:worker_agent`` on a free port; yields its URL once it answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env["OPENAI_BASE_URL"] = model.base_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "serve", "streamtap.demo:worker_agent", "--port", str(port), *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "streamtap serve did not start"
                time.sleep(0.05)  # the process is starting: its port is all there is to wait on
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


BODY = {
    "id": "s1",
    "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
}


def test_serve_target_without_redis_answers_chats() -> None:
    with FakeOpenAI() as model, _serving(model) as (url, _):
        r = httpx.post(url + "/api/chat", json=BODY, timeout=20)
        parts = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
        assert "Paris" in "".join(p["delta"] for p in parts if p["type"] == "text-delta")
        assert parts[-1]["type"] == "finish"


def test_serve_takes_the_security_and_shutdown_options_of_the_web_guide() -> None:
    """--allowed-origin lets that origin's pages in (others still 403); SIGTERM shuts down gracefully (exit 0)."""
    options = ("--allowed-origin", "https://app.example.com", "--shutdown-grace", "2", "--detach-timeout", "30")
    with FakeOpenAI() as model, _serving(model, *options) as (url, proc):
        evil = httpx.post(url + "/api/chat", json=BODY, headers={"Origin": "http://evil.example"}, timeout=20)
        assert evil.status_code == 403
        ok = httpx.post(url + "/api/chat", json=BODY, headers={"Origin": "https://app.example.com"}, timeout=20)
        assert ok.status_code == 200 and '"type":"finish"' in ok.text.replace(" ", "")
        proc.send_signal(15)
        assert proc.wait(15) == 0


def test_serve_refuses_what_it_cannot_do(capsys: pytest.CaptureFixture[str]) -> None:
    from streamtap.serving import serve_main

    assert serve_main(["streamtap.demo:worker_agent", "--workers", "2"]) == 2
    assert "--workers 2 needs --redis URL" in capsys.readouterr().err
    assert serve_main(["streamtap.demo:worker_agent", "--run-in-process"]) == 2
    assert "--run-in-process only applies with --redis" in capsys.readouterr().err
    assert serve_main(["streamtap.demo:worker_agent", "--host", "0.0.0.0"]) == 2
    assert "without an access token" in capsys.readouterr().err
    with pytest.raises(UsageError, match="package.module:attr"):
        load_target("streamtap.demo")
    with pytest.raises(UsageError, match="is str, not a ModuleBase"):
        load_target("streamtap.demo:__name__")
