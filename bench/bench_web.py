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
and, for the TTFT ratio to the same model calls without the web layer (median of
five rounds, each against its own baseline):
``python bench/bench_web.py --baseline --scenario chat --repeats 5``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
import typing as t

from streamtap.demo.weather import weather_agent
from streamtap.llm.openai import AsyncOpenAIChat
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer


class Stream(t.NamedTuple):
    """What one chat stream gave the load generator."""

    ttft: float
    """Seconds from the request's first byte to the first ``text-delta`` part (NaN: none came)."""
    parts: int
    text: str
    problems: list[str]


def _dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    out, pos = bytearray(), 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 4 + size


def _check(head: bytes, body: bytes) -> tuple[int, str, list[str]]:
    """Parse one finished response: UI stream parts, the streamed text, what is wrong with it."""
    status = head.split(b" ", 2)[1]
    if status != b"200":
        return 0, "", [f"HTTP {status.decode()}"]
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    parts: list[dict[str, t.Any]] = []
    done = False
    for frame in body.decode().split("\n\n"):
        for line in frame.splitlines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                parts.append(json.loads(line[6:]))
    problems = [] if done else ["no [DONE]"]
    if not parts or parts[0]["type"] != "start" or parts[-1].get("type") != "finish":
        problems.append(f"bad ends: {parts[:1]} ... {parts[-1:]}")
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    return len(parts), text, problems


async def one(url: str, i: int, question: str) -> Stream:
    """One ``POST /api/chat``, read to its end.

    The load generator is a bare HTTP/1.1 client on asyncio streams that only
    looks for the first ``text-delta`` while reading and parses the rest after
    the response ended, so its own CPU does not become the TTFT it measures.
    (With ``httpx``, 200 concurrent streams kept its connection pool busy --
    a scan of every connection per request and per response -- and the last
    requests left the client up to 2.5 s late; httpx's trace hooks showed it.)
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(
        {
            "id": f"bench{i}",
            "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": question}]}],
            "trigger": "submit-message",
        }
    ).encode()
    request = (
        f"POST /api/chat HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    ttft = float("nan")
    received = bytearray()
    while data := await reader.read(65536):
        if ttft != ttft and b'"text-delta"' in received[-16:] + data:  # noqa: PLR0124 - NaN: not seen yet
            ttft = time.perf_counter() - t0
        received += data
    writer.close()
    head, _, payload = bytes(received).partition(b"\r\n\r\n")
    return Stream(ttft, *_check(head, payload))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def run(url: str, n: int, question: t.Callable[[int], str], expect: t.Callable[[int], str]) -> dict:
    await one(url, -1, question(0))  # warm-up: imports and the model client's connection pool
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(url, i, question(i)) for i in range(n)))
    wall = time.perf_counter() - t0
    bad = []
    for i, r in enumerate(results):
        problems = r.problems
        if r.text != expect(i):
            problems = [*problems, f"text {r.text[:60]!r} != {expect(i)[:60]!r}"]
        if problems:
            bad.append((i, problems))
    ttfts = [r.ttft for r in results]
    parts = sum(r.parts for r in results)
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


def _question(i: int) -> str:
    return f"stream {i} " + " ".join(f"w{j}" for j in range(20))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.01, help="model server seconds per token")
    ap.add_argument("--scenario", choices=("chat", "agent", "both"), default="both")
    ap.add_argument(
        "--baseline", action="store_true", help="also run the model calls without the web layer, for comparison"
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="rounds (baseline and chat alternate in each); medians are reported"
    )
    ap.add_argument("--serve", choices=("chat", "agent"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.delay)
    ok = True
    rounds: dict[str, list[dict]] = {"direct": [], "chat": []}
    for _ in range(args.repeats):
        if args.baseline:
            with FakeOpenAI(token_delay=args.delay) as model:
                base = asyncio.run(direct(model.base_url, args.streams, _question))
            print("direct", json.dumps(base), flush=True)
            rounds["direct"].append(base)
        if args.scenario in ("chat", "both"):
            with server("chat", args.delay) as url:
                res = asyncio.run(run(url, args.streams, _question, lambda i: f"You said: {_question(i)}"))
            print("chat  ", json.dumps(res), flush=True)
            rounds["chat"].append(res)
            ok &= res["failed"] == 0
    if args.scenario in ("agent", "both"):
        expected = "The current weather in Paris is 22 degrees Celsius."
        with server("agent", args.delay) as url:
            res = asyncio.run(
                run(url, args.streams, lambda i: "What's the weather in Paris in celsius?", lambda i: expected)
            )
        print("agent ", json.dumps(res))
        ok &= res["failed"] == 0
    if rounds["direct"] and rounds["chat"]:
        # Each round's ratio uses that round's own baseline: the machine's speed drifts between rounds.
        ratios = [c["ttft_p50_ms"] / d["ttft_p50_ms"] for d, c in zip(rounds["direct"], rounds["chat"])]
        spread = [c["ttft_p99_ms"] / c["ttft_p50_ms"] for c in rounds["chat"]]
        summary = {
            "rounds": len(ratios),
            "direct_ttft_p50_ms": _median([d["ttft_p50_ms"] for d in rounds["direct"]]),
            "chat_ttft_p50_ms": _median([c["ttft_p50_ms"] for c in rounds["chat"]]),
            "chat_vs_direct_p50": round(_median(ratios), 2),
            "chat_p99_vs_p50": round(_median(spread), 2),
        }
        print("median", json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
