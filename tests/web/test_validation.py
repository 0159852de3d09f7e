"""Every id a client sends is checked in full, and booleans are booleans (422 naming the field)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .helpers import Talker, chat_body, check_ui_stream, read_sse

BAD_IDS = ["abc\n", "abc\r\n", "\nabc", "a b", "a/b", "x" * 129, ""]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_refused_everywhere(serve, client, bad):
    srv = serve(Talker())
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", chat_id=bad))
    assert r.status_code == 422 and "'id'" in r.json()["error"], bad
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", messageId=bad))
    assert r.status_code == 422 and "'messageId'" in r.json()["error"], bad
    if bad and "/" not in bad:  # an empty or '/' path segment is another route
        seg = quote(bad, safe="")
        for path in (f"/api/chat/{seg}/stream", f"/api/runs/{seg}/events"):
            r = await client.get(srv.url + path)
            assert r.status_code == 422, (path, r.status_code)
        r = await client.post(srv.url + f"/api/chat/{seg}/stop")
        assert r.status_code == 422
    r = await client.get(srv.url + "/api/chat/c/stream", params={"run": bad})
    assert r.status_code == 422 and "run id" in r.json()["error"]


async def test_message_and_interrupt_ids_are_checked(serve, client):
    srv = serve(Talker())
    body = chat_body("hi")
    body["messages"][0]["id"] = 5
    r = await client.post(srv.url + "/api/chat", json=body)
    assert r.status_code == 422 and "messages[0].id" in r.json()["error"]
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", resume={"answers": {"bad id\n": True}}))
    assert r.status_code == 422 and "resume" in r.json()["error"] and "interrupt id" in r.json()["error"]


@pytest.mark.parametrize("field", ["verbose", "stream"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, [], {}])
async def test_booleans_are_strict(serve, client, field, value):
    srv = serve(Talker())
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", **{field: value}))
    assert r.status_code == 422, (field, value)
    assert f"'{field}'" in r.json()["error"] and "true or false" in r.json()["error"]


async def test_booleans_are_strict_on_the_resume_path_and_the_pause_stays(serve, client):
    from streamtap.flows import Flow, Node, interrupt

    class Ask(Node):
        def exec(self, _):
            answer = interrupt({"question": "Go?"}, schema={"type": "boolean"})
            yield "Going." if answer else "Staying."

    srv = serve(lambda: Flow(Ask(), name="Ask"))
    first = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("x", chat_id="p1"))
    assert first.parts[-1]["finishReason"] == "other"
    r = await client.post(srv.url + "/api/chat", json=chat_body("x", chat_id="p1", resume=True, verbose="false"))
    assert r.status_code == 422 and "'verbose'" in r.json()["error"]
    good = await read_sse(
        client, "POST", srv.url + "/api/chat", json=chat_body("x", chat_id="p1", resume=True, verbose=False)
    )
    check_ui_stream(good.parts)
    assert "".join(p["delta"] for p in good.parts if p["type"] == "text-delta") == "Going."
