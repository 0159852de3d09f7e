"""The read-only run view's endpoint (``GET /api/runs/{id}/ui``) and the ``trace_url`` option, over real uvicorn."""

from __future__ import annotations

import pytest

from streamtap.exceptions import UsageError
from streamtap.web import create_app

from .helpers import Agent, chat_body, check_ui_stream, read_sse


@pytest.mark.parametrize(
    "bad", ["jaeger/trace/{trace_id}", "http://localhost:16686/trace/", "javascript:alert(1)//{trace_id}"]
)
def test_trace_url_must_be_an_http_url_naming_the_trace_id(bad):
    with pytest.raises(UsageError, match="trace_url must be an http") as info:
        create_app(Agent(), trace_url=bad)
    assert repr(bad) in str(info.value) and "{trace_id}" in str(info.value)


async def test_the_page_carries_the_trace_url_template_escaped(serve, client):
    srv = serve(Agent(), trace_url='http://phoenix.example:6006/projects/default/traces/{trace_id}?x="1"')
    html = (await client.get(srv.url + "/")).text
    assert 'content="http://phoenix.example:6006/projects/default/traces/{trace_id}?x=&quot;1&quot;"' in html


async def test_a_finished_run_replays_as_a_ui_message_stream_with_its_question(serve, client):
    srv = serve(Agent())
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris"))
    run_id = res.parts[0]["messageMetadata"]["runId"]
    view = await read_sse(client, "GET", srv.url + f"/api/runs/{run_id}/ui")
    check_ui_stream(view.parts)
    meta = view.parts[0]["messageMetadata"]
    assert meta["runId"] == run_id and meta["readOnly"] is True and meta["input"] == "weather in Paris"
    text = "".join(p["delta"] for p in view.parts if p["type"] == "text-delta")
    assert text == "".join(p["delta"] for p in res.parts if p["type"] == "text-delta")
    assert any(p["type"] == "data-run" for p in view.parts)  # verbose: the page draws the waterfall


async def test_unknown_or_invalid_run_view_is_a_clear_error(serve, client):
    srv = serve(Agent())
    r = await client.get(srv.url + "/api/runs/nope/ui")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = await client.get(srv.url + "/api/runs/bad%20id/ui")
    assert r.status_code == 422 and "Invalid run id" in r.json()["error"]


def test_the_demo_refuses_a_bad_trace_url(capsys):
    from streamtap.demo import main

    assert main(["--trace-url", "jaeger/{trace_id}", "--port", "0", "--exit-after", "0.1"]) == 2
    assert (
        "trace_url must be an http(s) URL template containing {trace_id}, got 'jaeger/{trace_id}'"
        in capsys.readouterr().err
    )
