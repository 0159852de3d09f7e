"""A worker in this process against a real redis-server: dead letters, early stops, bad targets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import typing as t

import pytest
import redis.asyncio as aioredis

from streamtap import ModuleBase
from streamtap.exceptions import UsageError
from streamtap.serving import load_target
from streamtap_redis import Keys, RedisEventStore, Worker, connect
from streamtap_redis.requests import RunRequest
from streamtap_redis.state import ChatState
from streamtap_redis.testing import RedisServer, free_port
from streamtap_redis.worker import GROUP


class Slow(ModuleBase):
    """Streams words slowly (so a stop can come mid-run)."""

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        for word in str(text).split():
            await asyncio.sleep(0.01)
            yield word + " "


@pytest.fixture
async def client(redis_server: RedisServer) -> t.AsyncIterator[aioredis.Redis]:
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def _follow(store: RedisEventStore, run_id: str, timeout: float = 10.0) -> list[t.Mapping[str, t.Any]]:
    got: list[t.Mapping[str, t.Any]] = []
    after = -1
    async with asyncio.timeout(timeout):
        while True:
            res = await store.read(run_id, after)
            if res is not None and res.events:
                got += res.events
                after = res.events[-1]["seq"]
                continue
            if res is not None and res.finished:
                return got
            await store.wait(run_id, after, 1.0)


async def _running_worker(
    target: t.Any, client: aioredis.Redis, keys: Keys, **kw: t.Any
) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker(target, client, keys, **kw)
    await worker.ensure_group()
    return worker, asyncio.ensure_future(worker.run())


async def _close(worker: Worker, task: asyncio.Task[None]) -> None:
    await worker.aclose()
    task.cancel()  # the loop may have seen the close already and returned
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_unparseable_requests_and_failing_targets_go_to_the_dead_letter_stream(
    client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    state = ChatState(client, keys)

    def broken() -> ModuleBase:
        raise RuntimeError("no model configured")

    worker, task = await _running_worker(broken, client, keys)
    await client.xadd(keys.requests, {"r": b"{not json"})
    await client.xadd(keys.requests, {"r": json.dumps({"v": 1, "run_id": "bad id!"})})
    await store.create("r-target")
    assert await state.claim("chat-x", "r-target") is None
    await client.xadd(keys.requests, {"r": RunRequest("r-target", "chat-x", "hi").to_json()})
    events = await _follow(store, "r-target")
    async with asyncio.timeout(10):
        while await client.xlen(keys.dead) < 3:
            await asyncio.sleep(0.01)
    await _close(worker, task)
    dead = await client.xrange(keys.dead)
    reasons = sorted(fields[b"reason"].decode() for _, fields in dead)  # the three were handled concurrently
    assert "'run_id' must be" in reasons[0]
    assert "not valid JSON" in reasons[1]
    assert "could not build a module (RuntimeError: no model configured)" in reasons[2]
    # the chat of the failed target got an error, and is free again; nothing stays pending
    [end] = [e for e in events if e["kind"] == "end"]
    assert end["status"] == "error" and "could not build a module" in end["error"]["message"]
    assert await state.active("chat-x") is None
    pending = await client.xpending(keys.requests, "workers")
    assert pending["pending"] == 0


async def test_a_stop_that_comes_before_the_worker_wins(client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    await store.create("early")
    await client.xadd(keys.requests, {"r": RunRequest("early", None, "a b c d e f").to_json()})
    await client.set(keys.stop("early"), "1")  # stopped before any worker took the request
    worker, task = await _running_worker(Slow(), client, keys)
    events = await _follow(store, "early")
    await _close(worker, task)
    ends = [e for e in events if e["kind"] == "end"]
    assert [e["status"] for e in ends] == ["cancelled"]
    assert not [e for e in events if e["kind"] == "chunk"]


async def test_a_stop_message_cancels_a_running_run(client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    worker, task = await _running_worker(Slow(), client, keys)
    await store.create("live")
    await client.xadd(keys.requests, {"r": RunRequest("live", None, " ".join(["w"] * 500)).to_json()})
    after = -1
    async with asyncio.timeout(10):
        while after < 3:
            await store.wait("live", after, 1.0)
            res = await store.read("live", after)
            if res is not None and res.events:
                after = res.events[-1]["seq"]
    await client.publish(keys.stop_channel, "live")
    events = await _follow(store, "live")
    await _close(worker, task)
    assert [e["status"] for e in events if e["kind"] == "end"] == ["cancelled"]
    assert len([e for e in events if e["kind"] == "chunk"]) < 400


def test_load_target_names_what_is_wrong() -> None:
    with pytest.raises(UsageError, match="package.module:attr"):
        load_target("no_colon")
    with pytest.raises(UsageError, match="cannot import 'no_such_module_xyz'"):
        load_target("no_such_module_xyz:app")
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        load_target("cluster_targets:nope")
    with pytest.raises(UsageError, match="is int, not a ModuleBase"):
        load_target("cluster_targets:not_a_module")
    assert callable(load_target("cluster_targets:chat"))


def test_worker_command_fails_clearly_when_redis_is_unreachable() -> None:
    url = f"redis://:topsecret@127.0.0.1:{free_port()}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "streamtap.cli", "worker", "cluster_targets:chat", "--redis", url],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 1
    assert "redis://:***@127.0.0.1" in proc.stderr and "did not answer" in proc.stderr
    assert "topsecret" not in proc.stderr + proc.stdout
    serve = subprocess.run(
        [sys.executable, "-m", "streamtap.cli", "serve", "cluster_targets:chat", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )
    assert serve.returncode == 2 and "--workers 2 needs --redis URL" in serve.stderr


def _env() -> dict[str, str]:
    from cluster import env

    return env("http://127.0.0.1:9/v1")


async def test_a_live_worker_keeps_its_claim_fresh_so_a_long_run_is_not_taken_over(
    client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    # two workers, a claim timeout far shorter than the run: only the heartbeat keeps the claim
    # (heartbeats every 0.1 s leave a loaded CI machine 1.4 s of slack before the other worker may take over)
    one, task_one = await _running_worker(Slow(), client, keys, claim_timeout=1.5, heartbeat=0.1)
    two, task_two = await _running_worker(Slow(), client, keys, claim_timeout=1.5, heartbeat=0.1)
    await store.create("long")
    await client.xadd(
        keys.requests, {"r": RunRequest("long", None, " ".join(["w"] * 300)).to_json()}
    )  # ~3 s: two claim timeouts
    events = await _follow(store, "long", timeout=20)
    for worker, task in ((one, task_one), (two, task_two)):
        await _close(worker, task)
    assert not [e for e in events if e["kind"] == "custom" and e["name"] == "streamtap.attempt"]
    assert [e["status"] for e in events if e["kind"] == "end"] == ["ok"]
    assert one.completed + two.completed == 1


async def test_worker_close_takes_no_new_requests_and_finishes_runs_within_the_grace(
    client: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    worker, task = await _running_worker(Slow(), client, keys, grace=0.3)
    await store.create("g1")
    await client.xadd(keys.requests, {"r": RunRequest("g1", None, " ".join(["w"] * 1000)).to_json()})
    async with asyncio.timeout(10):
        while "g1" not in worker.running:
            await asyncio.sleep(0.005)
    await worker.aclose()  # what SIGTERM does: the run outlasts the grace, so it is cancelled
    await client.xadd(keys.requests, {"r": RunRequest("g2", None, "later").to_json()})
    await _close(worker, task)
    events = await _follow(store, "g1")
    assert [e["status"] for e in events if e["kind"] == "end"] == ["cancelled"]
    assert await client.exists(keys.meta("g2")) == 0  # never taken


async def test_a_worker_whose_heartbeat_is_late_never_takes_over_its_own_request(
    client: aioredis.Redis, prefix: str
) -> None:
    """Under load a worker's own claim can go idle past claim_timeout: its reclaim loop must not re-run it."""
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    # the heartbeat is slower than the claim timeout, as on a machine too busy to beat in time
    worker, task = await _running_worker(Slow(), client, keys, concurrency=4, claim_timeout=0.3, heartbeat=5.0)
    await store.create("own")
    await client.xadd(keys.requests, {"r": RunRequest("own", None, " ".join(["w"] * 120)).to_json()})  # ~1.2 s and more
    events = await _follow(store, "own", timeout=20)
    await _close(worker, task)
    assert not [e for e in events if e["kind"] == "custom" and e["name"] == "streamtap.attempt"]
    assert [e["status"] for e in events if e["kind"] == "end"] == ["ok"]
    assert worker.completed == 1


async def test_a_late_heartbeat_does_not_count_as_a_delivery_of_its_own_request(
    client: aioredis.Redis, prefix: str
) -> None:
    """A worker re-claiming its own request (its heartbeat fell behind) must not add a delivery.

    The delivery count is the attempt number a take-over records and what max_attempts is checked
    against: counted twice, a request retried once looked like its third attempt, or went to the
    dead letters while it was only run once.
    """
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    worker, task = await _running_worker(Slow(), client, keys, concurrency=4, claim_timeout=0.3, heartbeat=5.0)
    try:
        await store.create("late")
        await client.xadd(keys.requests, {"r": RunRequest("late", None, " ".join(["w"] * 150)).to_json()})
        after, chunks = -1, 0
        async with asyncio.timeout(20):
            while chunks < 80:  # 0.8 s of the run: the reclaim loop saw its own request idle twice or more
                res = await store.read("late", after)
                if res is not None and res.events:
                    chunks += sum(1 for e in res.events if e["kind"] == "chunk")
                    after = res.events[-1]["seq"]
                else:
                    await store.wait("late", after, 1.0)
        info = await client.xpending_range(keys.requests, GROUP, "-", "+", 10)
        assert [int(i["times_delivered"]) for i in info] == [1]
    finally:
        await _close(worker, task)


async def test_a_chat_is_free_before_its_runs_end_reaches_the_log(client: aioredis.Redis, prefix: str) -> None:
    """A client that read a run's End may send the chat's next message at once: no 409 "a run is going".

    The worker once released the chat only after writing the End (and settling the run).
    """
    keys = Keys(prefix)
    state = ChatState(client, keys)
    active_at_end: list[str | None] = []

    class Watching(RedisEventStore):
        async def append(self, run_id: str, event: t.Mapping[str, t.Any]) -> None:
            if event["kind"] == "end" and event["run"]["run_id"] == run_id:
                active_at_end.append(await state.active("chat-w"))
            await super().append(run_id, event)

    store = Watching(client, keys)
    worker, task = await _running_worker(Slow(), client, keys, store=store)
    await store.create("r-free")
    assert await state.claim("chat-w", "r-free") is None
    await client.xadd(keys.requests, {"r": RunRequest("r-free", "chat-w", "a b").to_json()})
    events = await _follow(store, "r-free")
    await _close(worker, task)
    assert [e["status"] for e in events if e["kind"] == "end"] == ["ok"]
    assert active_at_end == [None]
