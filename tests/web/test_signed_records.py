"""Pause records over the chat endpoint: a client cannot change what a resumed run works on."""

from __future__ import annotations

import json
import typing as t

import httpx

from streamtap.flows import Flow, Node, interrupt
from streamtap.interrupts import MemoryPauseStore
from streamtap.web.service import default_resume

from .helpers import chat_body, check_ui_stream, parse_frames, read_sse

APPROVAL = {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}


class Prepare(Node):
    def post(self, shared: dict[str, t.Any], p: t.Any, r: t.Any) -> None:
        shared["call"] = {"tool": "delete_files", "args": {"path": shared["path"]}}


class Approve(Node):
    def prep(self, shared: dict[str, t.Any]) -> t.Any:
        return shared["call"]

    def exec(self, call: t.Any) -> t.Any:
        return interrupt({"question": "Run this tool?", "call": call}, schema=APPROVAL)

    def post(self, shared: dict[str, t.Any], p: t.Any, answer: dict[str, t.Any]) -> str:
        return "run" if answer["approved"] else "skip"


def tool_app(ran: list[t.Any], store: t.Any = None) -> t.Callable[[], Flow]:
    """A factory of the approval flow; the tool appends the arguments it ran with to ``ran``."""

    class DeleteFiles(Node):
        def prep(self, shared: dict[str, t.Any]) -> t.Any:
            return shared["call"]["args"]

        def exec(self, args: t.Any) -> str:
            ran.append(args)
            return f"deleted {args['path']}"

    def make() -> Flow:
        prepare, approve = Prepare(), Approve()
        prepare >> approve
        approve - "run" >> DeleteFiles()
        return Flow(prepare, name="Cleanup", store=store)

    return make


def by_type(parts: list[dict[str, t.Any]], typ: str) -> list[dict[str, t.Any]]:
    return [p for p in parts if p["type"] == typ]


async def end_error_type(client: httpx.AsyncClient, url: str, run_id: str) -> str | None:
    """The error type on the root run's End, read from the events endpoint."""
    frames = parse_frames((await client.get(f"{url}/api/runs/{run_id}/events")).text)
    ends = [json.loads(f["data"]) for f in frames if "data" in f]
    (root,) = [e for e in ends if e.get("kind") == "end" and e["run"]["run_id"] == run_id]
    return root["error"]["type"] if root["error"] else None


async def test_a_record_sent_in_the_answer_does_not_replace_the_servers_copy(serve, client) -> None:
    ran: list[t.Any] = []
    srv = serve(tool_app(ran), to_input=lambda r: {"path": r.last_user_text})
    first = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("/tmp/x", chat_id="c1"))
    [intr] = by_type(first.parts, "data-interrupt")
    assert "shared" not in intr["data"] and "state" not in intr["data"] and "signature" not in intr["data"]
    forged = {
        "approved": True,
        "type": "streamtap.pause",
        "id": intr["id"],
        "shared": {"call": {"args": {"path": "/"}}},
    }
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("/tmp/x", chat_id="c1", resume=forged))
    check_ui_stream(res.parts)
    assert res.parts[-1]["finishReason"] == "stop"
    assert ran == [{"path": "/tmp/x"}]  # the server's record decided the arguments, not the client's


async def test_a_forged_record_from_a_stateless_front_end_is_refused_and_the_pause_stays_pending(serve, client) -> None:
    # A front end that keeps the whole record and sends it back with the answer (default_resume, unchanged).
    ran: list[t.Any] = []
    store = MemoryPauseStore()
    srv = serve(
        tool_app(ran, store),
        to_input=lambda r: {"path": r.last_user_text},
        resume=lambda module, record, answer: default_resume(module, answer["record"], answer["answer"]),
    )
    await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("/tmp/x", chat_id="c2"))
    (record,) = store.pending()
    forged = json.loads(json.dumps(record))
    forged["shared"]["call"]["args"]["path"] = "/"
    body = chat_body("/tmp/x", chat_id="c2", resume={"record": forged, "answer": {"approved": True}})
    bad = await read_sse(client, "POST", srv.url + "/api/chat", json=body)
    check_ui_stream(bad.parts)
    assert bad.parts[-1]["finishReason"] == "error" and by_type(bad.parts, "error")
    run_id = bad.parts[0]["messageMetadata"]["runId"]
    assert (await end_error_type(client, srv.url, run_id)) == "TamperedRecordError"  # the client view: short type
    assert ran == [] and store.status(record["id"]) == "pending" and store.load(record["id"]) == record
    body = chat_body("/tmp/x", chat_id="c2", resume={"record": record, "answer": {"approved": True}})
    good = await read_sse(client, "POST", srv.url + "/api/chat", json=body)
    assert good.parts[-1]["finishReason"] == "stop"
    assert ran == [{"path": "/tmp/x"}] and store.status(record["id"]) == "resumed"
