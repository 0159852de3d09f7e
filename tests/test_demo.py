"""``streamtap demo``: the web page and the terminal mode, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

pytest.importorskip("openai")


def test_demo_terminal_prints_output_and_trace_lines(capsys):
    from streamtap.demo import main

    assert main(["--terminal", "--delay", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    output = "".join(line[len("output: ") :] for line in out if line.startswith("output: "))
    assert output == "The current weather in Tokyo is 10 degrees Celsius, and in Paris, it is 22 degrees Celsius."
    traces = [line for line in out if line.startswith("trace: ")]
    assert sum("tool get_current_weather requested" in t for t in traces) == 2
    assert traces[-1].startswith("trace: agent weather_agent ok")


def test_demo_serves_the_page_and_the_agent_then_exits():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "demo", "--port", "0", "--delay", "0", "--exit-after", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if "open http" in line:
                url = line.split("open ", 1)[1].split()[0]
                break
        assert url is not None and url.startswith("http://127.0.0.1:")
        with httpx.Client(timeout=20) as client:
            assert "streamtap demo" in client.get(url).text
            body = {
                "id": "demo1",
                "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
            }
            r = client.post(url + "api/chat", json=body)
        parts = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
        text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
        assert "Paris" in text and parts[-1]["type"] == "finish"
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_refuses_a_public_bind_without_token(capsys):
    from streamtap.demo import main

    assert main(["--host", "0.0.0.0", "--port", "0", "--exit-after", "0"]) == 2
    assert "without an access token" in capsys.readouterr().err


async def test_demo_conversations_share_one_model_client_no_descriptor_each():
    """50 conversations of the demo's app, left idle, hold no file descriptor each (one shared model client)."""
    import gc

    from streamtap.demo import agent_factory
    from streamtap.testing import FakeOpenAI
    from streamtap.web import create_app
    from streamtap.web.server import BackgroundServer

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def converse(client: httpx.AsyncClient, url: str, chat_id: str) -> None:
        body = {
            "id": chat_id,
            "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
        }
        r = await client.post(url + "/api/chat", json=body)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]") and '"type":"finish"' in r.text

    with FakeOpenAI(token_delay=0.0, reasoning=False) as model:
        app = create_app(agent_factory(model.base_url))
        with BackgroundServer(app) as srv:
            async with httpx.AsyncClient(timeout=20) as client:  # one keep-alive connection to the app
                await converse(client, srv.url, "warm-up")
                gc.collect()
                before = fds()
                for i in range(50):
                    await converse(client, srv.url, f"idle{i}")
                gc.collect()
                after = fds()
            assert len(app.state.chat.conversations) == 51
    assert after - before <= 2, f"{after - before} more descriptors after 50 conversations (before: {before})"
