"""Message content in the shape of the GenAI semantic conventions (v1.41.1), for spans.

The conventions (``gen-ai-input-messages.json``, ``gen-ai-output-messages.json``,
``gen-ai-system-instructions.json``, ``gen-ai-tool-definitions.json``) describe
content as JSON:

* a **message** is ``{"role": "system" | "user" | "assistant" | "tool", "parts": [...]}``
  (plus ``"name"`` when the message has one); an **output** message also has a
  ``"finish_reason"``: ``stop``, ``length``, ``content_filter``, ``tool_call`` or ``error``;
* a **part** is ``{"type": "text", "content"}``, ``{"type": "tool_call", "id", "name", "arguments"}``,
  ``{"type": "tool_call_response", "id", "response"}``, ``{"type": "reasoning", "content"}``,
  or ``blob`` / ``file`` / ``uri`` with a ``modality``;
* **system instructions** are a list of parts; **tool definitions** a list of
  ``{"type": "function", "name", "description", "parameters"}``.

This module turns what streamtap modules see -- OpenAI-style chat messages
(``{"role", "content", "tool_calls", "tool_call_id"}``), prompts, the call
arguments of an ``llm`` run, replies with ``tool_calls`` / ``reasoning`` /
``finish_reason`` -- into that shape. It only builds plain JSON values; the
tracer serialises, redacts and records them (:mod:`streamtap.tracing`).
Messages already in the conventions' shape (with ``parts``) pass through.
"""

from __future__ import annotations

import dataclasses
import json
import typing as t

from .events import to_jsonable

__all__ = [
    "ATTRIBUTES",
    "FINISH_REASONS",
    "RequestContent",
    "agent_tool_definitions",
    "as_sent",
    "finish_reason",
    "fit",
    "input_messages",
    "message",
    "output_messages",
    "parts_of",
    "request_content",
    "shape",
    "system_instructions",
    "tool_definitions",
]

Json = t.Any
Part = dict[str, Json]
Message = dict[str, Json]

ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)
"""The content attributes whose values this module shapes."""

FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_call", "error"})
"""The finish reasons of an output message in the conventions."""

_FINISH_ALIASES = {
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_length": "length",
    "content_filtered": "content_filter",
    "safety": "content_filter",
}

_PROMPT_KEYS = ("prompt", "messages", "query", "question", "input")
_TRUNCATED = "...[truncated]"


def finish_reason(reason: str | None, *, default: str = "stop") -> str:
    """A provider's finish reason as one of :data:`FINISH_REASONS` (OpenAI's ``tool_calls`` is ``tool_call``).

    An unknown reason is kept as it is (the schema allows any string); ``None`` gives ``default``.
    """
    if not reason:
        return default
    reason = str(reason)
    return _FINISH_ALIASES.get(reason, reason)


def _text(content: Json) -> Part:
    return {"type": "text", "content": content if isinstance(content, str) else _json_text(content)}


def _json_text(value: t.Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _media_part(p: t.Mapping[str, t.Any]) -> Part | None:
    """OpenAI content parts other than text: image URLs, audio, files."""
    kind = p.get("type")
    if kind == "image_url":
        image = p.get("image_url")
        url = image.get("url") if isinstance(image, t.Mapping) else image
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            head, data = url[5:].split(",", 1)
            return {"type": "blob", "modality": "image", "mime_type": head.split(";")[0] or None, "content": data}
        return {"type": "uri", "modality": "image", "uri": str(url)}
    if kind == "input_audio":
        audio = p.get("input_audio") or {}
        fmt = audio.get("format") if isinstance(audio, t.Mapping) else None
        sound = audio.get("data") if isinstance(audio, t.Mapping) else None
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": f"audio/{fmt}" if fmt else None,
            "content": sound or "",
        }
    if kind == "file":
        file = p.get("file") or {}
        if isinstance(file, t.Mapping) and file.get("file_id"):
            return {"type": "file", "modality": "file", "file_id": str(file["file_id"])}
    return None


def parts_of(content: Json) -> list[Part]:
    """The parts of a message's ``content``: a string, a list of OpenAI content parts, or parts already."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [_text(content)]
    if isinstance(content, t.Sequence) and not isinstance(content, (bytes, bytearray)):
        out: list[Part] = []
        for p in content:
            if isinstance(p, str):
                out.append(_text(p))
            elif isinstance(p, t.Mapping) and p.get("type") in ("text", "input_text", "output_text", "refusal"):
                out.append(_text(p.get("text", p.get("content", p.get("refusal", "")))))
            elif isinstance(p, t.Mapping) and (media := _media_part(p)) is not None:
                out.append(media)
            elif isinstance(p, t.Mapping) and isinstance(p.get("type"), str):
                out.append(t.cast(Part, to_jsonable(p)))  # a part of its own kind (the schema's GenericPart)
            else:
                out.append(_text(p))
        return out
    return [_text(content)]


def _arguments(raw: Json) -> Json:
    """Tool-call arguments as an object when they are JSON text, else as they came.

    ``NaN`` and ``Infinity``, which Python's ``json`` reads but JSON has not, keep the text as sent.
    """
    if isinstance(raw, str):
        try:
            return t.cast(Json, json.loads(raw, parse_constant=_not_json))
        except ValueError:
            return raw
    return to_jsonable(raw)


def _not_json(constant: str) -> t.NoReturn:
    msg = f"{constant} is not JSON"
    raise ValueError(msg)


def _tool_call_part(call: t.Any) -> Part:
    """One OpenAI ``tool_calls`` entry (a dict, or an object with ``id``, ``name``, ``arguments``)."""
    if isinstance(call, t.Mapping):
        fn = call.get("function")
        fn = fn if isinstance(fn, t.Mapping) else call
        call_id, name, args = call.get("id"), fn.get("name"), fn.get("arguments")
    else:
        call_id, name, args = getattr(call, "id", None), getattr(call, "name", None), getattr(call, "arguments", None)
    part: Part = {"type": "tool_call", "id": call_id, "name": str(name or ""), "arguments": _arguments(args)}
    return part


def message(m: t.Any) -> Message:
    """One chat message in the conventions' shape.

    Takes an OpenAI chat message (``role``, ``content``, ``tool_calls``,
    ``tool_call_id``, ``reasoning_content``, ``name``), a message already in the
    conventions' shape (``role`` and ``parts``: kept), or anything else (a user
    message whose text is that value, as JSON when it is not a string).
    """
    if not isinstance(m, t.Mapping) or "role" not in m:
        return {"role": "user", "parts": [_text(m)]}
    role = str(m["role"])
    if isinstance(m.get("parts"), list):
        return t.cast(Message, to_jsonable(m))
    if role in ("tool", "function"):
        part: Part = {
            "type": "tool_call_response",
            "id": m.get("tool_call_id"),
            "response": to_jsonable(m.get("content")),
        }
        out: Message = {"role": "tool", "parts": [part]}
    else:
        parts: list[Part] = []
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"type": "reasoning", "content": reasoning})
        parts.extend(parts_of(m.get("content")))
        calls = list(m.get("tool_calls") or ())
        if isinstance(m.get("function_call"), t.Mapping):
            calls.append({"function": m["function_call"]})
        parts.extend(_tool_call_part(c) for c in calls)
        out = {"role": role, "parts": parts}
    if m.get("name"):
        out["name"] = str(m["name"])
    return out


def input_messages(messages: t.Any) -> list[Message]:
    """``gen_ai.input.messages``: a prompt string (one user message), or a list of chat messages."""
    if isinstance(messages, str):
        return [{"role": "user", "parts": [_text(messages)]}]
    if isinstance(messages, t.Sequence) and not isinstance(messages, (bytes, bytearray)):
        return [message(m) for m in messages]
    return [message(messages)]


def system_instructions(instructions: t.Any) -> list[Part]:
    """``gen_ai.system_instructions``: a list of parts (a string is one text part)."""
    return parts_of(instructions)


def tool_definitions(tools: t.Iterable[t.Any]) -> list[dict[str, Json]]:
    """``gen_ai.tool.definitions`` from OpenAI tool dicts or objects with ``to_openai()`` (like ``@tool``).

    ``{"type": "function", "function": {"name", "description", "parameters"}}``
    becomes ``{"type": "function", "name", "description", "parameters"}``.
    """
    out: list[dict[str, Json]] = []
    for tool in tools:
        to_openai = getattr(tool, "to_openai", None)
        spec = to_openai() if callable(to_openai) else tool
        if not isinstance(spec, t.Mapping):
            out.append({"type": "function", "name": str(getattr(tool, "name", None) or spec)})
            continue
        fn = spec.get("function")
        if isinstance(fn, t.Mapping):
            item: dict[str, Json] = {"type": str(spec.get("type") or "function"), "name": str(fn.get("name") or "")}
            if fn.get("description") is not None:
                item["description"] = str(fn["description"])
            if isinstance(fn.get("parameters"), t.Mapping):
                item["parameters"] = to_jsonable(fn["parameters"])
            out.append(item)
        else:
            item = t.cast(dict[str, Json], to_jsonable(spec))
            item.setdefault("type", "function")
            item["name"] = str(item.get("name") or "")
            out.append(item)
    return out


def output_messages(output: t.Any, reason: str | None = None) -> list[Message]:
    """``gen_ai.output.messages`` for what a run returned, with the conventions' ``finish_reason``.

    ``output`` may be a reply object with ``to_message()`` (like
    :class:`~streamtap.llm.openai.ChatReply`: its tool calls become
    ``tool_call`` parts, its ``reasoning`` a ``reasoning`` part), an assistant
    message dict, a list of them, or text. ``reason`` (the run's finish reason,
    or ``error``) wins over a message's own ``finish_reason``, which wins over
    the reply's. A tool-call turn has no empty text part.
    """
    fallback = getattr(output, "finish_reason", None)
    to_message = getattr(output, "to_message", None)
    if callable(to_message):
        msg = to_message()
        reasoning = getattr(output, "reasoning", None)
        if isinstance(msg, t.Mapping) and isinstance(reasoning, str) and reasoning and "reasoning" not in msg:
            msg = {**msg, "reasoning_content": reasoning}
        items: list[t.Any] = [msg]
    elif isinstance(output, t.Mapping) and "role" in output:
        items = [output]
    elif isinstance(output, list) and output and all(isinstance(m, t.Mapping) and "role" in m for m in output):
        items = output
    else:
        items = [{"role": "assistant", "content": output}]
    out: list[Message] = []
    for item in items:
        msg = message(item)
        has_call = any(p.get("type") == "tool_call" for p in msg["parts"])
        own = item.get("finish_reason") if isinstance(item, t.Mapping) else None
        msg["finish_reason"] = finish_reason(reason or own or fallback, default="tool_call" if has_call else "stop")
        out.append(msg)
    return out


@dataclasses.dataclass(frozen=True)
class RequestContent:
    """What an ``llm`` run was asked: its messages, and the tools it was offered.

    Attributes:
        messages: the input messages in the conventions' shape.
        tool_definitions: the offered tools (empty when none).
        prompt: the prompt as the module got it (a string, or a message list),
            for a module that builds the request messages itself.
        history: the ``history=`` messages given with the call, if any.
        system_instructions: instructions given apart from the messages (parts).
    """

    messages: list[Message]
    tool_definitions: list[dict[str, Json]]
    prompt: t.Any = None
    history: t.Any = None
    system_instructions: list[Part] = dataclasses.field(default_factory=list)

    def attributes(self) -> dict[str, Json]:
        """Content attribute -> value: the messages, and the tool definitions and instructions when there are any."""
        out: dict[str, Json] = {"gen_ai.input.messages": self.messages}
        if self.tool_definitions:
            out["gen_ai.tool.definitions"] = self.tool_definitions
        if self.system_instructions:
            out["gen_ai.system_instructions"] = self.system_instructions
        return out


def request_content(inputs: t.Any) -> RequestContent:
    """The :class:`RequestContent` of an ``llm`` or ``agent`` run, from the inputs its ``Start`` event carries.

    The inputs are the call's arguments: the prompt alone (``llm("hi")``,
    ``llm(messages)``), or ``{"args": [prompt], "tools": [...], "history": [...], ...}``
    (``llm(messages, tools=...)``), or keyword arguments (``prompt=``, ``messages=``...).
    ``history`` messages go before a string prompt, as the chat modules send them.
    """
    prompt: t.Any = inputs
    tools: t.Any = None
    history: t.Any = None
    if isinstance(inputs, t.Mapping) and "role" not in inputs:
        args = inputs.get("args")
        if isinstance(args, list) and args:
            prompt = args[0]
        else:
            prompt = next((inputs[k] for k in _PROMPT_KEYS if k in inputs), inputs)
        tools = inputs.get("tools")
        history = inputs.get("history")
    msgs = input_messages(prompt)
    if isinstance(prompt, str) and isinstance(history, list):
        msgs = input_messages(history) + msgs
    defs = tool_definitions(tools) if isinstance(tools, (list, tuple)) else []
    return RequestContent(msgs, defs, prompt, history)


def as_sent(request: RequestContent, module: t.Any) -> RequestContent | None:
    """The request ``module`` will really send for ``request``, when it can say; else ``None``.

    A chat module with a public ``messages_for(prompt, history)`` (like
    :class:`~streamtap.llm.openai.OpenAIChat`) builds the request messages
    itself -- with its own system prompt and its kept history. For a string
    prompt, the module's ``system`` prompt is given apart from the
    conversation: it becomes the system instructions, not a message. A message
    list carries its own system message, which stays in the messages.
    """
    messages_for = getattr(module, "messages_for", None)
    if not callable(messages_for) or not isinstance(request.prompt, (str, list)):
        return None
    try:
        sent = list(messages_for(request.prompt, request.history))
    except Exception:
        return None
    system = getattr(module, "system", None)
    first = sent[0] if sent and isinstance(sent[0], t.Mapping) else {}
    instructions: list[Part] = []
    separate = isinstance(request.prompt, str) and isinstance(system, str) and bool(system)
    if separate and (first.get("role"), first.get("content")) == ("system", system):
        instructions, sent = system_instructions(system), sent[1:]
    return dataclasses.replace(request, messages=input_messages(sent), system_instructions=instructions)


def agent_tool_definitions(module: t.Any) -> list[dict[str, Json]]:
    """The tool definitions of an agent with a tool registry (``module.tools.schemas()``), else none."""
    schemas = getattr(getattr(module, "tools", None), "schemas", None)
    return tool_definitions(schemas()) if callable(schemas) else []


def shape(attribute: str, value: t.Any, finish_reason: str | None = None) -> Json:
    """``value`` for the content attribute ``attribute`` (one of :data:`ATTRIBUTES`) in the conventions' shape.

    Takes what a module annotates: OpenAI-style messages, a reply, a system
    prompt string, OpenAI tool dicts. ``finish_reason`` is for output messages.

    Raises:
        ValueError: ``attribute`` is not one of :data:`ATTRIBUTES`.
    """
    if attribute == "gen_ai.input.messages":
        return input_messages(value)
    if attribute == "gen_ai.output.messages":
        return output_messages(value, finish_reason)
    if attribute == "gen_ai.system_instructions":
        return system_instructions(value)
    if attribute == "gen_ai.tool.definitions":
        return tool_definitions(value if isinstance(value, (list, tuple)) else [value])
    msg = f"{attribute!r} is not a GenAI content attribute; use one of {', '.join(ATTRIBUTES)}."
    raise ValueError(msg)


_CUTTABLE = frozenset({"content", "response", "arguments", "description", "parameters", "uri"})


def _cap_strings(value: Json, cap: int, *, inside: bool = False) -> Json:
    """``value`` with every string under a content key (``content``, ``response``...) cut to ``cap`` characters.

    The structure -- types, roles, ids, names -- is never cut, so the result keeps its schema.
    """
    if isinstance(value, str):
        return value if not inside or len(value) <= cap else value[:cap] + _TRUNCATED
    if isinstance(value, list):
        return [_cap_strings(v, cap, inside=inside) for v in value]
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap, inside=inside or k in _CUTTABLE) for k, v in value.items()}
    return value


def fit(value: Json, limit: int, dumps: t.Callable[[Json], str]) -> str:
    """``dumps(value)`` within ``limit`` characters, still valid JSON of the same shape.

    Long strings inside are cut first (with a ``...[truncated]`` marker); if
    that is not enough, the oldest items of a top-level list are dropped (the
    latest message is kept). Only when even one item does not fit is the text cut.
    """
    text = dumps(value)
    cap = limit
    while len(text) > limit and cap > 16:
        cap //= 2
        text = dumps(_cap_strings(value, cap))
    if len(text) > limit and isinstance(value, list) and len(value) > 1:
        items = _cap_strings(value, cap)
        while len(items) > 1 and len(text) > limit:
            items = items[1:]
            text = dumps(items)
    if len(text) > limit:
        text = text[:limit] + _TRUNCATED
    return text
