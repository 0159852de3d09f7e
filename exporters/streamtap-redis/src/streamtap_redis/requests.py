"""Run requests: what a web process puts on the requests stream for a worker, as JSON (never pickle)."""

from __future__ import annotations

import dataclasses
import json
import re
import typing as t

__all__ = ["BadRunRequest", "RunRequest", "parse_request"]

_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,128}")
VERSION = 1


class BadRunRequest(ValueError):
    """A request a worker cannot run; ``run_id`` / ``chat_id`` when they could be read (to tell the chat)."""

    def __init__(self, reason: str, *, run_id: str | None = None, chat_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.run_id = run_id
        self.chat_id = chat_id


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """One run for a worker.

    Attributes:
        run_id: the root run's id (the web process handed it out already; the log's key).
        chat_id: the conversation, or ``None`` for a run not started by a chat.
        input: the module's input (JSON).
        resume: ``{"record": pause record, "answer": answer}`` to resume an interrupted run.
        trace: W3C trace context (``traceparent``, ``tracestate``) of the caller.
    """

    run_id: str
    chat_id: str | None = None
    input: t.Any = None
    resume: t.Mapping[str, t.Any] | None = None
    trace: t.Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """The request as the JSON a worker parses."""
        body = {
            "v": VERSION,
            "run_id": self.run_id,
            "chat_id": self.chat_id,
            "input": self.input,
            "resume": self.resume,
            "trace": dict(self.trace),
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False)


def parse_request(raw: bytes | str) -> RunRequest:
    """Parse a request's JSON.

    Raises:
        BadRunRequest: naming what is wrong (with the run and chat ids when they could be read).
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRunRequest(f"the request is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise BadRunRequest(f"the request must be a JSON object, not {type(body).__name__}")
    run_id = body.get("run_id")
    chat_id = body.get("chat_id")
    ok_run = isinstance(run_id, str) and _ID.fullmatch(run_id) is not None
    ok_chat = chat_id is None or (isinstance(chat_id, str) and _ID.fullmatch(chat_id) is not None)
    ids = {"run_id": run_id if ok_run else None, "chat_id": chat_id if ok_chat and chat_id else None}
    if body.get("v") != VERSION:
        raise BadRunRequest(f"unknown request version {body.get('v')!r} (this worker reads version {VERSION})", **ids)
    if not ok_run:
        raise BadRunRequest(f"'run_id' must be 1-128 of letters, digits, '_-.:', got {str(run_id)[:80]!r}", **ids)
    if not ok_chat:
        raise BadRunRequest(
            f"'chat_id' must be null or 1-128 of letters, digits, '_-.:', got {str(chat_id)[:80]!r}", **ids
        )
    resume = body.get("resume")
    if resume is not None and not (
        isinstance(resume, dict) and isinstance(resume.get("record"), dict) and "answer" in resume
    ):
        raise BadRunRequest("'resume' must be null or {'record': {...}, 'answer': ...}", **ids)
    trace = body.get("trace") or {}
    if not (isinstance(trace, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in trace.items())):
        raise BadRunRequest("'trace' must be an object of header strings (traceparent, tracestate)", **ids)
    assert isinstance(run_id, str)
    return RunRequest(run_id, chat_id or None, body.get("input"), resume, trace)
