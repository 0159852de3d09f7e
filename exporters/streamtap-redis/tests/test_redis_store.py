"""The run log and the Redis EventStore against a real redis-server."""

from __future__ import annotations

import asyncio
import typing as t

import pytest
import redis.asyncio as aioredis

import streamtap
from streamtap import ModuleBase
from streamtap.web.store import EventStore
from streamtap_redis import Keys, RedisEventStore, RunLog, connect
from streamtap_redis.connection import RedisUnavailable, mask_url
from streamtap_redis.store import GAP, SNAPSHOT
from streamtap_redis.testing import RedisServer, free_port


class Words(ModuleBase):
    """Streams ``n`` words as text chunks."""

    kind = "llm"

    async def forward(self, n: int) -> t.AsyncIterator[str]:
        for i in range(n):
            yield f"w{i} "


async def _events(n: int) -> list[dict[str, t.Any]]:
    handle = Words().astart(n)
    out = [ev.to_dict() async for ev in handle.events()]
    await handle
    return out


async def _read_all(store: RedisEventStore, run_id: str, after: int = -1) -> list[t.Mapping[str, t.Any]]:
    got: list[t.Mapping[str, t.Any]] = []
    while True:
        res = await store.read(run_id, after)
        assert res is not None
        if res.events:
            got += res.events
            after = res.events[-1]["seq"]
            continue
        if res.finished:
            return got
        assert await store.wait(run_id, after, 5.0), "no event within 5 s"


@pytest.fixture
async def client(redis_server: RedisServer) -> t.AsyncIterator[aioredis.Redis]:
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def test_store_implements_the_protocol_and_replays_in_order(client: aioredis.Redis, prefix: str) -> None:
    store = RedisEventStore(client, Keys(prefix))
    assert isinstance(store, EventStore)
    events = await _events(50)
    rid = events[0]["run"]["run_id"]
    await store.create(rid)
    first = await store.read(rid)
    assert first is not None and first.events == [] and not first.finished
    for ev in events:
        await store.append(rid, ev)
    await store.finish(rid)
    got = await _read_all(store, rid)
    assert got == events
    assert [e["seq"] for e in got] == list(range(len(events)))
    # resume from any position: the rest, no gap, no duplicate
    assert await _read_all(store, rid, after=20) == events[21:]
    assert await store.read("nope") is None
    ttl = await client.ttl(Keys(prefix).run(rid))
    assert 0 < ttl <= 600


async def test_a_reader_follows_live_events_with_xread_block(client: aioredis.Redis, prefix: str) -> None:
    store = RedisEventStore(client, Keys(prefix))
    events = await _events(30)
    rid = events[0]["run"]["run_id"]
    await store.create(rid)
    reader = asyncio.ensure_future(_read_all(store, rid))
    for ev in events:
        await store.append(rid, ev)
        await asyncio.sleep(0)  # let the reader interleave with the producer
    await store.finish(rid)
    assert await asyncio.wait_for(reader, 10) == events


async def test_a_trimmed_log_gives_a_gap_event_then_a_snapshot(client: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    store = RedisEventStore(client, keys, log=RunLog(client, keys, maxlen=100))
    events = await _events(1000)
    rid = events[0]["run"]["run_id"]
    await store.create(rid)
    for ev in events:
        await store.append(rid, ev)
    await store.finish(rid)
    got = await _read_all(store, rid)
    gap, snap = got[0], got[1]
    assert gap["kind"] == "custom" and gap["name"] == GAP
    assert gap["data"]["from"] == 0 and gap["data"]["to"] >= 800, gap
    assert snap["name"] == SNAPSHOT and snap["data"]["upto"] == events[-1]["seq"]
    assert snap["data"]["text"] == "".join(f"w{i} " for i in range(1000))
    assert got[2:] == []  # the snapshot stands for everything up to its seq
    # a reader within the window gets no gap
    tail = await _read_all(store, rid, after=events[-5]["seq"])
    assert tail == events[-4:]


async def test_unreachable_redis_is_a_clear_error_naming_the_url_without_its_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        await connect(url, timeout=1)
    text = str(err.value)
    assert "redis://:***@127.0.0.1" in text and "hunter2" not in text
    assert mask_url("rediss://user:pw@h:6380/1") == "rediss://user:***@h:6380/1"
    with pytest.raises(ValueError, match="not a Redis URL"):
        await connect("http://127.0.0.1:6379")


async def test_a_password_url_works(prefix: str) -> None:
    with RedisServer(password="s3cret") as server:
        client = await connect(server.url)
        store = RedisEventStore(client, Keys(prefix))
        events = await _events(3)
        rid = events[0]["run"]["run_id"]
        await store.create(rid)
        for ev in events:
            await store.append(rid, ev)
        await store.finish(rid)
        assert await _read_all(store, rid) == events
        await client.aclose()


async def test_redis_lost_mid_run_buffers_flushes_on_reconnect_and_readers_see_a_gap(
    fresh_redis: RedisServer, prefix: str
) -> None:
    keys = Keys(prefix)
    client = await connect(fresh_redis.url, timeout=1)
    log = RunLog(client, keys, max_buffered=20)
    store = RedisEventStore(client, keys, log=log)
    events = await _events(100)
    rid = events[0]["run"]["run_id"]
    await store.create(rid)
    for ev in events[:10]:
        await store.append(rid, ev)
    assert await log.flush(5)
    fresh_redis.kill()
    for ev in events[10:60]:  # the producer is never blocked nor broken
        await store.append(rid, ev)
    assert log.stats().buffered == 20 and log.stats().lost == 30
    fresh_redis.start()
    assert await log.flush(10), "the buffer was not flushed after Redis came back"
    assert log.stats().lost == 30
    for ev in events[60:]:
        await store.append(rid, ev)
    await store.finish(rid)
    assert log.stats().lost == 30
    got = await _read_all(store, rid)
    gap, snap = got[0], got[1]
    assert gap["name"] == GAP and gap["data"]["from"] == 0 and gap["data"]["to"] == 39
    assert gap["data"]["lost"] == 30
    # the restarted Redis lost the first 10 and the buffer dropped 30; the snapshot has what got through since
    assert snap["name"] == SNAPSHOT and snap["data"]["upto"] == events[-1]["seq"]
    assert snap["data"]["text"].endswith("w97 w98 w99 ")
    await client.aclose()
    _ = streamtap
