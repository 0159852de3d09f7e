"""The Gradio chat app, launched on a free port and driven by the real ``gradio_client`` (and Chromium once)."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import time
import typing as t

import pytest

pytest.importorskip("gradio")
pytest.importorskip("openai")

from gradio_client import Client

from streamtap import ModuleBase
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.integrations.gradio import chat_interface
from streamtap.testing import FakeOpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app() -> t.Iterator[tuple[FakeOpenAI, str]]:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with FakeOpenAI(token_delay=0.01, reasoning=True) as model:
        demo = chat_interface(weather_agent(base_url=model.base_url, asynchronous=True), title="streamtap weather")
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield model, f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture
def client(app: tuple[FakeOpenAI, str]) -> t.Iterator[Client]:
    c = Client(app[1], verbose=False)
    yield c
    c.close()


def thoughts(reply: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [m for m in reply if m.get("metadata")]


def answer(reply: list[dict[str, t.Any]]) -> str:
    return "".join(m["content"] for m in reply if not m.get("metadata"))


def test_streams_the_answer_with_tool_calls_and_reasoning_as_thoughts(client):
    job = client.submit(QUERY, True, True, api_name="/chat")
    updates = list(job)
    reply = job.outputs()[-1]
    assert len(updates) > 10  # streamed: many partial replies, not one
    partial = [answer(u) for u in updates if answer(u)]
    assert len(set(partial)) > 5 and partial[0] != partial[-1]
    assert "Tokyo is 10 degrees Celsius" in answer(reply) and "<tool_call>" not in answer(reply)
    titles = [m["metadata"]["title"] for m in thoughts(reply)]
    assert titles.count("Used get_current_weather") == 2 and "Thinking" in titles
    assert all(m["metadata"]["status"] == "done" and m["metadata"]["duration"] >= 0 for m in thoughts(reply))
    [tokyo] = [m for m in thoughts(reply) if "Tokyo" in m["content"] and m["metadata"]["title"].startswith("Used")]
    assert tokyo["content"].startswith("Arguments: {") and '"temperature": "10"' in tokyo["content"]
    # While the first tool call streamed, its thought was pending.
    assert any(m["metadata"]["status"] == "pending" for u in updates for m in thoughts(u))


def test_streaming_off_sends_the_reply_once_and_verbose_off_only_the_answer(client):
    job = client.submit(QUERY, False, False, api_name="/chat")
    updates = list(job)
    assert len(updates) == 1
    [reply] = updates
    assert thoughts(reply) == [] and "Paris, it is 22 degrees Celsius" in answer(reply)


def test_stop_cancels_the_run_and_closes_the_model_stream(app, client):
    model, _ = app
    story = " ".join(f"word{i}" for i in range(400))
    t0 = time.monotonic()
    job = client.submit(story, True, False, api_name="/chat")
    deadline = time.monotonic() + 15
    while not any(answer(u) for u in job.outputs()):  # wait for the answer to stream (a condition, not a sleep)
        assert time.monotonic() < deadline, "no streamed text"
        time.sleep(0.02)
    job.cancel()  # what the Stop button does
    record = model.wait_for_closed(timeout=10, after=t0)
    assert record.closed_early and record.chunks_sent < 400


def test_bad_arguments_are_clear_errors():
    from streamtap import UsageError

    with pytest.raises(UsageError, match="needs a streamtap ModuleBase"):
        chat_interface(lambda x: x)  # type: ignore[arg-type]
    with FakeOpenAI() as model, pytest.raises(UsageError, match="sets \\['additional_inputs'\\] itself"):
        chat_interface(weather_agent(base_url=model.base_url), additional_inputs=[])


@pytest.mark.skipif(not pathlib.Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test.sh installs it)")
def test_page_in_chromium_shows_the_thoughts_and_the_answer(app):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    _, url = app
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            box = page.get_by_role("textbox").first
            box.fill(QUERY)
            box.press("Enter")
            page.get_by_text("Used get_current_weather").first.wait_for(timeout=20000)
            page.get_by_text("22 degrees Celsius").first.wait_for(timeout=20000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "gradio-chat.png"))
            assert page.get_by_text("Used get_current_weather").count() >= 2
            assert "<tool_call>" not in page.content()
        finally:
            browser.close()


class _Failing(ModuleBase):
    """Streams a little, then fails."""

    kind = "agent"
    blocking = False

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        yield "partial "
        yield "answer"
        raise RuntimeError("the model went away with sk-secret123456789012345")


def test_a_failed_run_keeps_the_partial_answer_and_says_what_failed():
    port = free_port()
    demo = chat_interface(_Failing())
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        try:
            reply = c.predict("x", True, True, api_name="/chat")
        finally:
            c.close()
    finally:
        demo.close()
    [text, error] = reply
    assert text["content"] == "partial answer"
    assert (
        error["content"].startswith("Error: The run failed (RuntimeError) in run ")
        and "sk-secret" not in error["content"]
    )


def test_gradio_example_runs():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "gradio_chat.py")],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[Used get_current_weather]" in proc.stdout and "answer: The current weather in Tokyo" in proc.stdout
