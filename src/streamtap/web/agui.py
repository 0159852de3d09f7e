"""AG-UI 1.0 over SSE: ``POST /api/agui`` runs the app's module and streams AG-UI events.

`AG-UI <https://docs.ag-ui.com>`_ is the protocol of CopilotKit and of
assistant-ui's AG-UI runtime. The endpoint takes a ``RunAgentInput``
(``threadId``, ``runId``, ``messages``, ``resume``...) and answers with SSE
``data: <event JSON>`` frames built with the official ``ag-ui-protocol``
package (its pydantic event models and its ``EventEncoder``), so the field
names and the camelCase wire form are the protocol's own.

The same conversations and runs serve both protocols: ``threadId`` is the
chat id of :class:`~streamtap.web.service.ChatService`, and the events are
mapped from the same per-run buffer. :class:`AGUIMapper` translates the
parts of the :class:`~streamtap.web.ui_stream.UIMessageMapper` (which
already decides what is user-facing text, opens and closes every part, and
never shows text twice) into AG-UI events:

========================================  ================================================
streamtap                                 AG-UI
========================================  ================================================
the root run starts                       ``RUN_STARTED`` (``metadata.streamtapRunId``, ``traceId``)
a child run starts / ends (verbose)       ``STEP_STARTED`` / ``STEP_FINISHED`` (``stepName`` = run name)
``text`` chunks                           ``TEXT_MESSAGE_START`` / ``_CONTENT`` / ``_END``
``reasoning`` chunks                      ``REASONING_START``, ``REASONING_MESSAGE_*``, ``REASONING_END``
``tool_args`` chunks, ``Tool`` requested  ``TOOL_CALL_START`` / ``TOOL_CALL_ARGS`` / ``TOOL_CALL_END``
``Tool`` result / error                   ``TOOL_CALL_RESULT`` (an error: ``content`` says so, ``error`` set)
``emit(name, data)``                      ``CUSTOM {name, value}``
the root ends ``ok``                      ``MESSAGES_SNAPSHOT`` then ``RUN_FINISHED`` (``outcome.type = "success"``)
the root ends ``interrupted``             ``MESSAGES_SNAPSHOT`` then ``RUN_FINISHED`` (``outcome.type = "interrupt"``)
the root ends ``cancelled``               ``MESSAGES_SNAPSHOT`` then ``RUN_FINISHED`` (``outcome.type = "cancelled"``)
the root ends ``error``                   ``RUN_ERROR {message, code}``
========================================  ================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import typing as t

from .agui_input import RunInput, ag_ui_core, parse_run_input
from .chat import BadRequest, valid_id
from .service import resolved, stop_answer
from .store import EXPIRED, follow
from .ui_stream import UIMessageMapper

if t.TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .client_errors import ClientErrors
    from .service import ActiveRun, ChatService

__all__ = ["AGUI_GONE", "AGUIMapper", "AGUIOptions", "RunInput", "agui_routes", "parse_run_input"]

AGUI_GONE = "the AG-UI client disconnected"
"""Cancel reason: the AG-UI client went away before the run's end (``AGUIOptions.cancel_on_disconnect``)."""

AGUIEvent = t.Any
"""An ``ag_ui.core`` event model (``RunStartedEvent``, ``TextMessageContentEvent``...)."""


class AGUIMapper:
    """Map the events of one root run (``Event.to_dict()`` dicts) to AG-UI events.

    Call :meth:`begin` once (``RUN_STARTED``), :meth:`feed` with every event
    in ``seq`` order, and :meth:`close` when the stream must end without the
    root's ``End``. Each returns a list of ``ag_ui.core`` event models; after
    the last one (``RUN_FINISHED`` or ``RUN_ERROR``) :attr:`done` is true.
    Every message, tool call, reasoning span and step opened is closed before
    the run finishes, as ``@ag-ui/client``'s verifier demands.

    Args:
        thread_id: the AG-UI ``threadId``.
        run_id: the AG-UI ``runId`` the client asked for.
        root_id: the streamtap root run id whose events are mapped.
        input_messages: the request's messages (JSON), the start of the
            ``MESSAGES_SNAPSHOT`` sent before ``RUN_FINISHED``.
        verbose: include steps, tool calls and reasoning (``False``: text only).
        stream_text: stream text as it comes (``False``: each message in one delta).
        metadata: ``RUN_STARTED.metadata`` (or a function returning it, called by :meth:`begin`).
        describe_error: what a client is shown for a failure (see
            :data:`streamtap.web.ui_stream.ErrorText`).
        cancel_reason: why the run was cancelled, when the ``End`` does not say.
    """

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        root_id: str,
        *,
        input_messages: t.Sequence[t.Mapping[str, t.Any]] = (),
        verbose: bool = True,
        stream_text: bool = True,
        metadata: t.Mapping[str, t.Any] | t.Callable[[], t.Mapping[str, t.Any] | None] | None = None,
        describe_error: t.Callable[..., str] | None = None,
        cancel_reason: t.Callable[[], str | None] | None = None,
    ) -> None:
        self.core = ag_ui_core()
        self.thread_id = thread_id
        self.run_id = run_id
        self.root_id = root_id
        self.metadata = metadata
        self.done = False
        self._ui = UIMessageMapper(
            root_id,
            verbose=verbose,
            stream_text=stream_text,
            describe_error=describe_error,
            cancel_reason=cancel_reason,
        )
        self._messages: list[dict[str, t.Any]] = [dict(m) for m in input_messages]
        self._by_id: dict[str, dict[str, t.Any]] = {}
        self._steps: dict[str, str] = {}  # streamtap run id -> open step name
        self._step_names: set[str] = set()
        self._tool_args: dict[str, str] = {}  # call id -> arguments streamed so far
        self._tool_parent: dict[str, dict[str, t.Any]] = {}  # call id -> assistant message holding it
        self._interrupt: dict[str, t.Any] | None = None
        self._error: str | None = None
        self._last_text: dict[str, t.Any] | None = None  # the last assistant text message (tool calls attach to it)

    # -- lifecycle ------------------------------------------------------------

    def begin(self) -> list[AGUIEvent]:
        """``RUN_STARTED``."""
        metadata = self.metadata() if callable(self.metadata) else self.metadata
        meta = {"streamtapRunId": self.root_id, **(metadata or {})}
        return [self.core.RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, metadata=meta)]

    def close(self, reason: str = "the run's event stream ended before the run did") -> list[AGUIEvent]:
        """End the stream now (no ``End`` of the root arrived): close what is open, then ``RUN_ERROR``."""
        if self.done:
            return []
        out = self._close_steps()
        out += [e for p in self._ui.close(reason) for e in self._part(p)]
        if not self.done:  # the UI mapper's close always ends with error + finish: already mapped
            out.append(self.core.RunErrorEvent(message=reason, code="stream_ended"))
            self.done = True
        return out

    def feed(self, ev: t.Mapping[str, t.Any]) -> list[AGUIEvent]:
        """The AG-UI events for one streamtap event (often none)."""
        if self.done:
            return []
        out: list[AGUIEvent] = []
        for part in self._ui.feed(ev):
            out += self._part(part)
        return out

    # -- UI message parts -> AG-UI events ------------------------------------

    def _mid(self, part_id: str) -> str:
        return f"{self.root_id}-{part_id}"

    def _part(self, p: t.Mapping[str, t.Any]) -> list[AGUIEvent]:
        c = self.core
        typ = p["type"]
        if typ == "text-start":
            mid = self._mid(p["id"])
            msg = {"id": mid, "role": "assistant", "content": ""}
            self._add(msg)
            self._last_text = msg
            return [c.TextMessageStartEvent(message_id=mid, role="assistant")]
        if typ == "text-delta":
            mid = self._mid(p["id"])
            self._by_id[mid]["content"] += p["delta"]
            return [c.TextMessageContentEvent(message_id=mid, delta=p["delta"])]
        if typ == "text-end":
            return [c.TextMessageEndEvent(message_id=self._mid(p["id"]))]
        if typ == "reasoning-start":
            mid = self._mid(p["id"])
            self._add({"id": mid, "role": "reasoning", "content": ""})
            return [
                c.ReasoningStartEvent(message_id=mid),
                c.ReasoningMessageStartEvent(message_id=mid, role="reasoning"),
            ]
        if typ == "reasoning-delta":
            mid = self._mid(p["id"])
            self._by_id[mid]["content"] += p["delta"]
            return [c.ReasoningMessageContentEvent(message_id=mid, delta=p["delta"])]
        if typ == "reasoning-end":
            mid = self._mid(p["id"])
            return [c.ReasoningMessageEndEvent(message_id=mid), c.ReasoningEndEvent(message_id=mid)]
        if typ == "tool-input-start":
            return self._tool_start(self._mid(p["toolCallId"]), p["toolName"], p["toolCallId"])
        if typ == "tool-input-delta":
            call_id = self._mid(p["toolCallId"])
            self._tool_args[call_id] = self._tool_args.get(call_id, "") + p["inputTextDelta"]
            self._call(call_id)["function"]["arguments"] = self._tool_args[call_id]
            return [c.ToolCallArgsEvent(tool_call_id=call_id, delta=p["inputTextDelta"])]
        if typ == "tool-input-available":
            call_id = self._mid(p["toolCallId"])
            out: list[AGUIEvent] = []
            # Argument chunks do not carry the tool's name: a call streamed before its Tool event
            # started as "tool"; the name is right in the MESSAGES_SNAPSHOT that ends the run.
            self._call(call_id)["function"]["name"] = p["toolName"]
            if not self._tool_args.get(call_id) and p.get("input") is not None:
                text = json.dumps(p["input"], ensure_ascii=False, default=str)
                self._tool_args[call_id] = text
                self._call(call_id)["function"]["arguments"] = text
                out.append(c.ToolCallArgsEvent(tool_call_id=call_id, delta=text))
            out.append(c.ToolCallEndEvent(tool_call_id=call_id))
            return out
        if typ in ("tool-output-available", "tool-output-error"):
            call_id = self._mid(p["toolCallId"])
            mid = self._mid(f"result-{p['toolCallId']}")
            error = p.get("errorText") if typ == "tool-output-error" else None
            content = f"Error: {error}" if error is not None else _as_text(p.get("output"))
            msg = {"id": mid, "role": "tool", "toolCallId": call_id, "content": content}
            if error is not None:
                msg["error"] = error
            self._add(msg)
            return [
                c.ToolCallResultEvent(
                    message_id=mid,
                    tool_call_id=call_id,
                    content=content,
                    role="tool",
                    **({"error": error} if error else {}),
                )
            ]
        if typ == "data-run":
            return self._run_part(p["data"])
        if typ == "data-interrupt":
            self._interrupt = dict(p["data"])
            return []
        if typ.startswith("data-"):
            return [c.CustomEvent(name=typ[5:], value=p.get("data"))]
        if typ == "error":
            self._error = p["errorText"]
            return []
        if typ == "finish":
            return self._finish(p.get("finishReason"))
        if typ == "abort":
            return self._finished(c.RunFinishedCancelledOutcome())
        return []  # start, start-step, finish-step, message-metadata: nothing in AG-UI

    def _tool_start(self, call_id: str, name: str, model_call_id: str) -> list[AGUIEvent]:
        parent = self._last_text
        if parent is None or parent is not self._messages[-1]:
            # Tool calls belong to an assistant message: the text just said, or a new one.
            parent = {"id": f"{call_id}-message", "role": "assistant"}
            self._add(parent)
            self._last_text = parent
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
            "metadata": {"callId": model_call_id},
        }
        parent.setdefault("toolCalls", []).append(call)
        self._tool_parent[call_id] = parent
        return [
            self.core.ToolCallStartEvent(
                tool_call_id=call_id,
                tool_call_name=name,
                parent_message_id=parent["id"],
                metadata={"callId": model_call_id},
            )
        ]

    def _call(self, call_id: str) -> dict[str, t.Any]:
        calls = self._tool_parent[call_id]["toolCalls"]
        return next(c for c in calls if c["id"] == call_id)

    def _run_part(self, data: t.Mapping[str, t.Any]) -> list[AGUIEvent]:
        rid = data["runId"]
        if rid == self.root_id:
            return []
        c = self.core
        meta = {"runId": rid, "parentId": data.get("parentId"), "kind": data.get("kind")}
        if data.get("status") == "running":
            name = str(data.get("name") or data.get("kind") or "step")
            unique, n = name, 1
            while unique in self._step_names:  # the verifier refuses two open steps of one name
                n += 1
                unique = f"{name}#{n}"
            self._step_names.add(unique)
            self._steps[rid] = unique
            return [c.StepStartedEvent(step_name=unique, metadata=meta)]
        name_ = self._steps.pop(rid, None)
        if name_ is None:
            return []
        self._step_names.discard(name_)
        meta["status"] = data.get("status")
        if data.get("duration") is not None:
            meta["duration"] = data["duration"]
        return [c.StepFinishedEvent(step_name=name_, metadata=meta)]

    def _close_steps(self) -> list[AGUIEvent]:
        out = [self.core.StepFinishedEvent(step_name=name) for name in reversed(list(self._steps.values()))]
        self._steps.clear()
        self._step_names.clear()
        return out

    def _finish(self, reason: str | None) -> list[AGUIEvent]:
        c = self.core
        if reason == "error" or self._error is not None:
            out = self._close_steps()
            out.append(c.RunErrorEvent(message=self._error or "the run failed", code="run_failed"))
            self.done = True
            return out
        if self._interrupt is not None:
            interrupts = _interrupts(self._interrupt, c)
            if interrupts:
                return self._finished(c.RunFinishedInterruptOutcome(interrupts=interrupts))
        return self._finished(c.RunFinishedSuccessOutcome())

    def _finished(self, outcome: t.Any) -> list[AGUIEvent]:
        c = self.core
        out = self._close_steps()
        out.append(c.MessagesSnapshotEvent(messages=self._messages))
        out.append(c.RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=outcome))
        self.done = True
        return out

    def _add(self, msg: dict[str, t.Any]) -> None:
        self._messages.append(msg)
        self._by_id[msg["id"]] = msg


def _as_text(value: t.Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _interrupts(data: t.Mapping[str, t.Any], core: t.Any) -> list[t.Any]:
    """AG-UI ``Interrupt`` objects for a pause record (or any other interrupted output)."""
    entries = data.get("interrupts") if data.get("type") == "streamtap.pause" else None
    pause_id = data.get("id")
    if not isinstance(entries, list):
        iid = str(pause_id or data.get("runId") or "interrupt")
        return [
            core.Interrupt(
                id=iid if valid_id(iid) else "interrupt",
                reason="input_required",
                metadata={"value": data.get("value", None)},
            )
        ]
    out = []
    for e in entries:
        payload = e.get("payload")
        message = payload if isinstance(payload, str) else None
        if isinstance(payload, dict):
            for key in ("question", "message", "prompt"):
                if isinstance(payload.get(key), str):
                    message = payload[key]
                    break
        fields: dict[str, t.Any] = {
            "id": e["id"],
            "reason": "input_required",
            "metadata": {"pauseId": pause_id, "node": e.get("node"), "payload": payload},
        }
        if message is not None:
            fields["message"] = message
        if isinstance(e.get("schema"), dict):
            fields["response_schema"] = e["schema"]
        if isinstance(payload, dict) and isinstance(payload.get("tool_call_id"), str):
            fields["tool_call_id"] = payload["tool_call_id"]
        expires = e.get("expires_at")
        if isinstance(expires, (int, float)):
            fields["expires_at"] = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).isoformat()
        out.append(core.Interrupt(**fields))
    return out


# -- requests ------------------------------------------------------------------------


# -- the endpoint ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AGUIOptions:
    """How the AG-UI endpoint behaves.

    Attributes:
        path: where it is mounted (``POST {path}``, ``POST {path}/{threadId}/stop``).
        cancel_on_disconnect: cancel the run (reason :data:`AGUI_GONE`) when the
            client goes away before its end. On by default: ``@ag-ui/client``
            cannot reattach to a run (its ``connect()`` is not implemented), so
            ``abortRun()`` means stop. Either way the client counts as a reader
            of its run while connected, as an AI SDK stream does (see
            :meth:`~streamtap.web.service.ChatService.reader_joined`).
    """

    path: str = "/api/agui"
    cancel_on_disconnect: bool = True


def agui_routes(
    service: ChatService,
    errors: ClientErrors,
    *,
    options: AGUIOptions,
    read_json: t.Callable[[Request], t.Awaitable[t.Any]],
    sse: t.Callable[..., Response],
    max_messages: int,
    trace_id: t.Callable[[str], str | None] = lambda run_id: None,
) -> list[Route]:
    """The AG-UI routes of the web app (:func:`streamtap.web.create_app` mounts them).

    Args:
        service: the app's runs (shared with the AI SDK endpoints).
        errors: what clients are told of failures.
        options: the path and disconnect policy.
        read_json: reads a request body as JSON within the app's size limit.
        sse: makes the app's SSE response from an async iterator of bytes and headers.
        max_messages: most messages in one request.
        trace_id: the trace id of a run (``None`` when not traced).
    """
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    path = options.path.rstrip("/") or "/api/agui"

    def _error(status: int, message: str) -> Response:
        return JSONResponse({"error": errors.message(message)}, status_code=status)

    try:
        from ag_ui.encoder import EventEncoder
    except ImportError:

        async def missing(request: Request) -> Response:
            return _error(501, "The AG-UI endpoint needs the agui extra: pip install 'streamtap[agui]'.")

        return [Route(path, missing, methods=["POST"])]

    encoder = EventEncoder()
    store = service.store

    async def frames(run: ActiveRun, mapper: AGUIMapper) -> t.AsyncIterator[bytes]:
        # The client is a reader of its run, as for the AI SDK stream: detach_timeout leaves it alone
        # and a new message on the thread gets 409 instead of cancelling it.
        complete = False
        service.reader_joined(run)

        def enc(events: list[t.Any]) -> bytes:
            return "".join(encoder.encode(e) for e in events).encode("utf-8", "backslashreplace")

        try:
            yield enc(mapper.begin())
            async with contextlib.aclosing(follow(store, run.run_id)) as batches:
                async for batch in batches:
                    if batch is None:
                        yield enc(mapper.close(EXPIRED))
                        break
                    out = [e for ev in batch for e in mapper.feed(ev)]
                    if out:
                        yield enc(out)
                    if mapper.done:
                        break
                else:
                    yield enc(mapper.close())
            complete = True
        finally:
            stopped = not complete and options.cancel_on_disconnect
            if stopped:  # the AG-UI client cannot reattach: its disconnect is a stop
                run.handle.cancel(AGUI_GONE)
            # Already cancelled: the service must not cancel it again (its cancel_on_disconnect).
            service.reader_left(run, complete or stopped)

    async def run_agent(request: Request) -> Response:
        try:
            req = parse_run_input(await read_json(request), max_messages=max_messages)
            pending = await resolved(service.pending(req.thread_id))
            if req.resume and pending is None:
                raise BadRequest(
                    409, f"Thread {req.thread_id!r} has no pending interrupt to resume; send the run without 'resume'."
                )
            if pending is not None and not req.resume:
                ids = [e.get("id") for e in pending.get("interrupts") or () if isinstance(e, dict)] or [
                    pending.get("id")
                ]
                raise BadRequest(
                    409,
                    f"Thread {req.thread_id!r} has pending interrupt(s) {ids}: answer them with "
                    "resume: [{interruptId, status: 'resolved', payload}] or status 'cancelled'.",
                )
            answering = "resume" in req.chat.body
            if not req.chat.last_user_text and not answering:
                raise BadRequest(
                    422, "The run has no user message with text; add {'role': 'user', 'content': '...'} to messages."
                )
            if pending is not None and not answering:
                # Every entry cancelled: drop the pause (only now, once the request is known to be good), run the input.
                await resolved(service.dismiss_pending(req.thread_id))
            run = await service.start(req.chat)
        except BadRequest as exc:
            return _error(exc.status, exc.message)

        def metadata() -> dict[str, t.Any]:
            traced = trace_id(run.run_id)
            return {"traceId": traced} if traced else {}

        mapper = AGUIMapper(
            req.thread_id,
            req.run_id,
            run.run_id,
            input_messages=req.messages,
            verbose=run.verbose,
            stream_text=run.stream_text,
            metadata=metadata,
            describe_error=errors.describe,
            cancel_reason=lambda: run.handle.token.reason,
        )
        return sse(frames(run, mapper), {"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def stop(request: Request) -> Response:
        thread_id = request.path_params["thread_id"]
        if not valid_id(thread_id):
            return _error(422, f"Invalid thread id {thread_id!r}.")
        dismissed = await resolved(service.dismiss_pending(thread_id))
        if dismissed is not None:
            return JSONResponse({"stopped": True, "dismissed": dismissed})
        run = await service.stop(thread_id)
        if run is None:
            return JSONResponse({"stopped": False, "reason": "no run is going in this thread"})
        body = stop_answer(run)
        return JSONResponse(body, status_code=200 if body["stopped"] else 202)

    return [
        Route(path, run_agent, methods=["POST"]),
        Route(path + "/{thread_id}/stop", stop, methods=["POST"]),
    ]
