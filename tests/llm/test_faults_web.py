"""Model faults seen from a browser: the agent behind the real web app (real uvicorn) against the misbehaving server.

Whatever the model server does, the UI message stream ends properly (one
``error`` part for a failure, then ``finish``, then ``[DONE]``) and carries
neither the API key a 401 body echoed nor the internal URLs.
"""

from __future__ import annotations

import json

import httpx
import pytest

from streamtap.agents import FunctionCallAgent
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import KEY, PROMPT, chat_for
from .misbehaving import INTERNAL_URL, Misbehaving

FAULTS = {
    "ok": False, "close": False, "huge-delta": False, "cut-after-finish": False,
    "500": True, "429": True, "401": True, "malformed": True, "cut-chunked": True, "cut-close": True,
    "no-finish": True, "hang-first": True, "hang-mid": True,
}  # fmt: skip
"""Fault -> whether the run fails."""


@pytest.mark.parametrize("fault", list(FAULTS))
def test_ui_stream_ends_cleanly_and_says_nothing_secret(misbehaving: Misbehaving, fault: str) -> None:
    llm = chat_for(misbehaving, fault, timeout=0.5 if fault.startswith("hang") else 5.0, headers={"x-size": "100000"})
    server = BackgroundServer(create_app(FunctionCallAgent(llm, []))).start()
    try:
        body = {
            "id": "chat1",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": PROMPT}]}],
            "trigger": "submit-message",
        }
        response = httpx.post(server.url + "/api/chat", json=body, timeout=20)
    finally:
        server.stop()
    assert response.status_code == 200
    text = response.text
    assert KEY not in text and INTERNAL_URL not in text and misbehaving.base_url not in text
    data = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    parts = [json.loads(d) for d in data[:-1]]
    errors = [p for p in parts if p["type"] == "error"]
    assert parts[-1]["type"] == "finish"
    if FAULTS[fault]:
        assert len(errors) == 1 and errors[0]["errorText"] and parts[-1].get("finishReason") == "error"
    else:
        assert not errors and parts[-1].get("finishReason") != "error"
