"""Runs nobody reads: a new message supersedes them, ``detach_timeout`` ends them, every cancel says why."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import typing as t

import pytest

from streamtap.exceptions import UsageError
from streamtap.web import create_app

from .helpers import Talker, chat_body, check_ui_stream, parse_frames, read_sse
from .test_app import by_type, read_until

WORDS = " ".join(f"w{i}" for i in range(400))


class Watched(Talker):
    """A slow talker that tells the test (across threads) when a run of it ended, and how."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__(delay=delay, reasoning=False)
        self.ended = threading.Event()
        self.cancelled_runs = 0

    async def forward(self, text: str) -> t.AsyncIterator[t.Any]:
        try:
            async for piece in super().forward(text):
                yield piece
        except asyncio.CancelledError:
            self.cancelled_runs += 1
            raise
        finally:
            self.ended.set()


async def end_of(client, url: str, run_id: str) -> dict[str, t.Any]:
    """The root End of a finished run, from its events endpoint (errors as clients see them: ``Type: message``)."""
    events = await read_sse(client, "GET", f"{url}/api/runs/{run_id}/events")
    end = json.loads(events.frames[-1]["data"])
    assert end["kind"] == "end" and end["run"]["run_id"] == run_id, end
    return end


async def open_and_leave(client, url: str, chat_id: str, text: str = WORDS) -> str:
    """Start a run, read its first text delta, and disconnect (useChat's stop()); returns the run id."""
    async with client.stream("POST", url + "/api/chat", json=chat_body(text, chat_id=chat_id)) as r:
        seen = await read_until(r.aiter_text(), lambda p: p["type"] == "text-delta")
    return str(seen[0]["messageMetadata"]["runId"])


async def test_stop_says_stop_request_on_the_end_and_the_abort(serve, client):
    srv = serve(Talker(delay=0.02, reasoning=False))
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(WORDS, chat_id="stopped")) as r:
        it = r.aiter_text()
        seen = await read_until(it, lambda p: p["type"] == "text-delta")
        assert (await client.post(srv.url + "/api/chat/stopped/stop")).json()["status"] == "cancelled"
        rest = "".join([chunk async for chunk in it])
    parts = seen + [json.loads(f["data"]) for f in parse_frames(rest) if f.get("data") not in (None, "[DONE]")]
    assert parts[-1] == {"type": "abort", "reason": "stop request"}
    end = await end_of(client, srv.url, seen[0]["messageMetadata"]["runId"])
    assert end["status"] == "cancelled" and end["error"] == {
        "type": "RunCancelled",
        "message": "RunCancelled: stop request",
    }


async def test_a_new_message_supersedes_a_run_nobody_reads(serve, client):
    talker = Watched()
    srv = serve(talker)
    first = await open_and_leave(client, srv.url, "again")
    # The reader aborted (as useChat's stop() does): the next message is not refused with 409.
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("the new question", chat_id="again"))
    assert res.status == 200, res.frames
    check_ui_stream(res.parts)
    assert "".join(p["delta"] for p in by_type(res.parts, "text-delta")) == "the new question"
    assert res.parts[-1]["type"] == "finish"
    end = await end_of(client, srv.url, first)
    assert end["status"] == "cancelled" and end["error"] == {
        "type": "RunCancelled",
        "message": "RunCancelled: superseded by a new message",
    }
    assert talker.cancelled_runs == 1


async def test_a_new_message_while_a_client_reads_the_run_is_409(serve, client):
    srv = serve(Talker(delay=0.02, reasoning=False))
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(WORDS, chat_id="busy")) as r:
        reading = r.aiter_text()  # kept: a dropped iterator closes the response
        await read_until(reading, lambda p: p["type"] == "text-delta")
        again = await client.post(srv.url + "/api/chat", json=chat_body("me too", chat_id="busy"))
        assert again.status_code == 409
        assert "a client is reading it" in again.json()["error"] and "/api/chat/busy/stop" in again.json()["error"]
        await client.post(srv.url + "/api/chat/busy/stop")
    # a regeneration never supersedes: it is 409 whoever reads
    run_id = await open_and_leave(client, srv.url, "regen")
    regen = await client.post(
        srv.url + "/api/chat", json=chat_body("again", chat_id="regen", trigger="regenerate-message")
    )
    assert regen.status_code == 409 and run_id in regen.json()["error"]
    await client.post(srv.url + "/api/chat/regen/stop")


async def test_detach_timeout_cancels_a_run_nobody_reads(serve, client):
    talker = Watched()
    srv = serve(talker, detach_timeout=0.3)
    left = time.monotonic()
    run_id = await open_and_leave(client, srv.url, "detached")
    assert talker.ended.wait(10), "the unread run was not cancelled"
    waited = time.monotonic() - left
    end = await end_of(client, srv.url, run_id)
    assert end["status"] == "cancelled" and end["error"] == {
        "type": "RunCancelled",
        "message": "RunCancelled: client gone",
    }
    assert 0.3 <= waited < 5, waited


async def test_detach_timeout_spares_a_run_that_is_read_again(serve, client):
    srv = serve(Talker(delay=0.005, reasoning=False), detach_timeout=0.5)
    words = " ".join(f"w{i}" for i in range(120))
    await open_and_leave(client, srv.url, "back", words)
    res = await read_sse(client, "GET", srv.url + "/api/chat/back/stream")  # a reload reads it to the end
    assert res.parts[-1]["type"] == "finish"
    assert "".join(p["delta"] for p in by_type(res.parts, "text-delta")) == words


async def test_cancel_on_disconnect_says_client_gone(serve, client):
    srv = serve(Talker(delay=0.02, reasoning=False), cancel_on_disconnect=True)
    run_id = await open_and_leave(client, srv.url, "gone-now")
    end = await end_of(client, srv.url, run_id)
    assert end["status"] == "cancelled" and end["error"] == {
        "type": "RunCancelled",
        "message": "RunCancelled: client gone",
    }


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_detach_timeout_must_be_positive_seconds(bad):
    with pytest.raises(UsageError, match="detach_timeout must be a positive number of seconds") as info:
        create_app(Talker(), detach_timeout=bad)
    assert repr(bad) in str(info.value)


async def test_the_cancel_reason_is_on_the_span(serve, client):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamtap.tracing import TracingSubscriber

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = TracingSubscriber(provider).subscribe()
    try:
        srv = serve(Watched(), tracing=tracing)
        first = await open_and_leave(client, srv.url, "traced")
        res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("next", chat_id="traced"))
        assert res.parts[-1]["type"] == "finish"
    finally:
        tracing.unsubscribe()
        provider.shutdown()
    [span] = [s for s in exporter.get_finished_spans() if s.attributes.get("streamtap.run.id") == first]
    assert span.attributes["streamtap.status"] == "cancelled"
    assert span.attributes["streamtap.cancel.reason"] == "superseded by a new message"


async def test_a_runs_end_is_stored_only_once_its_chat_is_free_and_its_pause_pending(client):
    """A client that has read a run's End may act at once: the chat no longer counts the run as going.

    The pump once freed the chat after storing the End: a client answering the
    End at once (AG-UI's next ``RunAgentInput``) saw the run still active, got no
    409 for its pending interrupt, and had its message taken as the answer.
    """
    from streamtap.flows import Flow, Node, interrupt
    from streamtap.web.server import BackgroundServer
    from streamtap.web.store import MemoryEventStore

    class Ask(Node):
        def exec(self, q: t.Any) -> t.Iterator[str]:
            interrupt({"question": "Sure?"}, schema={"type": "boolean"})
            yield "booked"

    seen: list[tuple[bool, bool]] = []

    class Watching(MemoryEventStore):
        async def append(self, run_id: str, event: dict[str, t.Any]) -> None:
            if event["kind"] == "end" and event["run"]["run_id"] == run_id:
                conv = app.state.chat.conversations["held"]
                seen.append((conv.active is None, app.state.chat.has_pending("held")))
            await super().append(run_id, event)

    app = create_app(lambda: Flow(Ask(), name="Asker"), store=Watching())
    with BackgroundServer(app) as srv:
        events = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("book", chat_id="held"))
    assert events.frames[-1]["data"] == "[DONE]"
    assert seen == [(True, True)]
