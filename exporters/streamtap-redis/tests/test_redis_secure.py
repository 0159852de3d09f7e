"""``rediss://`` (TLS) and ``redis://`` with a password, against real redis-servers: the log, the store, workers, errors."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import typing as t

import httpx
import pytest
from cluster import Proc, chat_body, env, sse_data, start_web, start_worker, ui_parts

from streamtap import ModuleBase
from streamtap.testing import FakeOpenAI
from streamtap_redis import Keys, RedisEventStore, RunLog, Worker, connect
from streamtap_redis.connection import RedisUnavailable
from streamtap_redis.requests import RunRequest
from streamtap_redis.testing import RedisServer


class Words(ModuleBase):
    """Streams ``n`` words."""

    async def forward(self, n: int) -> t.AsyncIterator[str]:
        for i in range(int(n)):
            yield f"w{i} "


@pytest.fixture(params=["tls", "password", "tls+password"])
def secure(request: pytest.FixtureRequest) -> RedisServer:
    """Each secured server in turn."""
    name = {"tls": "tls_redis", "password": "password_redis", "tls+password": "tls_password_redis"}[request.param]
    return t.cast(RedisServer, request.getfixturevalue(name))


async def _follow(store: RedisEventStore, run_id: str, after: int = -1) -> list[t.Mapping[str, t.Any]]:
    got: list[t.Mapping[str, t.Any]] = []
    async with asyncio.timeout(15):
        while True:
            res = await store.read(run_id, after)
            if res is not None and res.events:
                got += res.events
                after = res.events[-1]["seq"]
                continue
            if res is not None and res.finished:
                return got
            await store.wait(run_id, after, 1.0)  # the follower's own connection: XREAD BLOCK over TLS / AUTH


async def test_the_run_log_and_the_store_replay_and_follow_live(secure: RedisServer, prefix: str) -> None:
    """RunLog appends (pipelined), a reader replays, then follows live through the store's XREAD BLOCK."""
    client = await connect(secure.url)
    keys = Keys(prefix)
    log = RunLog(client, keys)
    store = RedisEventStore(client, keys, log=log)
    handle = Words().astart(40)
    events = [ev.to_dict() async for ev in handle.events()]
    await handle
    rid = events[0]["run"]["run_id"]
    try:
        await store.create(rid)
        for ev in events[:10]:
            await store.append(rid, ev)
        assert await log.flush(5)
        reader = asyncio.ensure_future(_follow(store, rid))
        async with asyncio.timeout(10):
            while store.follower.cached(keys.run(rid), 9) != []:  # the reader caught up and waits live
                await asyncio.sleep(0.005)
        for ev in events[10:]:
            await store.append(rid, ev)
        await store.finish(rid, status="ok")
        assert await reader == events
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_worker_runs_a_request_and_hears_a_stop(secure: RedisServer, prefix: str) -> None:
    """Request stream, consumer group, run log and the stop channel (pub/sub) all work over the secured URL."""
    client = await connect(secure.url)
    keys = Keys(prefix)
    store = RedisEventStore(client, keys)
    worker = Worker(Words(), client, keys)
    await worker.ensure_group()
    task = asyncio.ensure_future(worker.run())
    try:
        await store.create("ok1")
        await client.xadd(keys.requests, {"r": RunRequest("ok1", None, 5).to_json()})
        done = await _follow(store, "ok1")
        assert "".join(e["delta"] for e in done if e["kind"] == "chunk") == "w0 w1 w2 w3 w4 "
        assert [e["status"] for e in done if e["kind"] == "end"] == ["ok"]
    finally:
        await worker.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.aclose()
        await client.aclose()


async def test_worker_and_web_processes_over_tls_with_a_password(tls_password_redis: RedisServer, prefix: str) -> None:
    """`streamtap worker` and `streamtap serve --redis rediss://:pw@...?ssl_ca_certs=...`: a chat round trip."""
    url = tls_password_redis.url
    procs: list[Proc] = []
    with FakeOpenAI() as model:
        try:
            procs.append(start_worker(url, prefix, model.base_url))
            web, base = start_web(url, prefix, model.base_url)
            procs.append(web)
            parts: list[dict[str, t.Any]] = []
            async with (
                httpx.AsyncClient(timeout=20) as http,
                http.stream("POST", base + "/api/chat", json=chat_body("s1", "over tls and a password")) as resp,
            ):
                assert resp.status_code == 200, await resp.aread()
                async for _, data in sse_data(resp.aiter_lines()):
                    part = ui_parts(data)
                    if part is not None:
                        parts.append(part)
        finally:
            for proc in procs:
                proc.stop()
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert text and parts[-1]["type"] == "finish"
    assert model.records[-1].path == "/v1/chat/completions"


async def test_a_wrong_password_is_a_clear_error_naming_the_masked_url(password_redis: RedisServer) -> None:
    wrong = password_redis.url.replace("s3cret-pw", "not-the-pw")
    with pytest.raises(RedisUnavailable) as err:
        await connect(wrong, timeout=2)
    text = str(err.value)
    assert f"redis://:***@127.0.0.1:{password_redis.port}/0" in text and "not-the-pw" not in text
    assert "refused the password" in text
    none = password_redis.url.replace(":s3cret-pw@", "")
    with pytest.raises(RedisUnavailable, match="refused the password"):
        await connect(none, timeout=2)


async def test_an_untrusted_certificate_is_a_clear_error_naming_the_masked_url(
    tls_password_redis: RedisServer,
) -> None:
    untrusted = tls_password_redis.url.partition("?")[0]  # no ssl_ca_certs: the throw-away CA is not trusted
    with pytest.raises(RedisUnavailable) as err:
        await connect(untrusted, timeout=2)
    text = str(err.value)
    assert f"rediss://:***@127.0.0.1:{tls_password_redis.port}/0" in text and "s3cret-pw" not in text
    assert "certificate is not trusted" in text and "ssl_ca_certs=" in text
    plain = untrusted.replace("rediss://", "redis://")  # plain Redis protocol against the TLS port
    with pytest.raises(RedisUnavailable) as plain_err:
        await connect(plain, timeout=2)
    assert "s3cret-pw" not in str(plain_err.value)


def test_the_worker_command_names_the_masked_url_when_the_password_is_wrong(password_redis: RedisServer) -> None:
    wrong = password_redis.url.replace("s3cret-pw", "not-the-pw")
    proc = subprocess.run(
        [sys.executable, "-m", "streamtap.cli", "worker", "cluster_targets:chat", "--redis", wrong],
        capture_output=True,
        text=True,
        timeout=30,
        env=env("http://127.0.0.1:9/v1"),
        check=False,
    )
    assert proc.returncode == 1
    assert "redis://:***@127.0.0.1" in proc.stderr and "refused the password" in proc.stderr
    assert "not-the-pw" not in proc.stderr + proc.stdout
