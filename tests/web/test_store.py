"""The per-run event buffer: positions, bounds, expiry, waiting."""

from __future__ import annotations

import asyncio

import pytest

from streamtap.web.store import EventStore, MemoryEventStore


def ev(seq: int) -> dict:
    return {"seq": seq, "kind": "chunk"}


async def test_read_from_positions_and_finish():
    store = MemoryEventStore()
    assert isinstance(store, EventStore)
    assert await store.read("r") is None
    await store.create("r")
    for i in range(5):
        await store.append("r", ev(i))
    res = await store.read("r")
    assert [e["seq"] for e in res.events] == [0, 1, 2, 3, 4] and not res.finished
    assert [e["seq"] for e in (await store.read("r", after=2)).events] == [3, 4]
    assert [e["seq"] for e in (await store.read("r", after=0, limit=2)).events] == [1, 2]
    assert (await store.read("r", after=4)).events == []
    await store.finish("r")
    assert (await store.read("r", after=2)).finished
    assert not (await store.read("r", after=0, limit=2)).finished  # more to read before the end
    await store.append("r", ev(5))  # after finish: ignored
    assert [e["seq"] for e in (await store.read("r", after=3)).events] == [4]


async def test_bounded_per_run_drops_oldest():
    store = MemoryEventStore(max_events_per_run=3)
    await store.create("r")
    for i in range(10):
        await store.append("r", ev(i))
    res = await store.read("r")
    assert [e["seq"] for e in res.events] == [7, 8, 9] and res.first_seq == 7
    assert [e["seq"] for e in (await store.read("r", after=8)).events] == [9]


async def test_wait_wakes_on_append_and_times_out():
    store = MemoryEventStore()
    await store.create("r")
    assert await store.wait("r", -1, 0.01) is False
    waiter = asyncio.ensure_future(store.wait("r", -1, 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.append("r", ev(0))
    assert await waiter is True
    assert await store.wait("r", -1, 0.01) is True  # already there
    waiter = asyncio.ensure_future(store.wait("r", 0, 5))
    await asyncio.sleep(0)
    await store.finish("r")
    assert await waiter is True


async def test_expiry_and_max_runs():
    store = MemoryEventStore(ttl=10, max_runs=2)
    await store.create("a")
    await store.finish("a")
    await store.create("b")
    assert await store.expire() == 0
    import time

    assert await store.expire(time.monotonic() + 11) == 1  # a finished more than ttl ago
    assert await store.read("a") is None and await store.read("b") is not None
    await store.finish("b")
    await store.create("c")
    await store.create("d")  # over max_runs: the oldest finished run goes
    assert await store.read("b") is None and len(store) == 2


def test_bad_limits_are_clear():
    with pytest.raises(ValueError, match="max_events_per_run"):
        MemoryEventStore(max_events_per_run=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryEventStore(ttl=0)
