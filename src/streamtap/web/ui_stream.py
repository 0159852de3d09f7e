"""streamtap events -> Vercel AI SDK UI message stream v1 parts (pure, no I/O).

:class:`UIMessageMapper` turns the events of one root run (as
:meth:`Event.to_dict` dicts, the form the event store keeps) into the chunk
dicts of the AI SDK's UI message stream, so that ``useChat``, assistant-ui and
AI Elements front ends render a streamtap run unmodified. It opens and closes
parts itself, so the protocol's ordering rules hold on every path:

* ``start`` first; ``finish`` (or ``abort`` when the run was cancelled) last.
* one step (``start-step`` .. ``finish-step``) per model call: a run of kind
  ``llm`` that starts while no other model call is open begins a new step;
  the step stays open through the tool calls that follow it, as in the AI SDK.
* ``text-start`` before any ``text-delta`` and ``text-end`` before the step
  closes; the same for ``reasoning-*``.
* ``tool-input-start`` before ``tool-input-delta``; a tool result or error is
  always preceded by its ``tool-input-available``, synthesised if needed, so
  a mapper fed from the middle of a run (an expired buffer) still produces a
  valid stream.
* a run that failed sends ``error`` then ``finish`` with reason ``error``; an
  interrupted run sends a ``data-interrupt`` part with the pause record's id
  and questions (``interrupts``: id, node, payload, schema -- never the
  flow's saved state: :func:`~streamtap.web.client_errors.public_record`,
  the rule of the events endpoint too), then ``finish``; a cancelled run
  ends with ``abort``, its reason redacted.

What is user-facing text is decided by :class:`streamtap.answer.AnswerText`,
the rule ``stream.text()`` uses too: ``text`` chunks of every run except
tools, the runs inside tools and the input of a stream transform; the
innermost speaker wins (a parent relaying its child's text is not sent
again); a new run's text opens a new text part (the turn boundary). When
the root ends ``ok`` with a string output and no text was shown at all (a
module that returns rather than streams), the output is sent as the text.

Tool calls are sent as ``dynamic`` tools (the browser does not know a Python
backend's tools statically). ``verbose=False`` leaves out tool, reasoning and
run-progress parts (the "user-facing only" view) while keeping the step and
text boundaries valid. ``stream_text=False`` sends each text part's text in one
delta when the part closes (the streaming on/off switch); the part still
opens where it belongs, so parts keep their order.
"""

from __future__ import annotations

import json
import math
import re
import typing as t

from ..answer import AnswerText
from ..redaction import Redactor
from .client_errors import ClientErrors, public_record

__all__ = ["UI_STREAM_HEADERS", "ErrorText", "UIMessageMapper", "data_part_name", "encode_json", "encode_part"]

Part = dict[str, t.Any]

UI_STREAM_HEADERS = {
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
"""The headers of a UI message stream response (as the AI SDK's server helper sets them)."""

_NAME_OK = re.compile(r"[^A-Za-z0-9_\-]")


def data_part_name(name: str) -> str:
    """The ``data-<name>`` part type for a custom event name (unsafe characters become ``-``)."""
    return "data-" + (_NAME_OK.sub("-", str(name)) or "event")


def encode_json(value: t.Any) -> bytes:
    """``value`` as compact JSON in UTF-8, safe on one SSE ``data:`` line; never fails on text.

    Lone surrogates (``"\\ud800"``, valid in JSON and in a Python ``str`` but
    not encodable as UTF-8) are written as JSON ``\\uXXXX`` escapes, so the
    value reads back unchanged; NUL, ``\\r`` and other control characters are
    escaped by JSON itself; U+0085, U+2028 and U+2029 (line breaks to some
    line splitters) are escaped too. NaN and infinities, which JSON has no
    spelling for, become ``null``. Values JSON cannot hold become their ``str()``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # NaN or an infinity somewhere
        text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    if _LINE_SEPARATORS.search(text) is not None:
        text = _LINE_SEPARATORS.sub(_escape_char, text)
    # Only a surrogate cannot be encoded, and json.dumps writes one only inside a string: as \uXXXX it is
    # exactly the JSON escape of that code point.
    return text.encode("utf-8", "backslashreplace")


def encode_part(part: Part) -> bytes:
    """One SSE frame (``data: <json>`` and a blank line) for a part (see :func:`encode_json`)."""
    return b"data: " + encode_json(part) + b"\n\n"


_LINE_SEPARATORS = re.compile("[\u0085\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _finite(value: t.Any, depth: int = 0) -> t.Any:
    """A copy of ``value`` with NaN and infinities replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 64:
        return value
    if isinstance(value, dict):
        return {k: _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth + 1) for v in value]
    return value


ErrorText = t.Callable[..., str]
"""``describe(error, *, run_id, kind, name) -> str``: what a client is shown for a failure.

``error`` is an ``ErrorInfo.to_dict()`` (or ``None``), ``run_id`` the root
run's id, ``kind`` and ``name`` those of the failed run (``kind="tool"`` and
the tool's name for a failed tool call). The web app passes
:meth:`streamtap.web.client_errors.ClientErrors.describe`.
"""


class _RunInfo(t.NamedTuple):
    name: str
    kind: str
    parent_id: str | None
    under_tool: bool


class UIMessageMapper:
    """Map the events of one root run to UI message stream parts.

    Call :meth:`begin` once, :meth:`feed` with every event (``Event.to_dict()``
    form, ``seq`` order; events of other root runs are ignored), and
    :meth:`close` when the stream must end without the root's ``End`` (the
    buffer ended early); each returns the parts to send. After the root's
    ``End`` the stream is complete and :attr:`done` is true; the caller then
    sends ``data: [DONE]``.

    Args:
        root_id: id of the root run whose events are mapped.
        message_id: the assistant message id sent in ``start``.
        verbose: include tool calls, reasoning and run progress (``data-run``).
        stream_text: send text as it arrives; ``False`` sends each text part whole.
        metadata: ``messageMetadata`` of the ``start`` part (run id, trace id...), or a
            function returning it, called when :meth:`begin` is.
        cancel_reason: returns why the run was cancelled, for the ``abort`` part
            (the cancelled ``End`` does not always carry it).
        max_run_parts: ``data-run`` parts sent at most (a batch of thousands of
            runs would bloat the message); the root's are always sent.
        describe_error: what a client is shown for a failed run or tool call
            (:data:`ErrorText`; default ``Type: message``, redacted).
        redact: ``redact(text) -> text``, applied to the other texts the mapper writes (the
            ``abort`` reason, the ``close`` reason) and to the default ``describe_error``'s.
            Default: the redactor of ``describe_error`` when that is a
            :meth:`ClientErrors.describe <streamtap.web.client_errors.ClientErrors.describe>` (the app's
            redaction settings), else a :class:`~streamtap.redaction.Redactor` with the built-in patterns.
    """

    def __init__(
        self,
        root_id: str,
        *,
        message_id: str | None = None,
        verbose: bool = True,
        stream_text: bool = True,
        metadata: t.Mapping[str, t.Any] | t.Callable[[], t.Mapping[str, t.Any] | None] | None = None,
        cancel_reason: t.Callable[[], str | None] | None = None,
        max_run_parts: int = 500,
        describe_error: ErrorText | None = None,
        redact: t.Callable[[str], str] | None = None,
    ) -> None:
        if redact is None:
            owner = getattr(describe_error, "__self__", None)
            redact = owner.redact if isinstance(owner, ClientErrors) else Redactor()
        self.redact: t.Callable[[str], str] = redact
        self.describe_error: ErrorText = describe_error or self._full_error
        self.cancel_reason = cancel_reason
        self.max_run_parts = max_run_parts
        self._reported: set[str] = set()
        self.root_id = root_id
        self.message_id = message_id
        self.verbose = verbose
        self.stream_text = stream_text
        self.metadata = metadata
        self.done = False
        self._runs: dict[str, _RunInfo] = {}
        self._step_open = False
        self._active_llm: set[str] = set()
        self._parts: dict[tuple[str, str], list[t.Any]] = {}  # (run_id, channel) -> [part id, kind, buffered text]
        self._last_text: tuple[str, str] | None = None  # the text part written to last
        self._counter = 0
        self._tools: dict[str, str] = {}  # call id -> "streaming" | "available" | "done"
        self._tool_names: dict[str, str] = {}
        self._tool_args: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._shown_text = False
        self._answer = AnswerText(root_id)  # which text is the answer: the rule stream.text() uses too

    # -- lifecycle ------------------------------------------------------------

    def begin(self) -> list[Part]:
        """The ``start`` part."""
        part: Part = {"type": "start"}
        if self.message_id is not None:
            part["messageId"] = self.message_id
        metadata = self.metadata() if callable(self.metadata) else self.metadata
        if metadata:
            part["messageMetadata"] = dict(metadata)
        return [part]

    def close(self, reason: str = "the run's event stream ended before the run did") -> list[Part]:
        """End the message now (no ``End`` of the root arrived): close parts, ``error``, ``finish``."""
        if self.done:
            return []
        out = self._close_step()
        out.append({"type": "error", "errorText": self.redact(reason)})
        out.append({"type": "finish", "finishReason": "error"})
        self.done = True
        return out

    def _full_error(
        self, error: t.Mapping[str, t.Any] | None, *, run_id: str = "", kind: str = "", name: str = ""
    ) -> str:
        """The default :data:`ErrorText`: ``Type: message``, redacted."""
        if not error:
            return "the run failed"
        typ, msg = error.get("type") or "Error", error.get("message") or ""
        return self.redact(f"{typ}: {msg}" if msg else str(typ))

    # -- events -----------------------------------------------------------------

    def feed(self, ev: t.Mapping[str, t.Any]) -> list[Part]:
        """The parts for one event (often none)."""
        if self.done:
            return []
        run = ev["run"]
        if run.get("root_id") != self.root_id:
            return []
        kind = ev["kind"]
        if kind == "chunk":
            return self._chunk(ev, run)
        if kind == "start":
            return self._start(ev, run)
        if kind == "end":
            return self._end(ev, run)
        if kind == "tool":
            return self._tool(ev) if self.verbose else []
        if kind == "custom":
            out = self._ensure_step()
            part: Part = {"type": data_part_name(ev["name"]), "data": ev.get("data")}
            data = ev.get("data")
            if ev["name"] == "progress" and isinstance(data, t.Mapping) and "done" in data:
                part["id"] = run["run_id"]  # a bar (done/total): one per run, the next part of that run replaces it
            out.append(part)
            return out
        return []

    def _info(self, run: t.Mapping[str, t.Any]) -> _RunInfo:
        info = self._runs.get(run["run_id"])
        if info is None:  # fed from the middle of a run: derive what we can
            parent = self._runs.get(run.get("parent_id") or "")
            info = _RunInfo(
                run.get("name", ""),
                run.get("kind", "module"),
                run.get("parent_id"),
                bool(parent and (parent.under_tool or parent.kind == "tool")),
            )
            self._runs[run["run_id"]] = info
        return info

    def _start(self, ev: t.Mapping[str, t.Any], run: t.Mapping[str, t.Any]) -> list[Part]:
        rid = run["run_id"]
        self._runs.pop(rid, None)
        info = self._info(run)
        self._answer.started(rid, info.parent_id, info.kind, run.get("metadata"))
        out: list[Part] = []
        if info.kind == "llm":
            if not self._active_llm:
                out += self._close_step()
                out += self._ensure_step()
            self._active_llm.add(rid)
        if self._report(rid):
            data = {
                "runId": rid,
                "parentId": run.get("parent_id"),
                "name": info.name,
                "kind": info.kind,
                "status": "running",
                "startedAt": ev.get("started_at"),
            }
            out.append({"type": "data-run", "id": rid, "data": data})
        return out

    def _end(self, ev: t.Mapping[str, t.Any], run: t.Mapping[str, t.Any]) -> list[Part]:
        rid = run["run_id"]
        info = self._info(run)
        out: list[Part] = []
        status = ev.get("status", "ok")
        for key in [k for k in self._parts if k[0] == rid]:
            out += self._close_part(key)
        if self._report(rid):
            timings = ev.get("timings") or {}
            err = ev.get("error")
            data = {
                "runId": rid,
                "parentId": run.get("parent_id"),
                "name": info.name,
                "kind": info.kind,
                "status": status,
                "startedAt": timings.get("started_at"),
                "duration": timings.get("duration"),
                "ttft": timings.get("time_to_first_chunk"),
                "error": self.describe_error(err, run_id=self.root_id, kind=info.kind, name=info.name) if err else None,
                "usage": ev.get("usage"),
            }
            out.append({"type": "data-run", "id": rid, "data": data})
        self._active_llm.discard(rid)
        if rid != self.root_id:
            return out
        # The root ended: finish the message.
        output = ev.get("output")
        if status == "ok" and not self._shown_text and isinstance(output, str) and output:
            out += self._ensure_step()
            pid = self._new_id("text")
            out += [
                {"type": "text-start", "id": pid},
                {"type": "text-delta", "id": pid, "delta": output},
                {"type": "text-end", "id": pid},
            ]
            self._shown_text = True
        out += self._close_step()
        if status == "ok":
            out.append({"type": "finish", "finishReason": "stop"})
        elif status == "error":
            err = ev.get("error")
            out.append(
                {
                    "type": "error",
                    "errorText": self.describe_error(err, run_id=self.root_id, kind=info.kind, name=info.name),
                }
            )
            out.append({"type": "finish", "finishReason": "error"})
        elif status == "interrupted":
            record = output if isinstance(output, dict) else {"value": output}
            iid = str(record.get("id") or record.get("interrupt_id") or rid)
            out.append({"type": "data-interrupt", "id": iid, "data": {"runId": rid, **public_record(record)}})
            out.append({"type": "finish", "finishReason": "other"})
        else:  # cancelled
            reason = (
                (self.cancel_reason() if self.cancel_reason else None)
                or (ev.get("error") or {}).get("message")
                or "stopped"
            )
            out.append({"type": "abort", "reason": self.redact(str(reason))})
        self.done = True
        return out

    def _report(self, rid: str) -> bool:
        """Whether this run gets ``data-run`` parts (verbose, and within ``max_run_parts``)."""
        if not self.verbose:
            return False
        if rid in self._reported:
            return True
        if len(self._reported) >= self.max_run_parts and rid != self.root_id:
            return False
        self._reported.add(rid)
        return True

    def _chunk(self, ev: t.Mapping[str, t.Any], run: t.Mapping[str, t.Any]) -> list[Part]:
        channel = ev.get("channel", "text")
        delta = ev.get("delta")
        rid = run["run_id"]
        if channel == "text":
            if not isinstance(delta, str):
                return []
            info = self._info(run)
            if not self._answer.shows(rid, info.parent_id, info.kind, delta, run.get("metadata")):
                return []
            return self._delta(rid, "text", delta)
        if not self.verbose:
            return []
        if channel == "reasoning":
            return self._delta(rid, "reasoning", delta if isinstance(delta, str) else str(delta))
        if channel == "tool_args":
            call_id = ev.get("call_id")
            if not call_id:
                return []
            call_id = self._call(call_id, starting=True)
            if self._tools.get(call_id, "streaming") != "streaming":
                return []
            text = delta if isinstance(delta, str) else str(delta)
            out = self._ensure_step()
            if call_id not in self._tools:
                self._tools[call_id] = "streaming"
                out.append(self._tool_start(call_id, self._tool_names.get(call_id, "tool")))
            self._tool_args[call_id] = self._tool_args.get(call_id, "") + text
            if text:
                out.append({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": text})
            return out
        return []

    def _delta(self, rid: str, channel: str, delta: str) -> list[Part]:
        key = (rid, channel)
        out: list[Part] = []
        entry = self._parts.get(key)
        if entry is not None and channel == "text" and self._last_text is not None and self._last_text != key:
            # Another run spoke since: continue in a new part, so the message reads in time order.
            out += self._close_part(key)
            entry = None
        if channel == "text":
            self._last_text = key
        if entry is None:
            out += self._ensure_step()
            entry = [self._new_id(channel), channel, []]
            self._parts[key] = entry
            out.append({"type": f"{channel}-start", "id": entry[0]})
        if channel == "text":
            self._shown_text = True
        if self.stream_text or channel != "text":
            out.append({"type": f"{channel}-delta", "id": entry[0], "delta": delta})
        else:
            entry[2].append(delta)
        return out

    def _tool_start(self, call_id: str, name: str) -> Part:
        return {"type": "tool-input-start", "toolCallId": call_id, "toolName": name, "dynamic": True}

    def _tool(self, ev: t.Mapping[str, t.Any]) -> list[Part]:
        name, phase = ev["name"], ev["phase"]
        call_id = self._call(ev["call_id"], starting=phase == "requested")
        self._tool_names[call_id] = name
        out = self._ensure_step()
        state = self._tools.get(call_id)
        if state is None:
            out.append(self._tool_start(call_id, name))
            state = "streaming"
        if state == "streaming":
            args = ev.get("arguments") if phase == "requested" else None
            if args is None and phase != "requested":
                args = _parse_json(self._tool_args.get(call_id, ""))
            out.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": args,
                    "dynamic": True,
                }
            )
            self._tools[call_id] = "available"
        if phase == "result":
            out.append(
                {"type": "tool-output-available", "toolCallId": call_id, "output": ev.get("result"), "dynamic": True}
            )
            self._tools[call_id] = "done"
        elif phase == "error":
            text = self.describe_error(
                ev.get("error") or {"type": "Error"}, run_id=self.root_id, kind="tool", name=name
            )
            out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": text, "dynamic": True})
            self._tools[call_id] = "done"
        return out

    def _call(self, call_id: str, *, starting: bool) -> str:
        """The part id of a tool call; a call id used again after its call finished gets a new one."""
        current = self._aliases.get(call_id, call_id)
        if starting and self._tools.get(current) == "done":
            self._counter += 1
            current = f"{call_id}~{self._counter}"
            self._aliases[call_id] = current
        return current

    # -- parts and steps -----------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def _ensure_step(self) -> list[Part]:
        if self._step_open:
            return []
        self._step_open = True
        return [{"type": "start-step"}]

    def _close_part(self, key: tuple[str, str]) -> list[Part]:
        pid, channel, buffered = self._parts.pop(key)
        if self.stream_text or channel != "text":
            return [{"type": f"{channel}-end", "id": pid}]
        return [{"type": "text-delta", "id": pid, "delta": "".join(buffered)}, {"type": "text-end", "id": pid}]

    def _close_step(self) -> list[Part]:
        out: list[Part] = []
        for key in list(self._parts):
            out += self._close_part(key)
        if self._step_open:
            out.append({"type": "finish-step"})
            self._step_open = False
        return out


def _parse_json(text: str) -> t.Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
