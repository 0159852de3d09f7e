"""Benchmark: streamtap on Redis Streams (``exporters/streamtap-redis``), against a real redis-server on loopback.

Three figures, in one run:

1. **Events per second per producer process** through Redis: a real module's
   events (``Event.to_dict()``) appended with :class:`~streamtap_redis.RunLog`
   (pipelined ``XADD``) until Redis acknowledged all of them; also the whole
   path, module run included (``astart`` -> ``RedisEventStore.append``).
2. **Chunk emitted -> SSE frame received** latency p50/p99: worker processes
   (``streamtap worker``) run a module stamping each chunk with its wall-clock
   time; the client reads the UI message stream from ``streamtap serve --redis``
   web processes; at 1 and 200 concurrent streams, with 1 and 4 web processes.
3. **Time to first token** (request sent -> first ``text-delta``) of a chat
   model on the embedded model server: ``streamtap serve`` in-process vs
   ``streamtap serve --redis`` + a worker.

The load generator (this process, one asyncio loop) shares the machine with
the servers, so high-concurrency latencies include its own parsing time.

Run: ``python bench/bench_redis.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import typing as t

import httpx

from streamtap import ModuleBase
from streamtap.testing import FakeOpenAI
from streamtap_redis import Keys, RedisEventStore, RunLog, connect
from streamtap_redis.testing import RedisServer, free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Words(ModuleBase):
    async def forward(self, n: int) -> t.AsyncIterator[str]:
        for i in range(n):
            yield f"token{i} "


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(url: str, n: int) -> tuple[float, float]:
    client = await connect(url)
    handle = Words().astart(n)
    events = [ev.to_dict() async for ev in handle.events()]
    await handle
    rid = events[0]["run"]["run_id"]
    log = RunLog(client, Keys("bench"), maxlen=n + 10, max_buffered=n + 10)
    t0 = time.perf_counter()
    for ev in events:
        await log.put(rid, ev)
    await log.finish(rid, timeout=120)
    writer = len(events) / (time.perf_counter() - t0)
    assert await client.xlen(Keys("bench").run(rid)) == len(events) + 1
    store = RedisEventStore(client, Keys("bench2"), log=RunLog(client, Keys("bench2"), maxlen=n + 10))
    t0 = time.perf_counter()
    handle = Words().buffered(4096).astart(n)
    await store.create(handle.run_id)
    count = 0
    async for ev in handle.events():
        await store.append(handle.run_id, ev.to_dict())
        count += 1
    await store.finish(handle.run_id)
    whole = count / (time.perf_counter() - t0)
    await store.aclose()
    await log.aclose()
    await client.aclose()
    return writer, whole


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), out.get("PYTHONPATH", "")])
    out.update(extra)
    return out


def spawn(args: list[str], environ: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", *args],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert b"ready" in line, line


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def _post_sse(base: str, path: str, body: dict[str, t.Any]) -> t.AsyncIterator[bytes]:
    """POST ``body`` and yield the response's SSE ``data:`` lines (bytes), on a bare asyncio connection.

    The load generator shares the machine with the servers it measures, so it must cost next to nothing per
    frame: an ``httpx.AsyncClient`` per stream built an SSL context each (the system CA bundle loaded 200
    times: py-spy put 96% of this process there, seconds in which the first streams' frames waited), and
    one shared client still spent 60% of its time in httpcore's pool bookkeeping (``is_idle`` scans of every
    connection on each response close). Reading lines off a socket measures the servers instead.
    """
    host, _, port = base.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    try:
        status = await reader.readline()
        assert b" 200 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers
        # The body is chunked; uvicorn sends each SSE frame as one chunk, so chunk-size lines never split a frame.
        while line := await reader.readline():
            if line.startswith(b"data: "):
                if line.startswith(b"data: [DONE]"):
                    return
                yield line[6:]
    finally:
        writer.close()


async def stream_latencies(base: str, streams: int, tag: str) -> list[float]:
    lat: list[float] = []

    async def one(i: int) -> None:
        body = {"id": f"{tag}{i}", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "go"}]}]}
        async for data in _post_sse(base, "/api/chat", body):
            now = time.time()
            if b'"text-delta"' in data:
                part = json.loads(data)
                lat.extend(now - float(s) for s in part["delta"].split(";") if s)

    await asyncio.gather(*(one(i) for i in range(streams)))
    return lat


async def ttft(base: str, n: int, tag: str) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(n):
            body = {
                "id": f"{tag}{i}",
                "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "hello there"}]}],
            }
            t0 = time.perf_counter()
            async with client.stream("POST", base + "/api/chat", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"text-delta"' in line:
                        out.append(time.perf_counter() - t0)
                        break
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_redis", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events and chunks")
    a = p.parse_args(argv)
    n = 50_000 if a.quick else 200_000
    chunks = 10 if a.quick else 25
    rows: list[str] = []
    with RedisServer() as redis_srv, FakeOpenAI() as model:
        url = redis_srv.url
        writer, whole = asyncio.run(throughput(url, n))
        rows.append(f"events/s per producer, RunLog alone ({n} events): {writer:,.0f}")
        rows.append(f"events/s per producer, module run + store.append: {whole:,.0f}")
        # the same load without Redis (runs in the web process): what the load generator and the web tier cost alone
        e = env(BENCH_CHUNKS=str(chunks), BENCH_INTERVAL="0.02")
        port = free_port()
        local = spawn(["serve", "bench.redis_targets:stamped", "--port", str(port)], e)
        try:
            wait_http(f"http://127.0.0.1:{port}")
            for streams in (1, 200):
                ms = [
                    x * 1000 for x in asyncio.run(stream_latencies(f"http://127.0.0.1:{port}", streams, f"l{streams}-"))
                ]
                rows.append(
                    f"chunk -> SSE frame, in-process baseline (no Redis), {streams} stream(s): p50 {pct(ms, 0.5):.2f} ms, p99 {pct(ms, 0.99):.2f} ms"
                )
        finally:
            stop([local])
        for webs in (1, 4):
            prefix = f"lat{webs}"
            e = env(BENCH_CHUNKS=str(chunks), BENCH_INTERVAL="0.02")
            workers = [
                spawn(
                    [
                        "worker",
                        "bench.redis_targets:stamped",
                        "--redis",
                        url,
                        "--prefix",
                        prefix,
                        "--concurrency",
                        "200",
                    ],
                    e,
                )
                for _ in range(2)
            ]
            for w in workers:
                wait_ready(w)
            port = free_port()
            web = spawn(
                [
                    "serve",
                    "bench.redis_targets:stamped",
                    "--redis",
                    url,
                    "--prefix",
                    prefix,
                    "--port",
                    str(port),
                    "--workers",
                    str(webs),
                ],
                e,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                wait_http(base)
                for streams in (1, 200):
                    lat = asyncio.run(stream_latencies(base, streams, f"s{streams}-"))
                    ms = [x * 1000 for x in lat]
                    rows.append(
                        f"chunk -> SSE frame, {webs} web process(es), {streams} stream(s): p50 {pct(ms, 0.5):.2f} ms, p99 {pct(ms, 0.99):.2f} ms ({len(ms)} chunks)"
                    )
            finally:
                stop([web, *workers])
        # TTFT: in-process vs through Redis, both servers up at once and asked in turn (the machine's load hits both alike)
        e = env(OPENAI_BASE_URL=model.base_url)
        local_port, redis_port = free_port(), free_port()
        worker = spawn(["worker", "bench.redis_targets:chat", "--redis", url, "--prefix", "ttft"], e)
        wait_ready(worker)
        local = spawn(["serve", "bench.redis_targets:chat", "--port", str(local_port)], e)
        web = spawn(
            ["serve", "bench.redis_targets:chat", "--redis", url, "--prefix", "ttft", "--port", str(redis_port)], e
        )
        in_process: list[float] = []
        redis_path: list[float] = []
        try:
            for port in (local_port, redis_port):
                wait_http(f"http://127.0.0.1:{port}")
                asyncio.run(ttft(f"http://127.0.0.1:{port}", 3, "warm"))
            for i in range(10 if a.quick else 40):
                in_process += asyncio.run(ttft(f"http://127.0.0.1:{local_port}", 1, f"l{i}-"))
                redis_path += asyncio.run(ttft(f"http://127.0.0.1:{redis_port}", 1, f"r{i}-"))
        finally:
            stop([local, web, worker])
        a_ms, b_ms = statistics.median(in_process) * 1000, statistics.median(redis_path) * 1000
        rows.append(
            f"TTFT median: in-process {a_ms:.2f} ms, via Redis + worker {b_ms:.2f} ms (ratio {b_ms / a_ms:.2f}x)"
        )
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
