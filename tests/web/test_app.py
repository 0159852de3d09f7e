"""The chat endpoints on real uvicorn: protocol conformance, resume, stop, safety."""

from __future__ import annotations

import asyncio
import json
import typing as t

import pytest

from .helpers import Agent, Failing, Returning, Talker, chat_body, check_ui_stream, parse_frames, read_sse


def by_type(parts, typ):
    return [p for p in parts if p["type"] == typ]


async def test_text_and_reasoning_stream_follows_the_protocol(serve, client):
    srv = serve(Talker())
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("hello there world"))
    assert res.status == 200
    assert res.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert res.headers["x-accel-buffering"] == "no"
    assert res.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in res.headers
    assert res.done and res.frames[-1]["data"] == "[DONE]"
    parts = res.parts
    check_ui_stream(parts)
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "hello there world"
    assert (
        "".join(p["delta"] for p in by_type(parts, "reasoning-delta")) == "The user said something; I will repeat it."
    )
    assert [p["type"] for p in parts][:3] == ["start", "start-step", "data-run"]
    assert by_type(parts, "start-step") and parts[-1] == {"type": "finish", "finishReason": "stop"}
    assert parts[0]["messageMetadata"]["chatId"] == "chat1"


async def test_tools_data_parts_and_node_progress(serve, client):
    srv = serve(Agent())
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris"))).parts
    check_ui_stream(parts)
    start = by_type(parts, "tool-input-start")[0]
    assert start["toolCallId"] == "call_1" and start["dynamic"] is True
    assert "".join(p["inputTextDelta"] for p in by_type(parts, "tool-input-delta")) == '{"city": "Paris"}'
    avail = by_type(parts, "tool-input-available")[0]
    assert avail["toolName"] == "get_weather" and avail["input"] == {"city": "Paris"}
    out = by_type(parts, "tool-output-available")[0]
    assert out["output"] == {"city": "Paris", "temperature": 10, "unit": "celsius"}
    assert by_type(parts, "data-progress") == [{"type": "data-progress", "data": {"step": "answering"}}]
    runs = {p["id"]: p["data"] for p in by_type(parts, "data-run")}
    assert sorted(r["name"] for r in runs.values()) == ["Agent", "Talker", "ToolModel", "Weather"]
    assert all(r["status"] == "ok" and r["duration"] >= 0 for r in runs.values())
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "It is 10 degrees in Paris."


async def test_tool_error_becomes_tool_output_error(serve, client):
    srv = serve(Agent())
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Atlantis"))).parts
    check_ui_stream(parts)
    err = by_type(parts, "tool-output-error")[0]
    assert err["toolCallId"] == "call_1" and err["errorText"].startswith("The tool 'get_weather' failed (LookupError)")
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "I could not get the weather in Atlantis."
    assert parts[-1]["finishReason"] == "stop"


async def test_user_facing_view_hides_tools_and_reasoning(serve, client):
    srv = serve(Agent())
    parts = (
        await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris", verbose=False))
    ).parts
    check_ui_stream(parts)
    types = {p["type"] for p in parts}
    assert not {t for t in types if t.startswith(("tool-", "reasoning")) or t == "data-run"}
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "It is 10 degrees in Paris."


async def test_streaming_off_sends_whole_text_parts(serve, client):
    srv = serve(Talker())
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("one two three", stream=False))).parts
    check_ui_stream(parts)
    assert [p["delta"] for p in by_type(parts, "text-delta")] == ["one two three"]


async def test_error_closes_parts_then_error_and_finish(serve, client):
    srv = serve(Failing(), error_detail="full")
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("x"))).parts
    check_ui_stream(parts)
    types = [p["type"] for p in parts]
    assert types[-5:] == ["text-end", "data-run", "finish-step", "error", "finish"]
    assert parts[-4]["data"]["status"] == "error" and parts[-4]["data"]["error"] == "RuntimeError: the model went away"
    assert parts[-2]["errorText"] == "RuntimeError: the model went away"
    assert parts[-1]["finishReason"] == "error"
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "partial answer"


async def test_returned_output_is_sent_as_text(serve, client):
    srv = serve(Returning())
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("why?"))).parts
    check_ui_stream(parts)
    assert [p["delta"] for p in by_type(parts, "text-delta")] == ["Answer to: why?"]


async def read_until(stream_lines, predicate):
    """Read SSE lines until a data part satisfies predicate; return the parts seen."""
    seen = []
    buf = ""
    async for chunk in stream_lines:
        buf += chunk
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            for f in parse_frames(block + "\n\n"):
                if "data" in f and f["data"] != "[DONE]":
                    part = json.loads(f["data"])
                    seen.append(part)
                    if predicate(part):
                        return seen
    return seen


async def test_stop_cancels_the_run_and_ends_with_abort(serve, client):
    srv = serve(Talker(delay=0.02, reasoning=False))
    words = " ".join(f"w{i}" for i in range(400))
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(words, chat_id="stopme")) as r:
        it = r.aiter_text()
        seen = await read_until(it, lambda p: p["type"] == "text-delta")
        stop = await client.post(srv.url + "/api/chat/stopme/stop")
        assert stop.status_code == 200 and stop.json()["stopped"] is True
        assert stop.json()["status"] == "cancelled"
        rest = []
        async for chunk in it:
            rest.append(chunk)
    parts = seen + [json.loads(f["data"]) for f in parse_frames("".join(rest)) if f.get("data") not in (None, "[DONE]")]
    check_ui_stream(parts)
    assert parts[-1]["type"] == "abort" and parts[-1]["reason"] == "stop request"
    assert len(by_type(parts, "text-delta")) < 400
    assert "[DONE]" in "".join(rest)
    # Nothing left to resume, and a second stop is a no-op.
    assert (await client.get(srv.url + "/api/chat/stopme/stream")).status_code == 204
    assert (await client.post(srv.url + "/api/chat/stopme/stop")).json()["stopped"] is False


async def test_disconnect_keeps_the_run_and_resume_replays_everything(serve, client):
    srv = serve(Talker(delay=0.01, reasoning=True))
    words = " ".join(f"w{i}" for i in range(60))
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(words, chat_id="reload")) as r:
        first = await read_until(r.aiter_text(), lambda p: p["type"] == "text-delta" and p["delta"].strip() == "w3")
    # The client went away mid-answer; the run goes on and a reload gets the whole answer.
    res = await read_sse(client, "GET", srv.url + "/api/chat/reload/stream")
    assert res.status == 200 and res.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = res.parts
    check_ui_stream(parts)
    assert parts[0]["messageId"] == first[0]["messageId"]
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == words
    assert parts[: len(first)] == first  # a full replay, from the start
    assert (await client.get(srv.url + "/api/chat/reload/stream")).status_code == 204


async def test_a_finished_run_of_the_chat_can_be_replayed_by_id(serve, client):
    srv = serve(Talker(reasoning=False))
    first = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("all done here", chat_id="later"))
    run_id = first.parts[0]["messageMetadata"]["runId"]
    assert (await client.get(srv.url + "/api/chat/later/stream")).status_code == 204  # nothing going
    again = await read_sse(client, "GET", srv.url + f"/api/chat/later/stream?run={run_id}")
    assert again.status == 200 and again.parts == first.parts
    # Not from another conversation, and not an unknown run.
    other = await client.get(srv.url + f"/api/chat/someone-else/stream?run={run_id}")
    assert other.status_code == 404 and "no run" in other.json()["error"]
    assert (await client.get(srv.url + "/api/chat/later/stream?run=0000000000000000")).status_code == 404


async def test_cancel_on_disconnect_option(serve, client):
    srv = serve(Talker(delay=0.02, reasoning=False), cancel_on_disconnect=True)
    words = " ".join(f"w{i}" for i in range(300))
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(words, chat_id="gone")) as r:
        seen = await read_until(r.aiter_text(), lambda p: p["type"] == "text-delta")
    run_id = seen[0]["messageMetadata"]["runId"]
    # The run's own event stream shows how it ended: cancelled when its client left.
    events = await read_sse(client, "GET", f"{srv.url}/api/runs/{run_id}/events")
    end = json.loads(events.frames[-1]["data"])
    assert end["kind"] == "end" and end["run"]["run_id"] == run_id
    assert end["status"] == "cancelled"
    texts = [json.loads(f["data"]) for f in events.frames if "data" in f]
    assert len([e for e in texts if e["kind"] == "chunk"]) < 300


async def test_keep_alive_comments_on_idle_streams(serve, client):
    class Slow(Talker):
        async def forward(self, text):
            yield "first "
            await asyncio.sleep(0.5)  # a silent tool call
            yield "second"

    srv = serve(Slow(), keepalive=0.1)
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("x"))
    comments = [c for f in res.frames for c in f.get("comment", [])]
    assert comments[0] == "stream-open" and comments.count("keep-alive") >= 2
    check_ui_stream(res.parts)


async def test_interrupt_then_answer_resumes_the_run(serve, client):
    from streamtap.flows import Flow, Node, interrupt

    class Ask(Node):
        def prep(self, shared):
            return shared["city"]

        def exec(self, city):
            yield f"Checking {city}. "
            answer = interrupt(
                {"question": f"Book {city}?"},
                schema={"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}},
            )
            yield "Booked." if answer["approved"] else "Not booked."

    srv = serve(lambda: Flow(Ask(), name="Booking"), to_input=lambda r: {"city": r.last_user_text})
    first = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("Oslo", chat_id="hitl"))
    check_ui_stream(first.parts)
    [intr] = by_type(first.parts, "data-interrupt")
    assert intr["data"]["interrupts"][0]["payload"] == {"question": "Book Oslo?"}
    assert "state" not in intr["data"] and first.parts[-1]["finishReason"] == "other"
    # A refused answer (wrong shape) fails the resume but leaves the pause pending.
    bad = await read_sse(
        client, "POST", srv.url + "/api/chat", json=chat_body("Oslo", chat_id="hitl", resume={"approved": "yes"})
    )
    assert bad.parts[-1]["finishReason"] == "error" and "does not match" in by_type(bad.parts, "error")[0]["errorText"]
    good = await read_sse(
        client, "POST", srv.url + "/api/chat", json=chat_body("Oslo", chat_id="hitl", resume={"approved": True})
    )
    check_ui_stream(good.parts)
    assert "".join(p["delta"] for p in by_type(good.parts, "text-delta")) == "Checking Oslo. Booked."
    assert good.parts[-1]["finishReason"] == "stop"


async def test_resume_is_204_for_unknown_chat(serve, client):
    srv = serve(Talker())
    assert (await client.get(srv.url + "/api/chat/nobody/stream")).status_code == 204


async def test_second_request_while_running_is_409(serve, client):
    srv = serve(Talker(delay=0.05, reasoning=False))
    async with client.stream(
        "POST", srv.url + "/api/chat", json=chat_body(" ".join(["word"] * 100), chat_id="busy")
    ) as r:
        reading = r.aiter_text()  # kept: a dropped iterator closes the response, and a run nobody reads is superseded
        await read_until(reading, lambda p: p["type"] == "text-delta")
        again = await client.post(srv.url + "/api/chat", json=chat_body("again", chat_id="busy"))
        assert again.status_code == 409 and "already has a run going" in again.json()["error"]
        await client.post(srv.url + "/api/chat/busy/stop")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 422, "JSON object"),
        (json.dumps({"id": "a b", "messages": []}).encode(), 422, "'id'"),
        (json.dumps({"id": "ok", "messages": "hi"}).encode(), 422, "'messages' must be a list"),
        (json.dumps({"id": "ok", "messages": [{"role": "robot", "parts": []}]}).encode(), 422, "messages[0].role"),
        (
            json.dumps(
                {"id": "ok", "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}], "trigger": "go"}
            ).encode(),
            422,
            "'trigger'",
        ),
        (
            json.dumps({"id": "ok", "messages": [{"role": "user", "parts": [{"type": "text", "text": ""}]}]}).encode(),
            422,
            "no text",
        ),
        (json.dumps({"id": "ok", "messages": [], "verbose": "no"}).encode(), 422, "'verbose' must be true or false"),
    ],
)
async def test_bad_bodies_get_clear_errors(serve, client, body, status, needle):
    srv = serve(Talker())
    r = await client.post(srv.url + "/api/chat", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


async def test_size_and_message_count_limits(serve, client):
    srv = serve(Talker(), max_body_bytes=2000, max_messages=3)
    big = chat_body("x" * 5000)
    r = await client.post(srv.url + "/api/chat", json=big)
    assert r.status_code == 413 and "max_body_bytes=2000" in r.json()["error"]
    many = chat_body("hi")
    many["messages"] = many["messages"] * 4
    r = await client.post(srv.url + "/api/chat", json=many)
    assert r.status_code == 413 and "max_messages=3" in r.json()["error"]


async def test_bearer_token(serve, client):
    srv = serve(Returning(), token="s3cret")
    assert (await client.post(srv.url + "/api/chat", json=chat_body("hi"))).status_code == 401
    bad = await client.post(srv.url + "/api/chat", json=chat_body("hi"), headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401 and "Bearer" in bad.json()["error"]
    ok = await read_sse(
        client, "POST", srv.url + "/api/chat", json=chat_body("hi"), headers={"authorization": "Bearer s3cret"}
    )
    assert ok.status == 200 and ok.done
    assert (await client.get(srv.url + "/")).status_code == 200  # the page itself holds no secret


def test_non_loopback_bind_needs_a_token():
    from streamtap.exceptions import UsageError
    from streamtap.web.server import check_bind

    with pytest.raises(UsageError, match="without an access token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "tok")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)


async def test_conversations_are_isolated_and_run_ids_unguessable(serve, client):
    srv = serve(Talker(delay=0.01, reasoning=False))
    a, b = await asyncio.gather(
        read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("alpha alpha alpha", chat_id="A")),
        read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("beta beta beta", chat_id="B")),
    )
    ta = "".join(p["delta"] for p in by_type(a.parts, "text-delta"))
    tb = "".join(p["delta"] for p in by_type(b.parts, "text-delta"))
    assert ta == "alpha alpha alpha" and tb == "beta beta beta"
    ra, rb = a.parts[0]["messageMetadata"]["runId"], b.parts[0]["messageMetadata"]["runId"]
    assert ra != rb and len(ra) >= 16 and int(ra, 16) >= 0
    runs_a = {p["id"] for p in by_type(a.parts, "data-run")}
    runs_b = {p["id"] for p in by_type(b.parts, "data-run")}
    assert not runs_a & runs_b


async def test_page_and_static_files(serve, client):
    srv = serve(Returning(), title="My <bot>")
    page = await client.get(srv.url + "/")
    assert page.status_code == 200 and "My &lt;bot&gt;" in page.text and "static/app.js" in page.text
    for name in ("app.js", "style.css"):
        r = await client.get(f"{srv.url}/static/{name}")
        assert r.status_code == 200 and len(r.content) > 1000


def test_missing_module_is_a_clear_type_error():
    from streamtap.web import create_app

    with pytest.raises(TypeError, match="ModuleBase"):
        create_app("not a module")


class JSONStore:
    """An EventStore that keeps only JSON text, as a store in another process (Redis Streams) would."""

    def __init__(self, fail_after: int | None = None) -> None:
        from streamtap.web.store import MemoryEventStore

        self.inner = MemoryEventStore()
        self.fail_after = fail_after
        self.appended = 0

    async def create(self, run_id):
        await self.inner.create(run_id)

    async def append(self, run_id, event):
        self.appended += 1
        if self.fail_after is not None and self.appended > self.fail_after:
            raise ConnectionError("the store went away")
        await self.inner.append(run_id, json.loads(json.dumps(event)))

    async def finish(self, run_id):
        await self.inner.finish(run_id)

    async def read(self, run_id, after=-1, limit=1000):
        return await self.inner.read(run_id, after, limit)

    async def wait(self, run_id, after, timeout):
        return await self.inner.wait(run_id, after, timeout)

    async def expire(self, now=None):
        return await self.inner.expire(now)


async def test_another_event_store_replaces_the_memory_one(serve, client):
    from streamtap.web.store import EventStore

    store = JSONStore()
    assert isinstance(store, EventStore)
    srv = serve(Agent(), store=store)
    parts = (await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("weather in Paris"))).parts
    check_ui_stream(parts)
    assert "".join(p["delta"] for p in by_type(parts, "text-delta")) == "It is 10 degrees in Paris."
    assert store.appended > 10


async def test_a_failing_store_cancels_the_run_and_ends_the_stream_cleanly(serve, client):
    import threading

    import streamtap

    statuses: dict[str, str] = {}
    changed = threading.Condition()

    def on_end(ev):
        if ev.run.parent_id is None:
            with changed:
                statuses[ev.run.run_id] = ev.status
                changed.notify_all()

    with streamtap.subscribe(on_end, kinds=["end"]):
        srv = serve(Talker(delay=0.005, reasoning=False), store=JSONStore(fail_after=5))
        res = await read_sse(
            client, "POST", srv.url + "/api/chat", json=chat_body(" ".join(["w"] * 300), chat_id="broken")
        )
        run_id = res.parts[0]["messageMetadata"]["runId"]

        def ended() -> bool:
            with changed:
                return changed.wait_for(lambda: run_id in statuses, 10)

        assert await asyncio.get_running_loop().run_in_executor(None, ended)
    check_ui_stream(res.parts)
    assert res.done and res.parts[-1] == {"type": "finish", "finishReason": "error"}
    assert statuses[run_id] == "cancelled"


def test_missing_web_extra_names_the_extra(monkeypatch):
    import sys

    from streamtap.exceptions import MissingDependencyError
    from streamtap.web import create_app

    monkeypatch.setitem(sys.modules, "sse_starlette", None)
    with pytest.raises(MissingDependencyError, match=r"streamtap\[web\]"):
        create_app(Returning())


def test_importing_the_web_package_imports_no_web_framework():
    import subprocess
    import sys

    code = "import sys, streamtap.web, streamtap.web.app, streamtap.web.ui_stream; print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- review findings ----------------------------------------------------------------


async def test_the_store_passed_in_is_the_one_used(serve, client):
    """An empty store given to create_app is used (it was once replaced because it was falsy)."""
    from streamtap.web.store import MemoryEventStore

    store = MemoryEventStore()
    srv = serve(Talker(), store=store)
    await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("hi", chat_id="s1"))
    assert len(store) == 1


async def test_a_failing_store_create_refuses_the_run_and_stops_it(serve, client):
    """store.create() failing gives a clear 503, the run is cancelled, and the chat is not stuck."""
    from streamtap.web.store import MemoryEventStore

    class Unreachable(MemoryEventStore):
        async def create(self, run_id):
            raise ConnectionError("store unreachable")

    srv = serve(Talker(), store=Unreachable())
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", chat_id="s2"))
    assert (
        r.status_code == 503 and "ConnectionError" in r.json()["error"] and "store unreachable" not in r.json()["error"]
    )
    r = await client.post(srv.url + "/api/chat", json=chat_body("hi", chat_id="s2"))
    assert r.status_code == 503  # refused again, not 409: no run was left behind


async def test_concurrent_posts_start_one_run_even_with_a_slow_store(serve, client):
    """While a run's store entry is being created, a second POST to the chat gets 409, not a second run."""
    from streamtap.web.store import MemoryEventStore

    class Slow(MemoryEventStore):
        async def create(self, run_id):
            await asyncio.sleep(0.2)  # an I/O round trip, as a Redis store has
            return await super().create(run_id)

    srv = serve(Talker(), store=Slow())
    codes = await asyncio.gather(
        *(client.post(srv.url + "/api/chat", json=chat_body("hi", chat_id="s3")) for _ in range(4))
    )
    assert sorted(r.status_code for r in codes) == [200, 409, 409, 409]


async def test_deeply_nested_json_is_a_400(serve, client):
    """A body nested deeper than the JSON reader can go is a clear 400, not a 500."""
    srv = serve(Talker())
    r = await client.post(
        srv.url + "/api/chat", content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]


async def test_stop_dismisses_a_pending_interrupt(serve, client):
    """Stop on a chat waiting for an answer drops the pause, so the next message is a new question."""
    from streamtap.flows import Flow, Node, interrupt

    class Ask(Node):
        def prep(self, shared):
            return shared["q"]

        def exec(self, q):
            if q == "book":
                interrupt({"question": "Sure?"}, schema={"type": "boolean"})
            yield f"Answering {q}."

    srv = serve(lambda: Flow(Ask(), name="Ask"), to_input=lambda r: {"q": r.last_user_text})
    first = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("book", chat_id="s4"))
    assert by_type(first.parts, "data-interrupt")
    stop = (await client.post(srv.url + "/api/chat/s4/stop")).json()
    assert stop["stopped"] is True and stop["dismissed"]
    later = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("what is 2+2", chat_id="s4"))
    assert "".join(p["delta"] for p in by_type(later.parts, "text-delta")) == "Answering what is 2+2."


async def test_a_stop_that_outlasts_its_wait_answers_stopping_not_stopped(serve, client):
    """A run that has not ended when the stop's wait runs out is reported as stopping (202), never as stopped."""
    import threading

    from streamtap import ModuleBase

    release = threading.Event()

    class Stubborn(ModuleBase):
        def forward(self, text: str) -> t.Iterator[str]:
            yield "working"
            assert release.wait(10)  # busy with something that does not look at the cancel for a while
            yield " done"

    srv = serve(Stubborn())
    srv.config.app.state.chat.stop_wait = 0.2
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body("go", chat_id="stubborn")) as r:
        it = r.aiter_text()
        await read_until(it, lambda p: p["type"] == "text-delta")
        stop = await client.post(srv.url + "/api/chat/stubborn/stop")
        assert stop.status_code == 202, stop.text
        body = stop.json()
        assert body["stopped"] is False and body["stopping"] is True and body["status"] is None, body
        release.set()
        rest = "".join([chunk async for chunk in it])
    parts = [json.loads(f["data"]) for f in parse_frames(rest) if f.get("data") not in (None, "[DONE]")]
    assert parts[-1] == {"type": "abort", "reason": "stop request"}, parts[-3:]
    again = await client.post(srv.url + "/api/chat/stubborn/stop")
    assert again.status_code == 200 and again.json()["stopped"] is False


async def test_resume_with_no_pending_interrupt_is_409_and_starts_nothing(serve, client):
    srv = serve(Talker())
    body = {**chat_body("yes", chat_id="noresume"), "resume": True}
    r = await client.post(srv.url + "/api/chat", json=body)
    assert r.status_code == 409 and "no pending interrupt" in r.json()["error"], r.text
    assert (await client.get(srv.url + "/api/chat/noresume/stream")).status_code == 204


async def test_events_resumed_from_before_what_the_store_kept_say_where_the_gap_is(serve, client):
    """Events the store dropped (max_events_per_run) are reported as a gap, never skipped silently."""
    from streamtap.web.store import MemoryEventStore

    srv = serve(Talker(reasoning=False), store=MemoryEventStore(max_events_per_run=5))
    words = " ".join(f"w{i}" for i in range(20))
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body(words, chat_id="gappy"))
    run_id = res.parts[0]["messageMetadata"]["runId"]
    events = await read_sse(client, "GET", srv.url + f"/api/runs/{run_id}/events", headers={"last-event-id": "2"})
    data = [json.loads(f["data"]) for f in events.frames if "data" in f]
    kept = [d for d in data if d["kind"] != "gap"]
    [gap] = [d for d in data if d["kind"] == "gap"]
    first_kept = kept[0]["seq"]
    assert first_kept > 3 and gap["from_seq"] == 3 and gap["to_seq"] == first_kept - 1, (gap, first_kept)
    assert data[0] == gap and [d["seq"] for d in kept] == list(range(first_kept, first_kept + len(kept)))
