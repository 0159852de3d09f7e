"""Two web processes and two worker processes on one real redis-server (the issue's must-show tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import typing as t

import httpx
import pytest
from cluster import Proc, chat_body, sse_data, start_web, start_worker, ui_parts

from streamtap.testing import FakeOpenAI
from streamtap_redis.testing import RedisServer

LONG = "[delay=0.03] " + " ".join(f"word{i}" for i in range(120))


@pytest.fixture
def model() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def procs() -> t.Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


async def _ui_stream(
    client: httpx.AsyncClient, method: str, url: str, parts: list[dict[str, t.Any]], **kw: t.Any
) -> None:
    async with client.stream(method, url, **kw) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for _, data in sse_data(resp.aiter_lines()):
            part = ui_parts(data)
            if part is not None:
                parts.append(part)


async def _wait_for(cond: t.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _events(
    client: httpx.AsyncClient, url: str, *, last_id: str | None = None, stop_after: int | None = None
) -> list[tuple[int, dict[str, t.Any]]]:
    headers = {"last-event-id": last_id} if last_id is not None else {}
    out: list[tuple[int, dict[str, t.Any]]] = []
    async with client.stream("GET", url, headers=headers) as resp:
        if resp.status_code == 204:
            return out
        assert resp.status_code == 200
        async for ident, data in sse_data(resp.aiter_lines()):
            assert ident is not None
            out.append((int(ident), json.loads(data)))
            if stop_after is not None and len(out) >= stop_after:
                break
    return out


async def test_chat_on_a_is_read_live_on_b_resumed_from_last_event_id_and_stopped_through_b(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    procs += [start_worker(url, prefix, model.base_url), start_worker(url, prefix, model.base_url)]
    (web_a, a), (web_b, b) = start_web(url, prefix, model.base_url), start_web(url, prefix, model.base_url)
    procs += [web_a, web_b]
    async with httpx.AsyncClient(timeout=20) as client:
        parts_a: list[dict[str, t.Any]] = []
        reader_a = asyncio.ensure_future(
            _ui_stream(client, "POST", a + "/api/chat", parts_a, json=chat_body("c1", LONG))
        )
        await _wait_for(lambda: any(p["type"] == "text-delta" for p in parts_a), 15, "text on web A")
        run_id = parts_a[0]["messageMetadata"]["runId"]

        # B follows the same run live: the chat stream (replay, then live) ...
        parts_b: list[dict[str, t.Any]] = []
        reader_b = asyncio.ensure_future(_ui_stream(client, "GET", b + "/api/chat/c1/stream", parts_b))
        await _wait_for(lambda: sum(p["type"] == "text-delta" for p in parts_b) >= 3, 10, "text on web B")

        # ... and the plain event stream: read some, drop the connection, resume from Last-Event-ID
        first = await _events(client, f"{b}/api/runs/{run_id}/events", stop_after=5)
        rest_task = asyncio.ensure_future(_events(client, f"{b}/api/runs/{run_id}/events", last_id=str(first[-1][0])))

        stopped = await client.post(b + "/api/chat/c1/stop")
        assert stopped.status_code == 200, stopped.text
        body = stopped.json()
        assert body["stopped"] is True and body["runId"] == run_id and body["status"] == "cancelled", body
        closed = await asyncio.to_thread(model.wait_for_closed, 10)
        assert closed.closed_early  # the worker's model stream was closed by the stop

        await asyncio.wait_for(asyncio.gather(reader_a, reader_b), 15)
        rest = await asyncio.wait_for(rest_task, 15)

    seqs = [s for s, _ in first + rest]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate across the reconnect"
    assert seqs[0] == 0
    ends = [ev for _, ev in rest if ev["kind"] == "end" and ev["run"]["run_id"] == run_id]
    assert len(ends) == 1 and ends[0]["status"] == "cancelled"
    assert all(ev["status"] == "cancelled" for _, ev in first + rest if ev["kind"] == "end")
    text_a = "".join(p["delta"] for p in parts_a if p["type"] == "text-delta")
    text_b = "".join(p["delta"] for p in parts_b if p["type"] == "text-delta")
    assert text_a == text_b and text_a.startswith("You said: word0 word1")
    assert parts_a[-1]["type"] in ("abort", "finish") and parts_b[-1]["type"] == parts_a[-1]["type"]
    # the chat is free again on every process
    async with httpx.AsyncClient(timeout=20) as client:
        again: list[dict[str, t.Any]] = []
        await _ui_stream(client, "POST", b + "/api/chat", again, json=chat_body("c1", "hello"))
    assert "".join(p["delta"] for p in again if p["type"] == "text-delta") == "You said: hello"


async def test_a_killed_worker_s_request_is_reclaimed_and_completed_by_the_other(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    first = start_worker(url, prefix, model.base_url, "--claim-timeout", "1.5")
    procs.append(first)
    web, a = start_web(url, prefix, model.base_url)
    procs.append(web)
    text = "[delay=0.02] " + " ".join(f"w{i}" for i in range(60))
    async with httpx.AsyncClient(timeout=30) as client:
        parts: list[dict[str, t.Any]] = []
        reader = asyncio.ensure_future(_ui_stream(client, "POST", a + "/api/chat", parts, json=chat_body("k1", text)))
        await _wait_for(lambda: sum(p["type"] == "text-delta" for p in parts) >= 3, 15, "the first worker's text")
        first.kill()  # kill -9 mid-run: no End, no XACK
        second = start_worker(url, prefix, model.base_url, "--claim-timeout", "1.5")
        procs.append(second)
        t0 = time.monotonic()
        await asyncio.wait_for(reader, 20)
        took = time.monotonic() - t0
        run_id = parts[0]["messageMetadata"]["runId"]
        events = await _events(client, f"{a}/api/runs/{run_id}/events")
    assert parts[-1]["type"] == "finish", parts[-3:]
    attempts = [ev for _, ev in events if ev["kind"] == "custom" and ev["name"] == "streamtap.attempt"]
    assert len(attempts) == 1 and attempts[0]["data"]["attempt"] == 2
    seqs = [s for s, _ in events]
    assert seqs == sorted(set(seqs))
    roots = [ev for _, ev in events if ev["kind"] == "end" and ev["run"]["run_id"] == run_id]
    assert [ev["status"] for ev in roots] == ["ok"]
    assert roots[0]["output"] == "You said: " + " ".join(f"w{i}" for i in range(60))
    assert took < 15


async def test_redis_restarted_mid_run_ends_the_stream_never_hangs(
    fresh_redis: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = fresh_redis.url
    procs.append(start_worker(url, prefix, model.base_url))
    web, a = start_web(url, prefix, model.base_url)
    procs.append(web)
    text = "[delay=0.03] " + " ".join(f"w{i}" for i in range(60))
    async with httpx.AsyncClient(timeout=30) as client:
        parts: list[dict[str, t.Any]] = []
        reader = asyncio.ensure_future(_ui_stream(client, "POST", a + "/api/chat", parts, json=chat_body("r1", text)))
        await _wait_for(lambda: sum(p["type"] == "text-delta" for p in parts) >= 3, 15, "text")
        fresh_redis.restart()  # empty: no persistence
        await asyncio.wait_for(reader, 25)  # never a hang
        run_id = parts[0]["messageMetadata"]["runId"]
    # A replay from the start by a process that was not following (a fresh store) reads what Redis holds.
    from streamtap_redis import Keys, RedisEventStore, connect

    redis_client = await connect(url)
    store = RedisEventStore(redis_client, Keys(prefix))
    replay: list[tuple[int, dict[str, t.Any]]] = []
    after = -1
    while True:
        res = await store.read(run_id, after)
        assert res is not None
        if not res.events:
            assert res.finished
            break
        replay += [(ev["seq"], dict(ev)) for ev in res.events]
        after = res.events[-1]["seq"]
    await store.aclose()
    await redis_client.aclose()
    # Documented outcome: a reader that was following loses nothing (the worker buffered while Redis was away
    # and flushed on reconnect); a replay from the start gets a gap event for what the restart wiped, then the snapshot.
    assert parts[-1]["type"] == "finish", [p["type"] for p in parts[-5:]]
    said = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert said == "You said: " + " ".join(f"w{i}" for i in range(60))
    gap, snapshot = replay[0][1], replay[1][1]
    assert gap["name"] == "streamtap.gap" and gap["data"]["from"] == 0, gap
    assert snapshot["name"] == "streamtap.snapshot"
    ends = [ev for _, ev in replay if ev["kind"] == "end" and ev["run"]["run_id"] == run_id]
    assert len(ends) <= 1


async def test_an_interrupt_raised_in_a_worker_is_answered_through_a_and_resumes_in_a_worker(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    target = "cluster_targets:approval"
    procs += [
        start_worker(url, prefix, model.base_url, target=target),
        start_worker(url, prefix, model.base_url, target=target),
    ]
    (web_a, a), (web_b, b) = (
        start_web(url, prefix, model.base_url, target=target),
        start_web(url, prefix, model.base_url, target=target),
    )
    procs += [web_a, web_b]
    async with httpx.AsyncClient(timeout=20) as client:
        first: list[dict[str, t.Any]] = []
        await _ui_stream(client, "POST", b + "/api/chat", first, json=chat_body("i1", "check the weather"))
        [pause] = [p for p in first if p["type"] == "data-interrupt"]
        assert pause["data"]["interrupts"][0]["payload"] == {"question": "Allow the weather tool?"}
        assert first[-1] == {"type": "finish", "finishReason": "other"}
        # the answer goes to the other web process; a worker resumes the paused flow
        second: list[dict[str, t.Any]] = []
        await _ui_stream(
            client, "POST", a + "/api/chat", second, json={**chat_body("i1", "yes"), "resume": {"approved": True}}
        )
    said = "".join(p["delta"] for p in second if p["type"] == "text-delta")
    assert said.startswith("Checking Paris in process ") and said.endswith("it is 22 degrees in Paris."), said
    assert "Resumed in process" in said and second[-1]["finishReason"] == "stop"


async def test_serve_with_four_web_processes_keeps_twenty_concurrent_chats_consistent(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    procs += [start_worker(url, prefix, model.base_url, "--concurrency", "20")]
    web, base = start_web(url, prefix, model.base_url, "--workers", "4")
    procs.append(web)

    async def one(i: int) -> tuple[str, str, str]:
        async with httpx.AsyncClient(timeout=30) as client:  # a connection of its own: the kernel picks the process
            parts: list[dict[str, t.Any]] = []
            await _ui_stream(
                client,
                "POST",
                base + "/api/chat",
                parts,
                json=chat_body(f"many{i}", f"[delay=0.005] chat {i} " + "x " * 20),
            )
            run_id = parts[0]["messageMetadata"]["runId"]
            replayed: list[dict[str, t.Any]] = []
            await _ui_stream(client, "GET", f"{base}/api/chat/many{i}/stream?run={run_id}", replayed)
            live = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
            again = "".join(p["delta"] for p in replayed if p["type"] == "text-delta")
            return live, again, parts[-1]["type"]

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 60)
    for i, (live, again, last) in enumerate(results):
        assert live == again == f"You said: chat {i} " + " ".join(["x"] * 20), (i, live, again)
        assert last == "finish"


async def test_run_in_process_web_processes_run_requests_and_share_them(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    (web_a, a), (web_b, b) = (
        start_web(url, prefix, model.base_url, "--run-in-process"),
        start_web(url, prefix, model.base_url),
    )
    procs += [web_a, web_b]  # no worker process: web A runs the requests itself
    async with httpx.AsyncClient(timeout=20) as client:
        parts: list[dict[str, t.Any]] = []
        await _ui_stream(client, "POST", b + "/api/chat", parts, json=chat_body("rip", "hello there"))
        run_id = parts[0]["messageMetadata"]["runId"]
        again: list[dict[str, t.Any]] = []
        await _ui_stream(client, "GET", f"{a}/api/chat/rip/stream?run={run_id}", again)
    said = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert said == "You said: hello there" == "".join(p["delta"] for p in again if p["type"] == "text-delta")


async def test_a_killed_web_process_s_stream_is_resumed_on_another(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    procs.append(start_worker(url, prefix, model.base_url))
    (web_a, a), (web_b, b) = start_web(url, prefix, model.base_url), start_web(url, prefix, model.base_url)
    procs += [web_a, web_b]
    text = "[delay=0.02] " + " ".join(f"v{i}" for i in range(50))
    async with httpx.AsyncClient(timeout=20) as client:
        parts: list[dict[str, t.Any]] = []
        reader = asyncio.ensure_future(_ui_stream(client, "POST", a + "/api/chat", parts, json=chat_body("kw", text)))
        await _wait_for(lambda: sum(p["type"] == "text-delta" for p in parts) >= 2, 15, "text on web A")
        run_id = parts[0]["messageMetadata"]["runId"]
        seen = await _events(client, f"{a}/api/runs/{run_id}/events", stop_after=5)
        web_a.kill()  # kill -9 of the web process the client was reading from
        with contextlib.suppress(httpx.HTTPError):
            await asyncio.wait_for(reader, 10)
        rest = await _events(client, f"{b}/api/runs/{run_id}/events", last_id=str(seen[-1][0]))
    seqs = [s for s, _ in seen + rest]
    assert seqs == list(range(len(seqs))), "gap or duplicate after the web process died"
    end = rest[-1][1]
    assert end["kind"] == "end" and end["run"]["run_id"] == run_id and end["status"] == "ok"
    assert end["output"] == "You said: " + " ".join(f"v{i}" for i in range(50))


async def test_a_worker_s_spans_continue_the_caller_s_trace(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    from streamtap_otlp.testing import OtlpReceiver

    with OtlpReceiver(grpc=False, metrics=False) as receiver:
        worker = start_worker(
            redis_server.url, prefix, model.base_url,
            environ={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint, "OTEL_METRICS_EXPORTER": "none"},
        )  # fmt: skip
        procs.append(worker)
        web, a = start_web(redis_server.url, prefix, model.base_url)
        procs.append(web)
        trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        async with httpx.AsyncClient(timeout=20) as client:
            parts: list[dict[str, t.Any]] = []
            headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
            await _ui_stream(client, "POST", a + "/api/chat", parts, json=chat_body("tr", "hello"), headers=headers)
        assert parts[-1]["type"] == "finish"
        worker.stop()  # SIGTERM: the worker flushes its spans
        spans = await asyncio.to_thread(receiver.wait_for_spans, 1, 15)
    assert {s.trace_id for s in spans} == {trace_id}
    roots = [s for s in spans if s.parent_span_id == span_id]
    assert len(roots) == 1 and roots[0].name.startswith("chat")


def _agui_body(thread_id: str, text: str, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "threadId": thread_id,
        "runId": "r-" + text.replace(" ", "-"),
        "messages": [{"id": "u-" + text.replace(" ", "-"), "role": "user", "content": text}],
        "tools": [],
        "context": [],
        **extra,
    }


async def _agui_events(client: httpx.AsyncClient, url: str, body: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    resp = await client.post(url, json=body)
    assert resp.status_code == 200, resp.text
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]


async def test_an_agui_interrupt_raised_in_a_worker_is_pending_on_every_web_process_and_answered_through_another(
    redis_server: RedisServer, prefix: str, model: FakeOpenAI, procs: list[Proc]
) -> None:
    url = redis_server.url
    target = "cluster_targets:approval"
    procs.append(start_worker(url, prefix, model.base_url, target=target))
    (web_a, a), (web_b, b) = (
        start_web(url, prefix, model.base_url, target=target),
        start_web(url, prefix, model.base_url, target=target),
    )
    procs += [web_a, web_b]
    async with httpx.AsyncClient(timeout=20) as client:
        first = await _agui_events(client, b + "/api/agui", _agui_body("g1", "check the weather"))
        assert first[-1]["type"] == "RUN_FINISHED" and first[-1]["outcome"]["type"] == "interrupt", first[-1]
        [iid] = [i["id"] for i in first[-1]["outcome"]["interrupts"]]
        # the pause is known to the other web process: a new input without 'resume' is refused there, naming it
        refused = await client.post(a + "/api/agui", json=_agui_body("g1", "something else"))
        assert refused.status_code == 409 and iid in refused.json()["error"], refused.text
        resume = [{"interruptId": iid, "status": "resolved", "payload": {"approved": True}}]
        second = await _agui_events(client, a + "/api/agui", _agui_body("g1", "yes", resume=resume))
        said = "".join(e["delta"] for e in second if e["type"] == "TEXT_MESSAGE_CONTENT")
        assert "it is 22 degrees in Paris." in said and second[-1]["outcome"]["type"] == "success", second[-1]
        # a new pause, then stop through the other process: "never mind" drops it
        third = await _agui_events(client, a + "/api/agui", _agui_body("g2", "check again"))
        assert third[-1]["outcome"]["type"] == "interrupt", third[-1]
        stopped = await client.post(b + "/api/agui/g2/stop")
        assert stopped.status_code == 200, stopped.text
        answer = stopped.json()
        assert answer["stopped"] is True and isinstance(answer["dismissed"], str) and answer["dismissed"], answer
        again = await client.post(a + "/api/agui", json=_agui_body("g2", "something else", resume=resume))
        assert again.status_code == 409 and "no pending interrupt" in again.json()["error"], again.text
