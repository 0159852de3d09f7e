"""Helpers of the web tests: test modules, an SSE reader, the UI message stream protocol checker."""

from __future__ import annotations

import asyncio
import json
import typing as t

import httpx

import streamtap
from streamtap import Delta, ModuleBase

# -- the AI SDK UI message stream rules (v6), as the JS client enforces them ---------

V6_TYPES = {
    "start", "finish", "abort", "error", "start-step", "finish-step", "message-metadata",
    "text-start", "text-delta", "text-end", "reasoning-start", "reasoning-delta", "reasoning-end",
    "tool-input-start", "tool-input-delta", "tool-input-available", "tool-input-error",
    "tool-output-available", "tool-output-error", "tool-approval-request", "tool-output-denied",
    "source-url", "source-document", "file",
}  # fmt: skip


def check_ui_stream(parts: list[dict[str, t.Any]], *, done: bool = True) -> None:
    """Assert the ordering rules of the UI message stream v1 (and that every part type is known to v6)."""
    assert parts, "empty stream"
    assert parts[0]["type"] == "start", parts[0]
    open_text: set[str] = set()
    open_reasoning: set[str] = set()
    tools: dict[str, str] = {}
    step = False
    for i, p in enumerate(parts):
        typ = p["type"]
        assert typ in V6_TYPES or (typ.startswith("data-") and len(typ) > 5), f"unknown part type {typ!r} at {i}"
        if i and typ == "start":
            raise AssertionError(f"second start at {i}")
        if typ in ("finish", "abort"):
            assert i == len(parts) - 1, f"{typ} at {i} is not last: {parts[i + 1 :]}"
            assert not step and not open_text and not open_reasoning, (step, open_text, open_reasoning)
        for kind, opened in (("text", open_text), ("reasoning", open_reasoning)):
            if typ == f"{kind}-start":
                assert p["id"] not in opened, f"{typ} {p['id']} twice"
                opened.add(p["id"])
            elif typ in (f"{kind}-delta", f"{kind}-end"):
                assert p["id"] in opened, f"{typ} for a part that is not open: {p}"
                if typ.endswith("-delta"):
                    assert isinstance(p["delta"], str)
                else:
                    opened.discard(p["id"])
        if typ == "start-step":
            assert not step, f"start-step inside a step at {i}"
            step = True
        elif typ == "finish-step":
            assert step, f"finish-step without start-step at {i}"
            assert not open_text and not open_reasoning, f"finish-step with open parts at {i}"
            step = False
        elif typ == "tool-input-start":
            assert isinstance(p["toolName"], str) and p["toolCallId"] not in tools
            tools[p["toolCallId"]] = "streaming"
        elif typ == "tool-input-delta":
            assert tools.get(p["toolCallId"]) == "streaming", f"tool-input-delta before tool-input-start: {p}"
        elif typ == "tool-input-available":
            assert tools.get(p["toolCallId"]) == "streaming", p
            tools[p["toolCallId"]] = "available"
        elif typ in ("tool-output-available", "tool-output-error"):
            assert tools.get(p["toolCallId"]) == "available", f"{typ} for an unknown call: {p}"
            tools[p["toolCallId"]] = "done"
    if done:
        assert parts[-1]["type"] in ("finish", "abort"), parts[-1]


class SSE(t.NamedTuple):
    """One response read as SSE."""

    status: int
    headers: httpx.Headers
    frames: list[dict[str, t.Any]]  # {"id", "data", "comment"...}
    done: bool  # saw data: [DONE]

    @property
    def parts(self) -> list[dict[str, t.Any]]:
        return [json.loads(f["data"]) for f in self.frames if "data" in f and f["data"] != "[DONE]"]


def parse_frames(text: str) -> list[dict[str, t.Any]]:
    """Split an SSE body into frames (dicts of field -> value; comments under ``comment``)."""
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, t.Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame.setdefault("comment", []).append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[field] = frame[field] + "\n" + value if field == "data" and field in frame else value
        frames.append(frame)
    return frames


async def read_sse(client: httpx.AsyncClient, method: str, url: str, **kw: t.Any) -> SSE:
    """Send a request and read the whole response as SSE."""
    async with client.stream(method, url, **kw) as r:
        body = (await r.aread()).decode()
    frames = parse_frames(body)
    return SSE(r.status_code, r.headers, frames, any(f.get("data") == "[DONE]" for f in frames))


def chat_body(text: str, chat_id: str = "chat1", **extra: t.Any) -> dict[str, t.Any]:
    """An AI SDK chat body with one user message."""
    return {
        "id": chat_id,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        **extra,
    }


# -- test modules ------------------------------------------------------------------


class Talker(ModuleBase):
    """A fake model call: reasoning, then the words of its input, ``delay`` seconds apart."""

    kind = "llm"
    blocking = False

    def __init__(self, delay: float = 0.0, reasoning: bool = True) -> None:
        self.delay = delay
        self.reasoning = reasoning

    async def forward(self, text: str) -> t.AsyncIterator[t.Any]:
        if self.reasoning:
            yield Delta("The user said something; ", "reasoning")
            yield Delta("I will repeat it.", "reasoning")
        for i, word in enumerate(text.split(" ")):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield ("" if i == 0 else " ") + word


class Weather(ModuleBase):
    """A tool: the weather of a city, or a failure for an unknown one."""

    kind = "tool"
    blocking = False

    def forward(self, city: str) -> dict[str, t.Any]:
        if city == "Atlantis":
            raise LookupError(f"no weather station in {city}")
        return {"city": city, "temperature": 10, "unit": "celsius"}


class ToolModel(ModuleBase):
    """A fake model call that asks for one tool call, streaming its arguments."""

    kind = "llm"
    blocking = False

    async def forward(self, call: tuple[str, str]) -> str:
        call_id, city = call
        ctx = streamtap.current()
        assert ctx is not None
        args = json.dumps({"city": city})
        for piece in (args[:5], args[5:]):
            ctx.chunk(piece, "tool_args", call_id)
        return ""


class Agent(ModuleBase):
    """A function-call agent: model asks for a tool, the tool runs, the model answers."""

    kind = "agent"
    blocking = False

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def forward(self, question: str) -> t.AsyncIterator[str]:
        ctx = streamtap.current()
        assert ctx is not None
        city = question.rsplit(" ", 1)[-1].strip("?")
        await ToolModel().acall(("call_1", city))
        ctx.tool("call_1", "get_weather", "requested", arguments={"city": city})
        try:
            result = await Weather().acall(city)
        except LookupError as exc:
            ctx.tool("call_1", "get_weather", "error", error=exc)
            answer = f"I could not get the weather in {city}."
        else:
            ctx.tool("call_1", "get_weather", "result", result=result)
            answer = f"It is {result['temperature']} degrees in {city}."
        streamtap.emit("progress", {"step": "answering"})
        async for piece in Talker(self.delay, reasoning=False).astream(answer).text():
            yield piece


class Failing(ModuleBase):
    """Streams a little, then fails."""

    kind = "agent"
    blocking = False

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        yield "partial "
        yield "answer"
        raise RuntimeError("the model went away")


class Returning(ModuleBase):
    """Returns its answer without streaming it."""

    blocking = False

    async def forward(self, text: str) -> str:
        return f"Answer to: {text}"


class Gate:
    """Lets a test hold a module at a point and release it (an asyncio.Event usable across threads)."""

    def __init__(self) -> None:
        import threading

        self.event = threading.Event()

    async def wait(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.event.wait)
