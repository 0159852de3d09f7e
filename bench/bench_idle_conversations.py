"""Benchmark: what an idle conversation costs the demo's web app (memory and file descriptors).

Each conversation is a real ``POST /api/chat`` (one question, answered to the
end by the seeds' weather agent on the ``openai`` client against the embedded
:class:`~streamtap.testing.FakeOpenAI`, over real HTTP), then left idle.
The app is made as ``streamtap demo`` makes it (:func:`streamtap.demo.agent_factory`:
one model client shared by every conversation's agent). ``--per-chat-client``
builds the model (so an ``openai`` client and its keep-alive socket) per
conversation instead, as the demo did before, for comparison.

The model server runs in a child process (``streamtap fake-openai``: it keeps
a record of every request, for tests, which is not the app's cost); the web
app and the load generator share this process, measured from
``/proc/self/status`` (VmRSS), ``/proc/self/fd`` and ``tracemalloc`` (bytes
still allocated by Python code): after a warm-up round of conversations, and
after ``--chats`` more. Reports per-conversation costs.

By default the event store keeps each finished answer's events for replay
(``?run=``, 600 s), which is most of the memory; ``--store-ttl 1`` lets them
expire, leaving the conversations' own cost.

Run: ``python bench/bench_idle_conversations.py [--chats 1000] [--concurrency 8] [--store-ttl S] [--per-chat-client]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import typing as t

import httpx

from streamtap.demo import agent_factory
from streamtap.demo.weather import weather_agent
from streamtap.web import MemoryEventStore, create_app
from streamtap.web.server import BackgroundServer


def rss_kb() -> int:
    """This process's resident set size, in KiB (``VmRSS``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


async def converse(client: httpx.AsyncClient, url: str, chat_id: str) -> None:
    """One conversation: one question, read to ``finish`` and ``[DONE]``."""
    body = {
        "id": chat_id,
        "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
    }
    async with client.stream("POST", url + "/api/chat", json=body) as r:
        text = (await r.aread()).decode()
    assert r.status_code == 200, (r.status_code, text[:200])
    parts = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: {")]
    assert parts[-1]["type"] == "finish" and text.rstrip().endswith("data: [DONE]"), parts[-1]


async def measure(url: str, chats: int, concurrency: int, store_ttl: float | None) -> dict[str, float]:
    """Warm up, then hold ``chats`` idle conversations; returns the measurements."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # warm-up, as many at once as later: the client's connections, the model client's pool, first-use allocations
        await asyncio.gather(*(converse(client, url, f"warm{i}") for i in range(concurrency)))
        gc.collect()
        tracemalloc.start()
        rss0, fds0 = rss_kb(), open_fds()
        t0 = time.perf_counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(chats):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                await converse(client, url, f"idle{queue.get_nowait()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.perf_counter() - t0
        if store_ttl is not None:  # let the last answers' events expire too (the store expires on its next run)
            await asyncio.sleep(store_ttl + 0.1)
            await converse(client, url, "idle-last")
        gc.collect()
        rss1, fds1 = rss_kb(), open_fds()
        held_kb = tracemalloc.get_traced_memory()[0] / 1024
        tracemalloc.stop()
    return {"rss0_kb": rss0, "rss1_kb": rss1, "fds0": fds0, "fds1": fds1, "seconds": took, "held_kb": held_kb}


@contextlib.contextmanager
def model_server() -> t.Iterator[str]:
    """``streamtap fake-openai`` in a child process; yields its base URL."""
    cmd = [sys.executable, "-m", "streamtap.cli", "fake-openai", "--port", "0", "--delay", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "fake OpenAI server on " not in line:
            raise RuntimeError(f"the model server did not start: {line!r}")
        yield line.split("fake OpenAI server on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run the benchmark; print the figures."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--chats", type=int, default=1000, help="idle conversations to hold (default 1000; the app keeps at most 1000)"
    )
    p.add_argument("--concurrency", type=int, default=8, help="conversations started at a time (default 8)")
    p.add_argument(
        "--store-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the event store's ttl (default 600 s: every answer is kept for replay); a short one measures the conversations alone",
    )
    p.add_argument(
        "--per-chat-client",
        action="store_true",
        help="a model client per conversation (the demo before), for comparison",
    )
    a = p.parse_args(argv)
    with model_server() as base_url:
        if a.per_chat_client:

            def factory() -> t.Any:
                return weather_agent(base_url=base_url, asynchronous=True)

        else:
            factory = agent_factory(base_url)
        app = create_app(factory, store=MemoryEventStore(ttl=a.store_ttl) if a.store_ttl is not None else None)
        with BackgroundServer(app) as srv:
            m = asyncio.run(measure(srv.url, a.chats, a.concurrency, a.store_ttl))
            held = len(app.state.chat.conversations)
    per_kb = (m["rss1_kb"] - m["rss0_kb"]) / a.chats
    per_fd = (m["fds1"] - m["fds0"]) / a.chats
    mode = "a model client per conversation" if a.per_chat_client else "one shared model client (streamtap demo)"
    kept = (
        f"answers expired after {a.store_ttl} s"
        if a.store_ttl is not None
        else "each answer kept for replay (store ttl 600 s)"
    )
    print(f"idle conversations: {a.chats} ({held} held by the app), {mode}, {kept}")
    print(f"  RSS   {m['rss0_kb'] / 1024:.1f} MiB -> {m['rss1_kb'] / 1024:.1f} MiB: {per_kb:.1f} KiB per conversation")
    print(f"  fds   {m['fds0']} -> {m['fds1']}: {per_fd:.3f} per conversation")
    print(
        f"  Python allocations held: {m['held_kb'] / 1024:.1f} MiB: {m['held_kb'] / a.chats:.1f} KiB per conversation (tracemalloc)"
    )
    print(f"  took  {m['seconds']:.1f} s ({a.chats / m['seconds']:.0f} conversations/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
