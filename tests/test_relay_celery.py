"""Runs that span processes through Celery: a real ``celery worker`` process on a real redis-server broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import typing as t

import pytest
import relay_celery_app

import streamtap_otlp
from streamtap import ModuleBase, propagation
from streamtap.events import Chunk, End, Event, Start
from streamtap.testing import FakeOpenAI
from streamtap_otlp.testing import OtlpReceiver
from streamtap_redis import Keys, RedisChatService, RedisEventStore, Worker, connect
from streamtap_redis.requests import RunRequest
from streamtap_redis.testing import RedisServer

HERE = pathlib.Path(__file__).parent


class QueueIt(ModuleBase):
    """A tool that hands its work to Celery and waits for the result."""

    kind = "tool"

    def forward(self, text: str) -> str:
        with propagation.relay() as r:
            result = relay_celery_app.summarise.delay(r.carry().to_dict(), text)
            return t.cast(str, result.get(timeout=30))


class Agent(ModuleBase):
    """The root run."""

    def forward(self, text: str) -> str:
        return t.cast(str, QueueIt()(text))


@pytest.fixture(scope="module")
def worker() -> t.Iterator[tuple[str, OtlpReceiver]]:
    """redis-server, an OTLP receiver, and ``celery -A relay_celery_app worker --pool=solo`` (a process of its own).

    One for the module: the Celery app of this process keeps its broker connection, so a second
    redis-server for a second test would leave it talking to the first one's (gone) port.
    """
    with RedisServer() as redis, OtlpReceiver(grpc=False) as receiver:
        env = {
            **os.environ,
            "STREAMTAP_TEST_BROKER": redis.url,
            "STREAMTAP_TEST_OTLP": receiver.http_endpoint,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "relay_celery_app", "worker", "--pool=solo", "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "relaytest@%h"],
            cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        relay_celery_app.app.conf.broker_url = redis.url
        relay_celery_app.app.conf.result_backend = redis.url
        try:
            yield redis.url, receiver
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            relay_celery_app.app.close()


def test_a_celery_task_streams_into_the_parents_run_tree_and_trace(worker: tuple[str, OtlpReceiver]) -> None:
    """The worker's module runs appear under the tool run, gap-free, and their spans in the tool's trace."""
    _, receiver = worker
    export = streamtap_otlp.configure(
        endpoint=receiver.http_endpoint, protocol="http/protobuf", metrics=False, set_global=False,
        service_name="parent",
    )  # fmt: skip
    try:
        events: list[Event] = list(Agent().stream("queued in celery"))
        export.force_flush()
    finally:
        export.shutdown()
    assert [e.seq for e in events] == list(range(len(events)))
    runs = {e.run.name: e.run for e in events if isinstance(e, Start)}
    agent, tool, child = runs["Agent"], runs["QueueIt"], runs["Summarise"]
    assert child.parent_id == tool.run_id and child.root_id == agent.run_id
    assert "".join(e.delta for e in events if isinstance(e, Chunk) and e.run.run_id == child.run_id) == (
        "queued in celery"
    )
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["Summarise"].status == ends["QueueIt"].status == ends["Agent"].status == "ok"

    spans = {s.name: s for s in receiver.wait_for_spans(3)}
    root, tool_span, child_span = spans["Agent"], spans["execute_tool QueueIt"], spans["Summarise"]
    assert root.trace_id == tool_span.trace_id == child_span.trace_id
    assert child_span.parent_span_id == tool_span.span_id
    assert child_span.resource["service.name"] == "celery"


class QueueChat(ModuleBase):
    """A tool that hands a model call to Celery and waits for its answer."""

    kind = "tool"

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def forward(self, text: str) -> str:
        with propagation.relay() as r:
            result = relay_celery_app.chat.delay(r.carry().to_dict(), self.base_url, text)
            return t.cast(str, result.get(timeout=30))


class ChatAgent(ModuleBase):
    """The root run a streamtap worker runs."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.tool = QueueChat(base_url)

    def forward(self, text: str) -> str:
        return t.cast(str, self.tool(text))


async def test_a_stop_through_redis_cancels_the_celery_childs_model_call(worker: tuple[str, OtlpReceiver]) -> None:
    """A stop sent as the web tier sends it (key + channel) reaches the worker, then the Celery child: all end cancelled."""
    url, _ = worker
    client = await connect(url)
    keys = Keys("celerystop")
    store = RedisEventStore(client, keys)
    words = " ".join(f"w{i}" for i in range(200))
    with FakeOpenAI(token_delay=0.05) as model:
        runner = Worker(ChatAgent(model.base_url), client, keys)
        await runner.ensure_group()
        task = asyncio.ensure_future(runner.run())
        try:
            await store.create("r1")
            await client.xadd(keys.requests, {"r": RunRequest("r1", None, words).to_json()})
            events: list[t.Mapping[str, t.Any]] = []
            async with asyncio.timeout(30):
                while not any(e["kind"] == "chunk" and e["run"]["name"] == "OpenAIChat" for e in events):
                    await store.wait("r1", events[-1]["seq"] if events else -1, 1.0)
                    res = await store.read("r1", events[-1]["seq"] if events else -1)
                    events += res.events if res is not None else []
            service = RedisChatService(ChatAgent(model.base_url), store, client=client, keys=keys)
            await service.request_stop("r1")  # what POST /api/chat/{id}/stop does on any web process
            closed = await asyncio.to_thread(model.wait_for_closed, 10)
            async with asyncio.timeout(30):
                while True:
                    res = await store.read("r1", events[-1]["seq"])
                    if res is not None and res.events:
                        events += res.events
                        continue
                    if res is not None and res.finished:
                        break
                    await store.wait("r1", events[-1]["seq"], 1.0)
        finally:
            await runner.aclose()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
    assert closed.chunks_sent < 150
    assert [e["seq"] for e in events] == list(range(len(events)))
    ends = {e["run"]["name"]: e for e in events if e["kind"] == "end"}
    assert ends["OpenAIChat"]["status"] == ends["QueueChat"]["status"] == ends["ChatAgent"]["status"] == "cancelled"
    chat_run = ends["OpenAIChat"]["run"]
    assert chat_run["parent_id"] == ends["QueueChat"]["run"]["run_id"] and chat_run["root_id"] == "r1"
