"""Runs that span processes through Celery: a real ``celery worker`` process on a real redis-server broker."""

from __future__ import annotations

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
from streamtap_otlp.testing import OtlpReceiver
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


@pytest.fixture
def worker() -> t.Iterator[tuple[str, OtlpReceiver]]:
    """redis-server, an OTLP receiver, and ``celery -A relay_celery_app worker --pool=solo`` (a process of its own)."""
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
