"""What the fake model says: the scripted turns of :class:`~streamtap.testing.FakeOpenAI` (answers, tool calls, reasoning) as chat-completion chunks."""

from __future__ import annotations

import json
import re
import typing as t

from ._fake_model import _CITIES, Behaviour
from ._fake_turns import (
    _CREATED,
    _DIRECTIVE,
    _STORY,
    _answer_from,
    _has_markup,
    _inline_markup,
    _last_user_text,
    _response_model,
    _small_pieces,
    _split_args,
    _tokens,
    _Turn,
    _usage,
)


class _ScriptedModel:
    """The scripted model, mixed into :class:`~streamtap.testing.FakeOpenAI`: a request body in, a turn and its chunks out."""

    _completion_ids: int
    _call_ids: int

    def _next_completion_id(self) -> str:
        self._completion_ids += 1
        return f"chatcmpl-fake{self._completion_ids:06d}"

    def _next_call_id(self) -> str:
        self._call_ids += 1
        return f"call_fake{self._call_ids:06d}"

    def _script(self, body: dict[str, t.Any], b: Behaviour) -> _Turn:
        messages = body.get("messages") or []
        offered = {
            (tool.get("function") or {}).get("name") for tool in body.get("tools") or [] if isinstance(tool, dict)
        }
        user = _DIRECTIVE.sub("", _last_user_text(body)).strip()
        turn = _Turn(id=self._next_completion_id(), model=_response_model(body.get("model")))
        tail: list[dict[str, t.Any]] = []
        for msg in reversed(messages):
            if not isinstance(msg, dict) or msg.get("role") == "user":
                break
            tail.append(msg)
        results = [m for m in reversed(tail) if m.get("role") == "tool"]
        if results:
            contents = [str(m.get("content", "")) for m in results]
            turn.text = _answer_from(contents)
            if b.reasoning:
                turn.reasoning = "I have the tool results; now I summarise them for the user."
            return turn
        calls = self._plan_calls(user, offered, b)
        if calls:
            if b.reasoning:
                names = ", ".join(sorted({c[1] for c in calls}))
                turn.reasoning = f"The user asks about the weather. I should call {names} once per city."
            if b.tool_mode == "native":
                turn.calls = calls
            else:
                turn.text = _inline_markup(calls, b.tool_mode)
            return turn
        ctx_match = re.search(r"context:\s*(.*?)\s*Question:", user, re.S | re.I)
        if ctx_match:
            facts = [line.strip() for line in ctx_match.group(1).splitlines() if line.strip()]
            turn.text = "According to the context: " + "; ".join(facts) + "." if facts else "The context is empty."
            return turn
        wants_json = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        if wants_json or "json" in user.lower():
            if b.reasoning:
                turn.reasoning = "The user wants JSON with one key, content."
            turn.text = json.dumps({"content": _STORY}, ensure_ascii=False)
            return turn
        if b.reasoning:
            turn.reasoning = "The user said something; I will repeat it back."
        turn.text = f"You said: {user}" if user else "Hello! How can I help you today?"
        return turn

    def _plan_calls(self, user: str, offered: set[t.Any], b: Behaviour) -> list[tuple[str, str, str]]:
        lower = user.lower()
        if b.unknown_tool and offered:
            return [(self._next_call_id(), "get_stock_price", json.dumps({"symbol": "ACME"}))]
        if b.bad_args and offered:
            calls = []
            name = "get_current_weather" if "get_current_weather" in offered else sorted(offered)[0]
            calls.append((self._next_call_id(), name, '{"location": "Tokyo'))
            other = "get_n_day_weather_forecast" if "get_n_day_weather_forecast" in offered else name
            calls.append((self._next_call_id(), other, json.dumps({"num_days": "three"})))
            return calls
        found = [(lower.find(key), loc) for key, loc in _CITIES.items() if key in lower]
        if not found or ("weather" not in lower and "forecast" not in lower and "temperature" not in lower):
            return []
        days = re.search(r"(\d+)[- ]day", lower)
        forecast = ("forecast" in lower or days is not None) and "get_n_day_weather_forecast" in offered
        name = "get_n_day_weather_forecast" if forecast else "get_current_weather"
        if name not in offered:
            return []
        unit = "celsius" if "celsius" in lower else "fahrenheit" if "fahrenheit" in lower else None
        calls = []
        for _, location in sorted(found):
            args: dict[str, t.Any] = {"location": location}
            if forecast:
                args["num_days"] = int(days.group(1)) if days else 3
            if unit:
                args["unit"] = unit
            calls.append((self._next_call_id(), name, json.dumps(args)))
        return calls

    @staticmethod
    def _base(turn: _Turn, include_usage: bool) -> dict[str, t.Any]:
        base: dict[str, t.Any] = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": turn.model,
            "system_fingerprint": "fp_streamtap_fake",
        }
        if include_usage:
            base["usage"] = None
        return base

    def _chunks(self, body: dict[str, t.Any], turn: _Turn) -> t.Iterator[dict[str, t.Any]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, t.Any], finish: str | None = None) -> dict[str, t.Any]:
            c = self._base(turn, include_usage)
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            return c

        yield chunk({"role": "assistant", "content": ""})
        reasoning_tokens = 0
        completion_tokens = 0
        for piece in _tokens(turn.reasoning):
            reasoning_tokens += 1
            yield chunk({"reasoning_content": piece})
        pieces = _small_pieces(turn.text) if _has_markup(turn.text) else _tokens(turn.text)
        for piece in pieces:
            completion_tokens += 1
            yield chunk({"content": piece})
        for index, (call_id, name, arguments) in enumerate(turn.calls):
            completion_tokens += 1
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            for part in _split_args(arguments):
                completion_tokens += 1
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls" if turn.calls else "stop")
        if include_usage:
            c = self._base(turn, False)
            c["choices"] = []
            c["usage"] = _usage(body, completion_tokens + reasoning_tokens, reasoning_tokens)
            yield c

    def _completion(self, body: dict[str, t.Any], turn: _Turn) -> dict[str, t.Any]:
        message: dict[str, t.Any] = {"role": "assistant", "content": turn.text if not turn.calls else None}
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if turn.calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in turn.calls
            ]
        completion = len(_tokens(turn.text)) + sum(len(_split_args(a)) + 1 for _, _, a in turn.calls)
        reasoning = len(_tokens(turn.reasoning))
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": _CREATED,
            "model": turn.model,
            "system_fingerprint": "fp_streamtap_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if turn.calls else "stop",
                }
            ],
            "usage": _usage(body, completion + reasoning, reasoning),
        }
