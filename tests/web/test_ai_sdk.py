"""Conformance: the app's real responses read by the real Vercel AI SDK (npm ``ai`` v6) in Node."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import typing as t

import httpx
import pytest

from streamtap import ModuleBase
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import Agent, Failing, Gate, Talker, chat_body

JS = pathlib.Path(__file__).resolve().parents[1] / "js"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "ai").is_dir(),
    reason="needs node and tests/js/node_modules/ai (scripts/test.sh runs npm install in tests/js)",
)


def run_sdk(api: str, steps: list[dict]) -> list[dict]:
    proc = subprocess.run(
        ["node", str(JS / "ui_conformance.mjs"), json.dumps({"api": api, "steps": steps})],
        cwd=JS, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_ai_sdk_builds_text_reasoning_tool_and_data_parts():
    with BackgroundServer(create_app(Agent())) as srv:
        [res] = run_sdk(srv.url + "/api/chat", [{"kind": "send", "chatId": "js1", "text": "weather in Paris"}])
    assert res["errors"] == [] and res["status"] == "ok"
    msg = res["message"]
    assert msg["role"] == "assistant" and msg["metadata"]["chatId"] == "js1"
    types = [p["type"] for p in msg["parts"]]
    assert "step-start" in types and "data-progress" in types and "data-run" in types
    [tool] = [p for p in msg["parts"] if p["type"] == "dynamic-tool"]
    assert tool["toolName"] == "get_weather" and tool["state"] == "output-available"
    assert tool["input"] == {"city": "Paris"} and tool["output"]["temperature"] == 10
    text = "".join(p["text"] for p in msg["parts"] if p["type"] == "text")
    assert text == "It is 10 degrees in Paris."
    assert all(p["state"] == "done" for p in msg["parts"] if p["type"] == "text")
    runs = [p for p in msg["parts"] if p["type"] == "data-run"]
    assert len(runs) == 4 and all(p["data"]["status"] == "ok" for p in runs)  # upserted by id: one part per run
    assert res["chunks"][-1] == {"type": "finish", "finishReason": "stop"}


def test_ai_sdk_reasoning_and_tool_error():
    with BackgroundServer(create_app(Agent())) as srv1, BackgroundServer(create_app(Talker())) as srv2:
        [err] = run_sdk(srv1.url + "/api/chat", [{"kind": "send", "chatId": "js2", "text": "weather in Atlantis"}])
        [talk] = run_sdk(srv2.url + "/api/chat", [{"kind": "send", "chatId": "js3", "text": "hello world"}])
    assert err["errors"] == []
    [tool] = [p for p in err["message"]["parts"] if p["type"] == "dynamic-tool"]
    assert tool["state"] == "output-error" and "get_weather" in tool["errorText"] and "LookupError" in tool["errorText"]
    assert "no weather station" not in tool["errorText"]  # short by default: the detail is in the server log
    assert talk["errors"] == []
    [reasoning] = [p for p in talk["message"]["parts"] if p["type"] == "reasoning"]
    assert reasoning["text"] == "The user said something; I will repeat it." and reasoning["state"] == "done"


def test_ai_sdk_sees_errors_and_keeps_partial_text():
    with (
        BackgroundServer(create_app(Failing())) as srv,
        BackgroundServer(create_app(Failing(), error_detail="full")) as full,
    ):
        [res] = run_sdk(srv.url + "/api/chat", [{"kind": "send", "chatId": "js4", "text": "x"}])
        [detailed] = run_sdk(full.url + "/api/chat", [{"kind": "send", "chatId": "js4", "text": "x"}])
    [short] = res["errors"]  # the `error` part reaches onError
    assert short.startswith("The run failed (RuntimeError) in run ") and "went away" not in short
    assert detailed["errors"] == ["RuntimeError: the model went away"]
    text = "".join(p["text"] for p in res["message"]["parts"] if p["type"] == "text")
    assert text == "partial answer"
    assert res["chunks"][-1] == {"type": "finish", "finishReason": "error"}


class _Held(ModuleBase):
    """Streams half its words, then waits for the gate before the rest: the run is surely going when Node reconnects."""

    kind = "llm"
    blocking = False

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        words = text.split(" ")
        for i, word in enumerate(words):
            if i == len(words) // 2:
                await self.gate.wait()
            yield ("" if i == 0 else " ") + word


def test_ai_sdk_reconnect_replays_a_running_answer_and_gets_204_after():
    words = " ".join(f"w{i}" for i in range(50))
    gate = Gate()
    app = create_app(_Held(gate))

    async def release_on_reconnect(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/stream"):
            gate.event.set()  # the reconnect arrived: the run may finish now (it was held until then, not timed)
        await app(scope, receive, send)

    try:
        with BackgroundServer(release_on_reconnect) as srv, httpx.Client(timeout=20) as client:
            with client.stream("POST", srv.url + "/api/chat", json=chat_body(words, chat_id="js5")) as r:
                for line in r.iter_lines():
                    if '"text-delta"' in line:
                        break  # disconnect mid-answer
            [resumed, idle] = run_sdk(
                srv.url + "/api/chat", [{"kind": "reconnect", "chatId": "js5"}, {"kind": "reconnect", "chatId": "js5"}]
            )
    finally:
        gate.event.set()  # never leave the held run's waiting thread behind
    assert resumed["errors"] == [] and resumed["status"] == "ok"
    assert "".join(p["text"] for p in resumed["message"]["parts"] if p["type"] == "text") == words
    assert idle["status"] == "no-stream"


def test_ai_sdk_stop_then_a_new_message_supersedes_the_run():
    """useChat's stop() only aborts the fetch; the next message in that chat starts at once (no 409), the old run is cancelled."""
    words = " ".join(f"w{i}" for i in range(400))
    with BackgroundServer(create_app(Talker(delay=0.02, reasoning=False))) as srv, httpx.Client(timeout=20) as client:
        [stopped, again] = run_sdk(srv.url + "/api/chat", [
            {"kind": "send-then-stop", "chatId": "js6", "text": words},
            {"kind": "send", "chatId": "js6", "text": "a new question"},
        ])  # fmt: skip
        old_run = stopped["chunks"][0]["messageMetadata"]["runId"]
        events = client.get(f"{srv.url}/api/runs/{old_run}/events").text
    assert stopped["status"] == "stopped"
    assert again["errors"] == [] and again["status"] == "ok", again
    assert "".join(p["text"] for p in again["message"]["parts"] if p["type"] == "text") == "a new question"
    end = json.loads([line for line in events.splitlines() if line.startswith("data: ")][-1][6:])
    assert end["kind"] == "end" and end["status"] == "cancelled"
    assert end["error"]["message"] == "RunCancelled: superseded by a new message"
