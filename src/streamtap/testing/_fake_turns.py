"""The scripted turns of the fake model: the story, the directives a prompt may carry, and how a reply is cut into tokens."""

from __future__ import annotations

import dataclasses
import json
import re
import typing as t

from ._fake_model import ToolMode

_CREATED = 1_700_000_000


_FAULT_AFTER = 2


_STORY = (
    "Covering one's ears to steal a bell is an old Chinese idiom. A thief wanted to steal a bell hanging on a "
    "gate, but knew its ringing would give him away. So he covered his own ears, thinking that if he could not "
    "hear it, nobody could. The bell rang, and he was caught. The story warns that fooling yourself does not "
    "make a problem go away."
)


_DIRECTIVE = re.compile(r"\[(fault|delay|tools)=([^\]\s]+)\]|\[(reasoning|bad-args|unknown-tool)\]")


_TOKEN = re.compile(r"\s*\S+|\s+")


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclasses.dataclass
class _Turn:
    id: str
    model: str
    text: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


def _response_model(model: t.Any) -> str:
    return f"{model}-fake-0001"


def _last_user_text(body: t.Any) -> str:
    if not isinstance(body, dict):
        return ""
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _tokens(text: str) -> list[str]:
    """Split text the way a tokenizer streams it: words with their leading whitespace."""
    return _TOKEN.findall(text) if text else []


def _small_pieces(text: str, size: int = 4) -> list[str]:
    """Split text (with markup) into short pieces so that markers straddle chunk boundaries."""
    out: list[str] = []
    for token in _tokens(text):
        out.extend(token[i : i + size] for i in range(0, len(token), size))
    return out


def _split_args(arguments: str) -> list[str]:
    """Split a tool call's JSON arguments over several chunks (at least 3 when long enough)."""
    if not arguments:
        return []
    size = max(1, min(8, len(arguments) // 3 or 1))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _has_markup(text: str) -> bool:
    return "<tool_call>" in text or "<|action_start|>" in text


def _inline_markup(calls: list[tuple[str, str, str]], mode: ToolMode) -> str:
    parts = ["Let me look that up."]
    for _cid, name, args in calls:
        if mode == "internlm":
            payload = json.dumps({"name": name, "parameters": json.loads(args)})
            parts.append(f"<|action_start|><|plugin|>\n{payload}<|action_end|>")
        else:
            payload = json.dumps({"name": name, "arguments": json.loads(args)})
            parts.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(parts)


def _usage(body: dict[str, t.Any], completion: int, reasoning: int) -> dict[str, t.Any]:
    prompt = 0
    for msg in body.get("messages") or []:
        if isinstance(msg, dict):
            prompt += 4 + len(re.findall(r"\S+", str(msg.get("content") or "")))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _answer_from(contents: list[str]) -> str:
    """Compose the final answer from tool results, like the LazyLLM seed's model does."""
    current: list[dict[str, t.Any]] = []
    forecast: list[dict[str, t.Any]] = []
    problems: list[str] = []
    for content in contents:
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if isinstance(data, dict) and "location" in data and "temperature" in data:
            (forecast if "num_days" in data else current).append(data)
        else:
            problems.append(content)
    sentences = []
    for items, first in ((current, "The current weather in"), (forecast, "The {n}-day forecast for")):
        clauses = []
        for i, d in enumerate(items):
            loc = d["location"]
            temp = d["temperature"]
            unit = str(d.get("unit", "")).capitalize()
            value = "unknown" if temp == "unknown" else f"{temp} degrees {unit}".rstrip()
            if i == 0:
                head = first.format(n=d.get("num_days", ""))
                clauses.append(f"{head} {loc} is {value}")
            else:
                clauses.append(f"in {loc}, it is {value}" if items is current else f"for {loc}, it is {value}")
        if clauses:
            text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + ", and " + clauses[-1]
            sentences.append(text + ".")
    if problems:
        sentences.append("I could not get that: " + " ".join(problems))
    return " ".join(sentences) if sentences else "The tools returned nothing."
