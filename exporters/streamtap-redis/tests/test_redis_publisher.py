"""Any process can publish: runs of a plain script reach Redis, where a store (a web process) replays them."""

from __future__ import annotations

import typing as t

from streamtap import ModuleBase
from streamtap.testing import capture_events
from streamtap_redis import Keys, RedisEventStore, RedisPublisher, connect
from streamtap_redis.testing import RedisServer


class Step(ModuleBase):
    def forward(self, x: int) -> t.Iterator[str]:
        for i in range(x):
            yield f"s{i} "


class Job(ModuleBase):
    """A batch job: a root run with child runs."""

    def forward(self, n: int) -> str:
        return "".join(Step()(3) for _ in range(n))


async def test_a_script_s_runs_are_published_and_replayed_by_another_reader(
    redis_server: RedisServer, prefix: str
) -> None:
    with capture_events() as local, RedisPublisher(redis_server.url, prefix=prefix) as publisher:
        Job()(4)  # a synchronous run in this thread: nothing to do with asyncio
    ends = [e for e in local if e.kind == "end" and e.run.parent_id is None]
    root = ends[0].run.run_id
    client = await connect(redis_server.url)
    store = RedisEventStore(client, Keys(prefix))
    res = await store.read(root, -1, limit=10_000)
    assert res is not None and res.finished
    assert res.events == [e.to_dict() for e in local]
    children = {e["run"]["run_id"] for e in res.events if e["run"]["parent_id"] == root}
    assert len(children) == 4
    assert publisher.stats().lost == 0
    await client.aclose()
