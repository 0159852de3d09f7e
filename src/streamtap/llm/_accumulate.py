"""Stream accumulation: chat-completion chunks into chunks of the run and a :class:`~streamtap.llm.reply.ChatReply`."""

from __future__ import annotations

import json
import secrets
import time
import typing as t

from ..context import RunContext
from ..events import Usage
from ..module import Delta
from .markup import Markup, MarkupFilter
from .reply import ChatReply, ToolCall


class _Accumulator:
    """Turns a stream of chat-completion chunks into chunks for the run and a :class:`ChatReply`."""

    def __init__(self, ctx: RunContext, markup: MarkupFilter | None, t0: float) -> None:
        self.ctx = ctx
        self.markup = markup
        self.t0 = t0
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # arrival order -> [id, name, [argument pieces], id came from the server]
        self.calls: dict[int, list[t.Any]] = {}
        self._by_index: dict[int, int] = {}  # the server's tool-call index -> its current slot
        self._last: int | None = None
        self.inline_calls: list[ToolCall] = []
        self.finish_reasons: list[str] = []
        self.model: str | None = None
        self.id: str | None = None
        self.usage: Usage | None = None
        self.ttft: float | None = None
        self.chunks = 0

    def _first(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0
            self.ctx.annotate(time_to_first_token=self.ttft)

    def _content(self, message: t.Any, out: list[Delta]) -> None:
        """Add the reasoning and the text of a message (or a stream delta) to ``out``."""
        reasoning = _reasoning_of(message)
        if reasoning:
            self._first()
            self.reasoning.append(reasoning)
            out.append(Delta(reasoning, "reasoning"))
        if message.content:
            self._first()
            out.extend(self._text(message.content))

    def _text(self, text: str) -> list[Delta]:
        if not text:
            return []
        if self.markup is None:
            self.text.append(text)
            return [Delta(text)]
        return self._pieces(self.markup.feed(text))

    def _pieces(self, pieces: t.Sequence[t.Any]) -> list[Delta]:
        out: list[Delta] = []
        for piece in pieces:
            if isinstance(piece, Markup):
                call = _parse_markup(piece)
                if call is not None:
                    self.inline_calls.append(call)
                    out.append(Delta(call.arguments, "tool_args", call.id))
            else:
                self.text.append(piece.text)
                out.append(Delta(piece.text))
        return out

    def feed(self, chunk: t.Any) -> list[Delta]:
        self.chunks += 1
        self.model = getattr(chunk, "model", None) or self.model
        self.id = getattr(chunk, "id", None) or self.id
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = _usage_of(usage)
        out: list[Delta] = []
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = choice.delta
            if delta is not None:
                self._content(delta, out)
                for tc in delta.tool_calls or ():
                    self._first()
                    slot = self._slot(tc)
                    fn = tc.function
                    if fn is not None:
                        if fn.name and fn.name != slot[1]:  # some proxies repeat the whole name
                            slot[1] += fn.name
                        if fn.arguments:
                            slot[2].append(fn.arguments)
                            out.append(Delta(fn.arguments, "tool_args", slot[0]))
            if choice.finish_reason:
                self.finish_reasons.append(choice.finish_reason)
        return out

    def _slot(self, tc: t.Any) -> list[t.Any]:
        """The call a tool-call delta belongs to.

        By index as OpenAI sends it, or by id and order when a server leaves the
        index out (Gemini) or reuses it for every call (Ollama).
        """
        index = tc.index
        key = self._by_index.get(index) if index is not None else self._last
        slot = self.calls.get(key) if key is not None else None
        if slot is not None and tc.id and slot[3] and tc.id != slot[0]:
            slot = None  # a new call that reuses the index
        if slot is None:
            key = len(self.calls)
            slot = self.calls[key] = [tc.id or f"call_{secrets.token_hex(8)}", "", [], bool(tc.id)]
            if index is not None:
                self._by_index[index] = key
        elif tc.id and not slot[3]:
            slot[0], slot[3] = tc.id, True  # the server's id arrived late: the tool message must use it
        self._last = key
        return slot

    def finish(self) -> list[Delta]:
        if self.markup is None:
            return []
        return self._pieces(self.markup.close())

    def reply(self) -> ChatReply:
        calls = [ToolCall(cid, name, "".join(args)) for _, (cid, name, args, _) in sorted(self.calls.items())]
        calls += self.inline_calls
        finish = self.finish_reasons[-1] if self.finish_reasons else None
        if self.inline_calls and finish == "stop":
            finish = "tool_calls"
        return ChatReply(
            "".join(self.text),
            tool_calls=calls,
            reasoning="".join(self.reasoning),
            finish_reason=finish,
            model=self.model,
            usage=self.usage,
            id=self.id,
        )


def _reasoning_of(delta: t.Any) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = getattr(delta, key, None)
        if value is None:
            extra = getattr(delta, "model_extra", None) or {}
            value = extra.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _usage_of(usage: t.Any) -> Usage:
    details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        reasoning_tokens=getattr(details, "reasoning_tokens", None) if details is not None else None,
        cached_input_tokens=getattr(prompt_details, "cached_tokens", None) if prompt_details is not None else None,
    )


def _parse_markup(block: Markup) -> ToolCall | None:
    """Read ``{"name": ..., "arguments"|"parameters": {...}}`` from a markup block."""
    body = block.body.strip()
    if body.startswith("<|plugin|>"):
        body = body[len("<|plugin|>") :].strip()
    call_id = f"call_{secrets.token_hex(8)}"
    try:
        data = json.loads(body)
    except ValueError:
        return ToolCall(call_id, "", body)  # the agent reports the bad call back to the model
    if not isinstance(data, dict):
        return ToolCall(call_id, "", body)
    args = data.get("arguments", data.get("parameters", {}))
    return ToolCall(call_id, str(data.get("name", "")), args if isinstance(args, str) else json.dumps(args))


def _feed_completion(acc: _Accumulator, completion: t.Any) -> list[Delta]:
    """Turn a non-streaming completion into the same chunks a stream would give."""
    acc.model = completion.model
    acc.id = completion.id
    if completion.usage is not None:
        acc.usage = _usage_of(completion.usage)
    out: list[Delta] = []
    if not completion.choices:
        return out
    choice = completion.choices[0]
    message = choice.message
    acc._content(message, out)
    for index, tc in enumerate(message.tool_calls or ()):
        fn = getattr(tc, "function", None)
        if fn is None:
            continue
        acc.calls[index] = [tc.id, fn.name, [fn.arguments or ""]]
        out.append(Delta(fn.arguments or "", "tool_args", tc.id))
    if choice.finish_reason:
        acc.finish_reasons.append(choice.finish_reason)
    out.extend(acc.finish())
    return out


def _finished(ctx: RunContext, acc: _Accumulator) -> bool:
    """Whether a stream that broke had already given its finish reason.

    The answer is then complete, only its tail (a usage chunk, ``[DONE]``) is
    lost, so the call succeeds.
    """
    return bool(acc.finish_reasons) and not ctx.cancelled
