"""Benchmark: 200 concurrent chat streams on one uvicorn worker against the embedded model server.

Every stream is a real ``POST /api/chat`` (AI SDK UI message stream over SSE)
answered by a real model module on the ``openai`` client talking to the
embedded :class:`~streamtap.testing.FakeOpenAI` over real HTTP. Each
stream is checked complete and correct (``start`` first, ``finish`` last,
``[DONE]``, the exact expected text); the script exits non-zero otherwise.

Reports time to first token (request sent -> first ``text-delta`` received)
p50/p99, and UI stream parts per second over the whole run.

Scenarios:

* ``chat``: the async chat module (``AsyncOpenAIChat``) served directly;
* ``agent``: the seeds' weather agent (a synchronous module: each run holds
  one of the SDK's worker threads while it waits for the model).

The server (one uvicorn worker and the embedded model server, as in
``streamtap demo``) runs in a child process, so the load generator does not
share its interpreter.

Run: ``python bench/bench_web.py [--streams 200] [--delay 0.01] [--scenario chat|agent|both]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import typing as t

import httpx

from streamtap.demo.weather import weather_agent
from streamtap.llm.openai import AsyncOpenAIChat
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer


async def one(client: httpx.AsyncClient, url: str, i: int, question: str) -> tuple[float, int, str, list[str]]:
    body = {
        "id": f"bench{i}",
        "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": question}]}],
        "trigger": "submit-message",
    }
    t0 = time.perf_counter()
    ttft = None
    parts: list[dict] = []
    done = False
    async with client.stream("POST", url + "/api/chat", json=body) as r:
        assert r.status_code == 200, r.status_code
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            part = json.loads(line[6:])
            if ttft is None and part["type"] == "text-delta" and part["delta"]:
                ttft = time.perf_counter() - t0
            parts.append(part)
    problems = []
    if not done:
        problems.append("no [DONE]")
    if not parts or parts[0]["type"] != "start" or parts[-1].get("type") != "finish":
        problems.append(f"bad ends: {parts[:1]} ... {parts[-1:]}")
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    return (ttft if ttft is not None else float("nan")), len(parts), text, problems


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def run(url: str, n: int, question: t.Callable[[int], str], expect: t.Callable[[int], str]) -> dict:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    # TCP_NODELAY: without it the client's small request writes wait on delayed ACKs (~40 ms per request).
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(timeout=120, transport=transport) as client:
        await one(client, url, -1, question(0))  # warm-up: imports and the model client's connection pool
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, i, question(i)) for i in range(n)))
        wall = time.perf_counter() - t0
    bad = []
    for i, (_, _, text, problems) in enumerate(results):
        if text != expect(i):
            problems = [*problems, f"text {text[:60]!r} != {expect(i)[:60]!r}"]
        if problems:
            bad.append((i, problems))
    ttfts = [r[0] for r in results]
    parts = sum(r[1] for r in results)
    return {
        "streams": n,
        "failed": len(bad),
        "first_failures": bad[:3],
        "wall_s": round(wall, 3),
        "ttft_p50_ms": round(pct(ttfts, 0.50) * 1000, 1),
        "ttft_p99_ms": round(pct(ttfts, 0.99) * 1000, 1),
        "parts": parts,
        "parts_per_s": round(parts / wall),
    }


async def direct(base_url: str, n: int, question: t.Callable[[int], str]) -> dict:
    """Baseline without the web layer: the same model calls, iterated in-process with ``astream``."""
    llm = AsyncOpenAIChat("fake-gpt", base_url=base_url, api_key="x", max_retries=0)

    async def call(i: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        ttft, events = None, 0
        async for ev in llm.astream(question(i)):
            events += 1
            if ttft is None and ev.kind == "chunk" and ev.channel == "text" and ev.delta:
                ttft = time.perf_counter() - t0
        return (ttft if ttft is not None else float("nan")), events

    await call(-1)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(call(i) for i in range(n)))
    wall = time.perf_counter() - t0
    ttfts = [r[0] for r in results]
    events = sum(r[1] for r in results)
    return {
        "streams": n,
        "wall_s": round(wall, 3),
        "ttft_p50_ms": round(pct(ttfts, 0.50) * 1000, 1),
        "ttft_p99_ms": round(pct(ttfts, 0.99) * 1000, 1),
        "events": events,
        "events_per_s": round(events / wall),
    }


def serve(scenario: str, delay: float) -> int:
    """Child process: the embedded model server and one uvicorn worker; prints the URL, serves until stdin closes."""
    with FakeOpenAI(token_delay=delay) as model:
        if scenario == "chat":
            # One shared module (and so one HTTP client pool) for every conversation.
            module = AsyncOpenAIChat("fake-gpt", base_url=model.base_url, api_key="x", max_retries=0)
        else:
            module = weather_agent(base_url=model.base_url, asynchronous=True)
        with BackgroundServer(create_app(module), log_level="error") as srv:
            print(srv.url, flush=True)
            sys.stdin.read()
    return 0


@contextlib.contextmanager
def server(scenario: str, delay: float) -> t.Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", scenario, "--delay", str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.01, help="model server seconds per token")
    ap.add_argument("--scenario", choices=("chat", "agent", "both"), default="both")
    ap.add_argument(
        "--baseline", action="store_true", help="also run the model calls without the web layer, for comparison"
    )
    ap.add_argument("--serve", choices=("chat", "agent"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.delay)
    ok = True
    if args.baseline:
        with FakeOpenAI(token_delay=args.delay) as model:
            base = asyncio.run(
                direct(model.base_url, args.streams, lambda i: f"stream {i} " + " ".join(f"w{j}" for j in range(20)))
            )
        print("direct", json.dumps(base))
    if args.scenario in ("chat", "both"):
        with server("chat", args.delay) as url:

            def q(i: int) -> str:
                return f"stream {i} " + " ".join(f"w{j}" for j in range(20))

            res = asyncio.run(run(url, args.streams, q, lambda i: f"You said: {q(i)}"))
        print("chat ", json.dumps(res))
        ok &= res["failed"] == 0
    if args.scenario in ("agent", "both"):
        expected = "The current weather in Paris is 22 degrees Celsius."
        with server("agent", args.delay) as url:
            res = asyncio.run(
                run(url, args.streams, lambda i: "What's the weather in Paris in celsius?", lambda i: expected)
            )
        print("agent", json.dumps(res))
        ok &= res["failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
