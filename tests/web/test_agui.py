"""Conformance: the AG-UI endpoint read by the real AG-UI client (npm ``@ag-ui/client`` HttpAgent) in Node."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import time
import typing as t

import httpx
import pytest

from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import Agent, Failing, Talker

pytest.importorskip("ag_ui.core", reason="needs the agui extra (pip install 'streamtap[agui]')")

JS = pathlib.Path(__file__).resolve().parents[1] / "js"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@ag-ui" / "client").is_dir(),
    reason="needs node and tests/js/node_modules/@ag-ui/client (scripts/test.sh runs npm install in tests/js)",
)


def run_client(url: str, thread_id: str, steps: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    proc = subprocess.run(
        ["node", str(JS / "agui_conformance.mjs"), json.dumps({"url": url, "threadId": thread_id, "steps": steps})],
        cwd=JS, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return t.cast("list[dict[str, t.Any]]", json.loads(proc.stdout))


def wait_until(cond: t.Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass (the run lives in the server's thread)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def types(res: dict[str, t.Any]) -> list[str]:
    return [e["type"] for e in res["events"]]


def by_role(res: dict[str, t.Any], role: str) -> list[dict[str, t.Any]]:
    return [m for m in res["messages"] if m["role"] == role]


@needs_node
def test_agui_client_streams_text_and_reasoning():
    with BackgroundServer(create_app(Talker())) as srv:
        [res] = run_client(srv.url + "/api/agui", "t1", [{"text": "hello streaming world"}])
    assert res["errors"] == [] and res["outcome"] == "success"
    seq = types(res)
    assert seq[0] == "RUN_STARTED" and seq[-1] == "RUN_FINISHED"
    assert seq.index("REASONING_START") < seq.index("REASONING_MESSAGE_CONTENT") < seq.index("REASONING_END")
    assert seq.count("TEXT_MESSAGE_CONTENT") == 3  # one delta per word, as streamed
    [user, reasoning, answer] = res["messages"]
    assert user["content"] == "hello streaming world"
    assert reasoning["role"] == "reasoning" and reasoning["content"] == "The user said something; I will repeat it."
    assert answer["role"] == "assistant" and answer["content"] == "hello streaming world"
    started = res["events"][0]
    assert started["threadId"] == "t1" and started["runId"] == "r0" and started["metadata"]["streamtapRunId"]


@needs_node
def test_agui_client_sees_tool_calls_with_streamed_arguments_and_steps():
    with BackgroundServer(create_app(Agent())) as srv:
        [ok, failed] = run_client(
            srv.url + "/api/agui", "t2", [{"text": "weather in Paris"}, {"text": "weather in Atlantis"}]
        )
    assert ok["errors"] == [] and failed["errors"] == []
    seq = types(ok)
    assert seq.count("TOOL_CALL_ARGS") == 2  # the model's argument deltas, as they came
    assert (
        seq.index("TOOL_CALL_START")
        < seq.index("TOOL_CALL_ARGS")
        < seq.index("TOOL_CALL_END")
        < seq.index("TOOL_CALL_RESULT")
    )
    steps = [e for e in ok["events"] if e["type"] in ("STEP_STARTED", "STEP_FINISHED")]
    assert {e["stepName"] for e in steps} >= {"ToolModel", "Weather", "Talker"}
    assert all(e["metadata"]["status"] == "ok" for e in steps if e["type"] == "STEP_FINISHED")
    assert [e["value"] for e in ok["events"] if e["type"] == "CUSTOM"] == [{"step": "answering"}]
    calls = [c for m in by_role(ok, "assistant") for c in m.get("toolCalls", [])]
    assert [
        (c["metadata"]["callId"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ] == [("call_1", "get_weather", {"city": "Paris"})]
    [result] = by_role(ok, "tool")
    assert result["toolCallId"] == calls[0]["id"] and json.loads(result["content"])["temperature"] == 10
    assert by_role(ok, "assistant")[-1]["content"] == "It is 10 degrees in Paris."
    # The second run of the same thread: a failing tool is a tool message with an error, and the run goes on.
    [_, bad] = by_role(failed, "tool")  # ids unique in the thread, though the model said call_1 both times
    assert "get_weather" in bad["error"] and bad["content"].startswith("Error: ")
    assert by_role(failed, "assistant")[-1]["content"] == "I could not get the weather in Atlantis."


@needs_node
def test_agui_client_gets_run_error_and_keeps_partial_text():
    with BackgroundServer(create_app(Failing())) as srv:
        [res] = run_client(srv.url + "/api/agui", "t3", [{"text": "x"}])
    seq = types(res)
    assert seq[-1] == "RUN_ERROR" and "RUN_FINISHED" not in seq
    [err] = [e for e in res["events"] if e["type"] == "RUN_ERROR"]
    assert err["message"].startswith("The run failed (RuntimeError) in run ") and "went away" not in err["message"]
    assert err["code"] == "run_failed"
    assert by_role(res, "assistant")[-1]["content"] == "partial answer"


@needs_node
def test_agui_stop_cancels_the_run_and_finishes_cancelled():
    app = create_app(Talker(delay=0.05, reasoning=False))
    words = " ".join(f"w{i}" for i in range(200))
    with BackgroundServer(app) as srv:
        [res] = run_client(srv.url + "/api/agui", "t4", [{"text": words, "stopAfter": "TEXT_MESSAGE_CONTENT"}])
    assert res["errors"] == [] and res["outcome"] == "cancelled"
    said = by_role(res, "assistant")[-1]["content"]
    assert said and len(said) < len(words)  # stopped mid-answer, the partial answer kept
    [run] = app.state.chat.recent.values()
    assert run.status == "cancelled"


@needs_node
def test_agui_abort_run_cancels_the_server_side_run():
    app = create_app(Talker(delay=0.05, reasoning=False))
    words = " ".join(f"w{i}" for i in range(400))
    with BackgroundServer(app) as srv:
        [res] = run_client(srv.url + "/api/agui", "t5", [{"text": words, "abortAfter": "TEXT_MESSAGE_CONTENT"}])
        [run] = list(app.state.chat.runs.values()) + list(app.state.chat.recent.values())
        # The disconnect cancels it: it ends long before its 20 s of words.
        assert wait_until(lambda: run.status is not None, 10), "the run kept going after the client aborted"
    assert run.status == "cancelled"
    assert "RUN_FINISHED" not in types(res)


@needs_node
def test_agui_interrupt_is_answered_and_resumed():
    from streamtap.flows import Flow, Node, interrupt

    schema = {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}

    class Ask(Node):
        def prep(self, shared: dict[str, t.Any]) -> str:
            return str(shared["city"])

        def exec(self, city: str) -> t.Iterator[str]:
            yield f"Checking {city}. "
            answer = interrupt({"question": f"Book {city}?"}, schema=schema)
            yield "Booked." if answer["approved"] else "Not booked."

    app = create_app(lambda: Flow(Ask(), name="Booking"), to_input=lambda r: {"city": r.last_user_text})
    with BackgroundServer(app) as srv:
        first, second = run_client(srv.url + "/api/agui", "t6", [{"text": "Oslo"}, {"answer": {"approved": True}}])
    assert first["errors"] == [] and first["outcome"] == "interrupt"
    [pending] = first["pendingInterrupts"]
    assert (
        pending["message"] == "Book Oslo?"
        and pending["responseSchema"] == schema
        and pending["reason"] == "input_required"
    )
    assert second["errors"] == [] and second["outcome"] == "success" and second["pendingInterrupts"] == []
    texts = [m["content"] for m in by_role(second, "assistant")]
    assert texts[-1].endswith("Booked.")


# -- bad input: plain HTTP --------------------------------------------------------------


def _run_body(**over: t.Any) -> dict[str, t.Any]:
    body = {
        "threadId": "th",
        "runId": "r1",
        "messages": [{"id": "u1", "role": "user", "content": "hi"}],
        "tools": [],
        "context": [],
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (_run_body(threadId="bad id!"), 422, "'threadId' must be"),
        (_run_body(runId=None), 422, "'runId' must be"),
        (_run_body(messages="hi"), 422, "not a valid AG-UI RunAgentInput (messages"),
        (_run_body(messages=[{"id": "u1", "role": "user", "content": ""}]), 422, "no user message with text"),
        (_run_body(forwardedProps={"stream": "yes"}), 422, "'forwardedProps.stream' must be true or false"),
        (_run_body(resume=[{"interruptId": "i1", "status": "resolved"}]), 409, "no pending interrupt"),
        ([1, 2], 422, "must be an AG-UI RunAgentInput object"),
    ],
)
def test_agui_bad_input_gets_a_clear_error(body: t.Any, status: int, needle: str):
    with BackgroundServer(create_app(Talker())) as srv:
        r = httpx.post(srv.url + "/api/agui", json=body, timeout=10)
    assert r.status_code == status and needle in r.json()["error"], r.text


def test_agui_path_is_configurable_and_can_be_off():
    with (
        BackgroundServer(create_app(Talker(), agui_path="/copilot")) as srv,
        BackgroundServer(create_app(Talker(), agui_path=None)) as off,
    ):
        r = httpx.post(srv.url + "/copilot", json=_run_body(), timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert '"type":"RUN_FINISHED"' in r.text
        assert httpx.post(off.url + "/api/agui", json=_run_body(), timeout=10).status_code == 404


def test_agui_example_runs():
    import os
    import sys

    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "agui_server.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("RUN_STARTED") and lines[-1].startswith("RUN_FINISHED") and "'success'" in lines[-1]
    assert any(line.startswith("TOOL_CALL_RESULT") for line in lines) and any("Celsius" in line for line in lines)


def _events(r: httpx.Response) -> list[dict[str, t.Any]]:
    return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]


def test_agui_forwarded_props_switch_streaming_and_verbose_off():
    with BackgroundServer(create_app(Agent())) as srv:
        quiet = httpx.post(
            srv.url + "/api/agui",
            json=_run_body(
                threadId="q1",
                forwardedProps={"verbose": False, "stream": False},
                messages=[{"id": "u1", "role": "user", "content": "weather in Oslo"}],
            ),
            timeout=10,
        )
        loud = httpx.post(
            srv.url + "/api/agui",
            json=_run_body(threadId="q2", messages=[{"id": "u1", "role": "user", "content": "weather in Oslo"}]),
            timeout=10,
        )
    q, v = _events(quiet), _events(loud)
    assert not any(e["type"].startswith(("TOOL_CALL", "STEP_", "REASONING")) for e in q)
    [content] = [e for e in q if e["type"] == "TEXT_MESSAGE_CONTENT"]  # the answer in one piece
    assert content["delta"] == "It is 10 degrees in Oslo."
    assert len([e for e in v if e["type"] == "TEXT_MESSAGE_CONTENT"]) > 1 and any(
        e["type"] == "TOOL_CALL_START" for e in v
    )
    assert q[-1]["type"] == v[-1]["type"] == "RUN_FINISHED"


def _asker_app() -> t.Any:
    """An app whose flow pauses (a yes/no interrupt) when asked to "book", and answers anything else."""
    from streamtap.flows import Flow, Node, interrupt

    class Ask(Node):
        def prep(self, shared: dict[str, t.Any]) -> str:
            return str(shared["q"])

        def exec(self, q: str) -> t.Iterator[str]:
            if q == "book":
                interrupt({"question": "Sure?"}, schema={"type": "boolean"})
            yield f"Answering {q}."

    return create_app(lambda: Flow(Ask(), name="Asker"), to_input=lambda r: {"q": r.last_user_text})


def _paused(c: httpx.Client, url: str, thread_id: str) -> str:
    """Run "book" in ``thread_id`` until it pauses; the interrupt's id."""
    body = _run_body(threadId=thread_id, messages=[{"id": "u1", "role": "user", "content": "book"}])
    first = _events(c.post(url + "/api/agui", json=body))
    [iid] = [i["id"] for i in first[-1]["outcome"]["interrupts"]]
    return str(iid)


def test_agui_pending_interrupt_needs_resume_and_cancelled_resume_drops_it():
    with BackgroundServer(_asker_app()) as srv, httpx.Client(timeout=10) as c:
        iid = _paused(c, srv.url, "p1")
        again = c.post(
            srv.url + "/api/agui",
            json=_run_body(threadId="p1", messages=[{"id": "u2", "role": "user", "content": "other"}]),
        )
        assert again.status_code == 409 and iid in again.json()["error"] and "resume" in again.json()["error"]
        body = _run_body(
            threadId="p1",
            messages=[{"id": "u2", "role": "user", "content": "other"}],
            resume=[{"interruptId": iid, "status": "cancelled"}],
        )
        dropped = _events(c.post(srv.url + "/api/agui", json=body))
    assert dropped[-1]["type"] == "RUN_FINISHED" and dropped[-1]["outcome"]["type"] == "success"
    assert "".join(e["delta"] for e in dropped if e["type"] == "TEXT_MESSAGE_CONTENT") == "Answering other."


def test_agui_a_refused_cancelling_resume_keeps_the_pause():
    """A resume that cancels every interrupt but is refused (no user text: 422) loses nothing: the pause stays."""
    with BackgroundServer(_asker_app()) as srv, httpx.Client(timeout=10) as c:
        iid = _paused(c, srv.url, "k1")
        refused = c.post(
            srv.url + "/api/agui",
            json=_run_body(
                threadId="k1",
                messages=[{"id": "a1", "role": "assistant", "content": "no user text here"}],
                resume=[{"interruptId": iid, "status": "cancelled"}],
            ),
        )
        assert refused.status_code == 422 and "no user message with text" in refused.json()["error"], refused.text
        still = c.post(
            srv.url + "/api/agui",
            json=_run_body(threadId="k1", messages=[{"id": "u2", "role": "user", "content": "other"}]),
        )
    assert still.status_code == 409 and iid in still.json()["error"], still.text


# -- the AG-UI client is a reader of its run -------------------------------------------


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def _text(events: list[dict[str, t.Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")


def _read_until(lines: t.Iterator[str], typ: str) -> list[dict[str, t.Any]]:
    """The events of an open AG-UI stream up to the first of type ``typ`` (bounded by the client's timeout)."""
    seen = []
    for line in lines:
        if line.startswith("data: "):
            seen.append(json.loads(line[6:]))
            if seen[-1]["type"] == typ:
                return seen
    raise AssertionError(f"the stream ended without {typ}: {seen}")


def test_agui_client_reading_its_run_keeps_detach_timeout_from_cancelling_it():
    """``detach_timeout`` cancels runs nobody reads; the AG-UI client reading its stream is a reader."""
    words = _words(8)  # 8 x 0.15 s: four times the detach timeout
    app = create_app(Talker(delay=0.15, reasoning=False), detach_timeout=0.3)
    with BackgroundServer(app) as srv:
        r = httpx.post(
            srv.url + "/api/agui",
            json=_run_body(threadId="d1", messages=[{"id": "u1", "role": "user", "content": words}]),
            timeout=30,
        )
    evs = _events(r)
    assert evs[-1]["type"] == "RUN_FINISHED" and evs[-1]["outcome"]["type"] == "success", evs[-1]
    assert _text(evs) == words
    [run] = app.state.chat.recent.values()
    assert run.status == "ok" and run.cancel_reason is None


def test_agui_run_being_read_is_not_superseded_by_a_new_message():
    """A new message on a thread whose AG-UI run a client is reading gets 409; the run goes on to its end."""
    words = _words(60)  # 3 s of words: the two refused requests take at most 0.5 s each
    app = create_app(Talker(delay=0.05, reasoning=False))
    with BackgroundServer(app) as srv, httpx.Client(timeout=30) as c:
        url = srv.url + "/api/agui"
        body = _run_body(threadId="s1", messages=[{"id": "u1", "role": "user", "content": words}])
        with c.stream("POST", url, json=body) as stream:
            lines = stream.iter_lines()
            head = _read_until(lines, "TEXT_MESSAGE_CONTENT")
            chat = c.post(
                srv.url + "/api/chat",
                json={
                    "id": "s1",
                    "messages": [{"id": "m2", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
                },
            )
            agui = c.post(
                url, json=_run_body(threadId="s1", runId="r2", messages=[{"id": "u2", "role": "user", "content": "x"}])
            )
            rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert chat.status_code == 409 and "a client is reading it" in chat.json()["error"], chat.text[:200]
    assert agui.status_code == 409 and "a client is reading it" in agui.json()["error"], agui.text[:200]
    evs = head + rest
    assert evs[-1]["type"] == "RUN_FINISHED" and evs[-1]["outcome"]["type"] == "success", evs[-1]
    assert _text(evs) == words


def test_agui_disconnect_cancels_the_run_once_with_the_agui_reason():
    """The AG-UI client going away stops its run (AGUIOptions.cancel_on_disconnect), even where the app's own
    cancel_on_disconnect and detach_timeout would also cancel it: the reason says the AG-UI client left."""
    app = create_app(Talker(delay=0.05, reasoning=False), cancel_on_disconnect=True, detach_timeout=5)
    with BackgroundServer(app) as srv, httpx.Client(timeout=30) as c:
        body = _run_body(threadId="g1", messages=[{"id": "u1", "role": "user", "content": _words(400)}])
        with c.stream("POST", srv.url + "/api/agui", json=body) as stream:
            lines = stream.iter_lines()  # held: a dropped line iterator closes the connection at once
            [started, *_] = _read_until(lines, "TEXT_MESSAGE_CONTENT")
            run = app.state.chat.runs[started["metadata"]["streamtapRunId"]]
            assert run.readers == 1
        assert wait_until(lambda: run.status is not None, 10), "the run kept going after the client left"
    assert run.status == "cancelled" and run.cancel_reason == "the AG-UI client disconnected"
    assert run.readers == 0


def test_agui_resume_naming_an_unknown_interrupt_is_refused_and_keeps_the_pause():
    """A resolved resume entry is checked against the pending interrupt ids (like the AI SDK's resume.answers)."""
    from streamtap.flows import Flow, Node, interrupt

    class Ask(Node):
        def prep(self, shared: dict[str, t.Any]) -> str:
            return str(shared["q"])

        def exec(self, q: str) -> t.Iterator[str]:
            ok = interrupt({"question": "Delete everything?"}, schema={"type": "boolean"})
            yield "Deleted everything." if ok else "Kept."

    def resume(iid: str, run_id: str = "r2") -> dict[str, t.Any]:
        return _run_body(
            threadId="w1",
            runId=run_id,
            messages=[{"id": "u1", "role": "user", "content": "go"}],
            resume=[{"interruptId": iid, "status": "resolved", "payload": True}],
        )

    app = create_app(lambda: Flow(Ask(), name="Asker"), to_input=lambda r: {"q": r.last_user_text})
    with BackgroundServer(app) as srv, httpx.Client(timeout=10) as c:
        url = srv.url + "/api/agui"
        first = _events(
            c.post(url, json=_run_body(threadId="w1", messages=[{"id": "u1", "role": "user", "content": "go"}]))
        )
        [iid] = [i["id"] for i in first[-1]["outcome"]["interrupts"]]
        wrong = _events(c.post(url, json=resume("no-such-interrupt")))
        invalid = c.post(url, json=resume("not an id!"))
        still = c.post(url, json=_run_body(threadId="w1", messages=[{"id": "u2", "role": "user", "content": "x"}]))
        right = _events(c.post(url, json=resume(iid, "r3")))
    assert wrong[-1]["type"] == "RUN_ERROR", wrong[-1]
    assert "UnknownInterruptError" in wrong[-1]["message"] and "'no-such-interrupt'" in wrong[-1]["message"]
    assert "Deleted everything." not in _text(wrong)
    assert invalid.status_code == 422 and "'not an id!'" in invalid.json()["error"], invalid.text
    assert "interruptId" in invalid.json()["error"]
    assert still.status_code == 409 and iid in still.json()["error"], still.text  # the pause is still pending
    assert right[-1]["type"] == "RUN_FINISHED" and right[-1]["outcome"]["type"] == "success", right[-1]
    assert _text(right) == "Deleted everything."
