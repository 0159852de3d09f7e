"""The app with the real weather agent, the real ``openai`` client and the embedded model server."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import chat_body, check_ui_stream, parse_frames

pytest.importorskip("openai")


def parts_of(body: str) -> list[dict]:
    return [json.loads(f["data"]) for f in parse_frames(body) if f.get("data") not in (None, "[DONE]")]


def test_weather_agent_answer_with_parallel_tool_calls():
    with (  # noqa: SIM117 - nested blocks show which resource lives inside which
        FakeOpenAI(reasoning=True) as model,
        BackgroundServer(create_app(lambda: weather_agent(base_url=model.base_url))) as srv,
    ):
        with httpx.Client(timeout=30) as client:
            r = client.post(srv.url + "/api/chat", json=chat_body(QUERY, chat_id="w1"))
    parts = parts_of(r.text)
    check_ui_stream(parts)
    calls = {p["toolCallId"]: p for p in parts if p["type"] == "tool-input-available"}
    assert sorted(p["input"]["location"] for p in calls.values()) == ["Paris, France", "Tokyo, Japan"]
    outputs = [p for p in parts if p["type"] == "tool-output-available"]
    assert {p["toolCallId"] for p in outputs} == set(calls)
    # Streamed arguments add up to the arguments the tool got.
    for cid, call in calls.items():
        streamed = "".join(
            p["inputTextDelta"] for p in parts if p["type"] == "tool-input-delta" and p["toolCallId"] == cid
        )
        assert json.loads(streamed) == call["input"]
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert "Tokyo is 10 degrees Celsius" in text and "Paris" in text and "<tool_call>" not in text
    assert [p for p in parts if p["type"] == "reasoning-delta"]
    steps = [p["type"] for p in parts if p["type"] in ("start-step", "finish-step")]
    assert steps == ["start-step", "finish-step"] * 2  # two model calls: the tool calls, then the answer
    assert parts[-1] == {"type": "finish", "finishReason": "stop"}


def test_stop_closes_the_model_stream():
    with (
        FakeOpenAI(token_delay=0.03) as model,
        BackgroundServer(create_app(lambda: weather_agent(base_url=model.base_url, asynchronous=True))) as srv,
    ):
        story = " ".join(f"word{i}" for i in range(300))
        with httpx.Client(timeout=30) as client:
            t0 = time.monotonic()
            with client.stream("POST", srv.url + "/api/chat", json=chat_body(story, chat_id="w2")) as r:
                lines = r.iter_lines()
                for line in lines:
                    if '"text-delta"' in line:
                        break
                stop = client.post(srv.url + "/api/chat/w2/stop")
                rest = "\n".join(lines)
            assert stop.json()["stopped"] is True and stop.json()["status"] == "cancelled"
            record = model.wait_for_closed(timeout=5, after=t0)
            assert record.closed_early and record.chunks_sent < 300
            assert record.finished_at is not None
            assert '"type":"abort"' in rest and rest.rstrip().endswith("data: [DONE]")
