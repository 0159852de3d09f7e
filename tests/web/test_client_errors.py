"""Secrets and internals in errors never reach a client; the server log gets the detail.

The model server (a real HTTP server, the real ``openai`` client) answers 401
with a body that echoes the API key and names an internal URL.
"""

from __future__ import annotations

import json
import logging

import pytest

from .helpers import Talker, chat_body, read_sse
from .misbehaving import INTERNAL_URL, Unauthorized

pytest.importorskip("openai")

KEY = "sk-live-SECRETKEY1234567890abcdef"


def _agent(base_url: str):
    from streamtap.demo.weather import weather_agent

    return lambda: weather_agent(base_url=base_url, api_key=KEY, asynchronous=True, max_retries=0)


def _leaks(text: str, model_url: str) -> list[str]:
    host = model_url.split("//", 1)[1].split("/", 1)[0]
    return [s for s in (KEY, "SECRETKEY", INTERNAL_URL, "10.20.30.40", host) if s in text]


async def test_a_401_that_echoes_the_key_reaches_neither_stream_nor_events_endpoint(serve, client, caplog):
    caplog.set_level(logging.INFO, logger="streamtap.web")
    with Unauthorized() as model:
        srv = serve(_agent(model.base_url))
        res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris?", chat_id="e1"))
        body = "\n".join(f.get("data", "") for f in res.frames)
        run_id = res.parts[0]["messageMetadata"]["runId"]
        assert res.done and res.parts[-1] == {"type": "finish", "finishReason": "error"}
        [error] = [p["errorText"] for p in res.parts if p["type"] == "error"]
        assert _leaks(body, model.base_url) == [], body
        assert "model call failed" in error and run_id in error and "try again" in error.lower()
        r = await client.get(f"{srv.url}/api/runs/{run_id}/events")
        assert r.status_code == 200
        assert _leaks(r.text, model.base_url) == [], r.text
        ends = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        root_end = next(e for e in ends if e["kind"] == "end" and e["run"]["run_id"] == run_id)
        assert root_end["status"] == "error" and run_id in root_end["error"]["message"]
        replay = await read_sse(client, "GET", f"{srv.url}/api/chat/e1/stream?run={run_id}")
        assert _leaks("\n".join(f.get("data", "") for f in replay.frames), model.base_url) == []
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "streamtap.web")
    assert run_id in logged and "401" in logged and "10.20.30.40" in logged, logged  # the detail is in the server log
    assert KEY not in logged and "SECRETKEY" not in logged  # ...redacted like spans


async def test_full_detail_is_opt_in_and_still_redacted(serve, client):
    with Unauthorized() as model:
        srv = serve(_agent(model.base_url), error_detail="full")
        res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris?", chat_id="e2"))
    [error] = [p["errorText"] for p in res.parts if p["type"] == "error"]
    body = "\n".join(f.get("data", "") for f in res.frames)
    assert error.startswith("LLMError: ") and "401" in error
    assert KEY not in body and "SECRETKEY" not in body


async def test_http_error_bodies_carry_no_secret(serve, client):
    from streamtap.web.store import MemoryEventStore

    class Unreachable(MemoryEventStore):
        async def create(self, run_id):
            raise ConnectionError("redis://default:hunter2-pw@10.0.0.5:6379/0 refused; api_key=sk-abcdefghijkl1234")

    srv = serve(Talker(), store=Unreachable())
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", chat_id="s2"))
    assert r.status_code == 503 and "ConnectionError" in r.json()["error"] and "try again" in r.json()["error"]
    assert "hunter2" not in r.text and "10.0.0.5" not in r.text and "sk-abcdefghijkl1234" not in r.text
    r = await client.get(srv.url + "/api/chat/x/stream", headers={"x": "y"}, params={"run": "sk-abcdefghijkl1234"})
    assert r.status_code == 404 and "sk-abcdefghijkl1234" not in r.text  # a client's own value, redacted all the same


def test_describe_keeps_own_words_and_never_a_message_in_short_mode():
    from streamtap.web.client_errors import ClientErrors

    errors = ClientErrors()
    secret = {"type": "streamtap.llm.errors.LLMError", "message": f"401 from {INTERNAL_URL}: {KEY}"}
    assert KEY not in errors.describe(secret, run_id="r1") and INTERNAL_URL not in errors.describe(secret, run_id="r1")
    refused = {
        "type": "streamtap.interrupts.errors.AnswerValidationError",
        "message": "answer does not match: need a number",
    }
    assert "does not match" in errors.describe(refused, run_id="r1")
    cancelled = {"type": "streamtap.exceptions.RunCancelled", "message": "stopped by the user"}
    assert errors.describe(cancelled, run_id="r1") == "RunCancelled: stopped by the user"
    full = ClientErrors("full").describe(secret, run_id="r1")
    assert KEY not in full and "[REDACTED]" in full


# -- a paused flow's private state, a cancel reason: what the app's settings keep back -----------------

_PUBLIC_RECORD_KEYS = {"id", "type", "interrupts"}


def _paused_flow():
    """Outer(Inner(Prepare >> Ask)): Ask pauses; every run on the way up ends interrupted with a record."""
    from streamtap.flows import Flow, Node, interrupt

    class Prepare(Node):
        def exec(self, prep_res):
            return "ready"

        def post(self, shared, prep_res, exec_res):
            shared["internal_db_password"] = "hunter2-from-vault"  # server-side working state

    class Ask(Node):
        def exec(self, prep_res):
            interrupt({"question": "Proceed?"}, schema={"type": "boolean"})
            return "done"

    return Flow(Flow(Prepare() >> Ask(), name="Inner"), name="Outer")


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def test_no_pause_record_state_leaves_through_the_events_endpoint(serve, client):
    srv = serve(_paused_flow, to_input=lambda r: {"q": r.last_user_text})
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("go", chat_id="p1"))
    run_id = res.parts[0]["messageMetadata"]["runId"]
    [shown] = [p["data"] for p in res.parts if p["type"] == "data-interrupt"]
    for query in ("", "?view=user"):
        r = await client.get(f"{srv.url}/api/runs/{run_id}/events{query}")
        ends = [e for e in _events(r.text) if e["kind"] == "end" and e.get("status") == "interrupted"]
        assert ends and any(e["run"]["run_id"] == run_id for e in ends), r.text
        if not query:
            assert {e["run"]["name"] for e in ends} >= {"Outer", "Inner", "Ask"}  # the children's records too
        for end in ends:
            record = end["output"]
            assert set(record) <= _PUBLIC_RECORD_KEYS, (end["run"]["name"], sorted(record))
            assert "hunter2" not in json.dumps(end), end
            assert record["interrupts"][0]["payload"] == {"question": "Proceed?"}  # the questions stay
            assert record["interrupts"][0]["schema"] == {"type": "boolean"}
        root = next(e["output"] for e in ends if e["run"]["run_id"] == run_id)
        assert {"runId": run_id, **root} == shown  # the UI stream's view of the record, by the same rule


async def test_the_abort_reason_uses_the_apps_redaction(serve, client):
    from streamtap import ModuleBase
    from streamtap.exceptions import RunCancelled

    class Gives(ModuleBase):
        blocking = False

        async def forward(self, text):
            yield "partial "
            raise RunCancelled("upstream closed: tenant ACME-internal-7731 quota exceeded at db01.corp")

    srv = serve(Gives(), redact=[r"ACME-internal-\d+", r"db01\.corp"])
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("hi", chat_id="c1"))
    run_id = res.parts[0]["messageMetadata"]["runId"]
    replay = await read_sse(client, "GET", f"{srv.url}/api/runs/{run_id}/ui")
    for sse in (res, replay):
        [abort] = [p for p in sse.parts if p["type"] == "abort"]
        assert abort["reason"] == "upstream closed: tenant [REDACTED] quota exceeded at [REDACTED]", abort
        body = "\n".join(f.get("data", "") for f in sse.frames)
        assert "ACME-internal" not in body and "db01" not in body


def test_the_mapper_redacts_with_the_given_redactor_and_by_default_with_the_built_in_patterns():
    from streamtap.redaction import Redactor
    from streamtap.web.ui_stream import UIMessageMapper

    def cancelled(reason: str) -> dict:
        run = {"run_id": "r1", "root_id": "r1", "parent_id": None, "name": "m", "kind": "module"}
        end = {"kind": "end", "run": run, "status": "cancelled", "error": {"type": "RunCancelled", "message": reason}}
        return {"kind": "start", "run": run}, end

    for redact, expected in ((Redactor([r"ACME-\d+"]), "[REDACTED] and [REDACTED]"), (None, "ACME-1 and [REDACTED]")):
        m = UIMessageMapper("r1", redact=redact)
        m.begin()
        start, end = cancelled("ACME-1 and sk-abcdefghijkl1234")
        m.feed(start)
        assert m.feed(end)[-1] == {"type": "abort", "reason": expected}
