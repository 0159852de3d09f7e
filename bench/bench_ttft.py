"""Time to first user-visible token: streamtap vs the raw ``openai`` stream, on the same embedded server.

Two comparisons, each as a ratio of medians (streamtap / raw):

* **chat**: ``OpenAIChat.stream(q).text()`` (the call runs in the SDK's thread,
  the consumer reads from this one) vs ``client.chat.completions.create(stream=True)``
  iterated here, until the first non-empty content delta.
* **agent**: the seed's weather agent, ``agent.stream(query)`` (model turn with
  two parallel tool calls, tools, second model turn) vs the same three steps
  written by hand on the raw client, until the first token of the answer.

Both sides send the same requests (with ``stream_options.include_usage``, as the
module does) through one warm connection pool. The server adds no delay by
default (``--delay``), so the numbers are the SDK's own overhead.

Run: python bench/bench_ttft.py [--n 200] [--delay 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import typing as t

import openai

from streamtap.demo.weather import QUERY, weather_agent, weather_tools
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI


def _first_content(stream: t.Any, t0: float) -> float:
    """Seconds from ``t0`` to the raw stream's first content delta; the stream is closed after."""
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                return time.perf_counter() - t0
    finally:
        stream.close()
    raise RuntimeError("no content")


def raw_chat(client: openai.OpenAI, prompt: str) -> float:
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model="fake-gpt",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return _first_content(stream, t0)


def tap_chat(llm: OpenAIChat, prompt: str) -> float:
    t0 = time.perf_counter()
    stream = llm.stream(prompt)
    try:
        for piece in stream.text():
            if piece:
                return time.perf_counter() - t0
    finally:
        _close_and_wait(stream)
    raise RuntimeError("no content")


def _close_and_wait(stream: t.Any) -> None:
    """Close the stream (cancelling the run) and wait for the run to end, untimed, as the raw side does."""
    stream.close()
    with contextlib.suppress(Exception):
        stream.handle.result(timeout=10)


def raw_agent(client: openai.OpenAI, tools: t.Any) -> float:
    """The agent's three steps by hand: tool-call turn, tools in parallel-free order, answer turn."""
    t0 = time.perf_counter()
    schemas = tools.schemas()
    messages: list[dict[str, t.Any]] = [{"role": "user", "content": QUERY}]
    calls: dict[int, dict[str, str]] = {}
    for chunk in client.chat.completions.create(
        model="fake-gpt", messages=messages, tools=schemas, stream=True, stream_options={"include_usage": True}
    ):  # type: ignore[arg-type]
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        }
    )
    for c in calls.values():
        result = tools.get(c["name"]).fn(**json.loads(c["arguments"]))
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
    stream = client.chat.completions.create(
        model="fake-gpt", messages=messages, tools=schemas, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[arg-type]
    return _first_content(stream, t0)


def tap_agent(agent: t.Any) -> float:
    t0 = time.perf_counter()
    stream = agent.stream(QUERY)
    try:
        for event in stream:
            if event.kind == "chunk" and event.channel == "text" and event.delta:
                return time.perf_counter() - t0
    finally:
        _close_and_wait(stream)
    raise RuntimeError("no content")


def measure(fn: t.Callable[[], float], n: int) -> list[float]:
    for _ in range(5):  # warm up connections and code paths
        fn()
    return [fn() for _ in range(n)]


def report(name: str, raw: list[float], tap: list[float]) -> None:
    def ms(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[int(q) - 1] * 1000 if q != 50 else statistics.median(xs) * 1000

    ratio = statistics.median(tap) / statistics.median(raw)
    print(
        f"{name:6s} raw openai  median {ms(raw, 50):7.2f} ms  p90 {ms(raw, 90):7.2f} ms\n"
        f"{'':6s} streamtap   median {ms(tap, 50):7.2f} ms  p90 {ms(tap, 90):7.2f} ms   ratio {ratio:.2f}x"
    )


def main(argv: t.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="measured runs per side")
    parser.add_argument("--delay", type=float, default=0.0, help="server seconds per token")
    ns = parser.parse_args(argv)
    with FakeOpenAI(token_delay=ns.delay) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="bench", max_retries=0)
        llm = OpenAIChat("fake-gpt", base_url=srv.base_url, api_key="bench", max_retries=0)
        agent = weather_agent(llm)
        tools = weather_tools()
        prompt = "tell me something short"
        print(f"n={ns.n} per side, server delay {ns.delay * 1000:.0f} ms/token, time to first user-visible token")
        # Interleave the sides so that machine noise hits both alike.
        raw_c, tap_c, raw_a, tap_a = [], [], [], []
        for fn in (
            lambda: raw_chat(client, prompt),
            lambda: tap_chat(llm, prompt),
            lambda: raw_agent(client, tools),
            lambda: tap_agent(agent),
        ):
            measure(fn, 1)
        for _ in range(ns.n):
            raw_c.append(raw_chat(client, prompt))
            tap_c.append(tap_chat(llm, prompt))
            raw_a.append(raw_agent(client, tools))
            tap_a.append(tap_agent(agent))
        report("chat", raw_c, tap_c)
        report("agent", raw_a, tap_a)


if __name__ == "__main__":
    main()
