"""GET /api/runs/{run_id}/events: plain SSE of streamtap events, resumable with Last-Event-ID."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import Agent, Talker, chat_body, parse_frames


def start_run(client: httpx.Client, url: str, text: str, chat_id: str) -> str:
    """Start a chat run, read its start part, disconnect; return its run id."""
    with client.stream("POST", url + "/api/chat", json=chat_body(text, chat_id=chat_id)) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                part = json.loads(line[6:])
                if part["type"] == "start":
                    return part["messageMetadata"]["runId"]
    raise AssertionError("no start part")


def read_events(
    client: httpx.Client, url: str, run_id: str, *, last_id: int | None = None, stop_after: int | None = None, **params
):
    """Read the events endpoint; stop after ``stop_after`` events (a disconnect). Returns (status, events, retry)."""
    headers = {} if last_id is None else {"last-event-id": str(last_id)}
    events, retry, buf = [], None, ""
    with client.stream("GET", f"{url}/api/runs/{run_id}/events", headers=headers, params=params) as r:
        if r.status_code != 200:
            return r.status_code, [], None
        for text in r.iter_text():
            buf += text
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                for f in parse_frames(block + "\n\n"):
                    if "retry" in f:
                        retry = int(f["retry"])
                    if "data" in f:
                        ev = json.loads(f["data"])
                        assert int(f["id"]) == ev["seq"]
                        events.append(ev)
                        if stop_after is not None and len(events) >= stop_after:
                            return 200, events, retry
    return 200, events, retry


def test_full_stream_ids_are_seqs_and_finished_runs_answer_204():
    with BackgroundServer(create_app(Agent())) as srv, httpx.Client(timeout=20) as client:
        rid = start_run(client, srv.url, "weather in Paris", "ev1")
        status, events, retry = read_events(client, srv.url, rid)
        assert status == 200 and retry == 1000
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[0]["kind"] == "start" and events[-1]["kind"] == "end" and events[-1]["run"]["run_id"] == rid
        kinds = {e["kind"] for e in events}
        assert kinds == {"start", "chunk", "tool", "custom", "end"}
        # Reconnecting after the last event of a finished run: 204 (EventSource stops reconnecting).
        assert read_events(client, srv.url, rid, last_id=events[-1]["seq"])[0] == 204
        # The user-facing view: root start/end, text chunks and custom events only.
        _, user, _ = read_events(client, srv.url, rid, view="user")
        assert {e["kind"] for e in user} == {"start", "chunk", "custom", "end"}
        assert all(e["channel"] == "text" for e in user if e["kind"] == "chunk")
        assert all(e["run"]["run_id"] == rid for e in user if e["kind"] in ("start", "end"))
        assert read_events(client, srv.url, "0123456789abcdef")[0] == 404
        bad = client.get(f"{srv.url}/api/runs/{rid}/events", headers={"last-event-id": "x"})
        assert bad.status_code == 400 and "whole number" in bad.json()["error"]
        assert client.get(f"{srv.url}/api/runs/{rid}/events?view=all").status_code == 422


def test_last_event_id_resume_is_gap_free_under_random_disconnects():
    words = " ".join(f"w{i}" for i in range(40))
    with BackgroundServer(create_app(Talker(delay=0.002))) as srv, httpx.Client(timeout=20) as client:
        counter = iter(range(10_000))

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
        @given(cuts=st.lists(st.integers(min_value=1, max_value=25), min_size=1, max_size=6))
        def check(cuts: list[int]) -> None:
            rid = start_run(client, srv.url, words, f"prop{next(counter)}")
            seen: list[dict] = []
            last = None
            for cut in cuts:  # disconnect after `cut` events, reconnect from the last id seen
                status, got, _ = read_events(client, srv.url, rid, last_id=last, stop_after=cut)
                if status == 204:
                    break
                seen += got
                if got:
                    last = got[-1]["seq"]
            status, rest, _ = read_events(client, srv.url, rid, last_id=last)
            seen += rest
            seqs = [e["seq"] for e in seen]
            assert seqs == list(range(len(seqs))), "gap or duplicate"
            assert seen[-1]["kind"] == "end" and seen[-1]["run"]["run_id"] == rid
            text = "".join(e["delta"] for e in seen if e["kind"] == "chunk" and e["channel"] == "text")
            assert text == words

        check()
