"""Runs that span processes: a real ProcessPoolExecutor (spawn) child streams into the parent's run tree and trace."""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import pathlib
import subprocess
import sys
import threading
import time
import typing as t

import pytest
import relay_children as children

import streamtap
import streamtap_otlp
from streamtap import ModuleBase, propagation
from streamtap.events import Chunk, End, Event, Start
from streamtap.exceptions import RunCancelled, UsageError
from streamtap.testing import FakeOpenAI, capture_events
from streamtap_otlp.testing import OtlpReceiver, ReceivedSpan

SPAWN = multiprocessing.get_context("spawn")


class HandOff(ModuleBase):
    """A tool that hands its work to a process pool and waits for it (or not)."""

    kind = "tool"

    def __init__(self, pool: concurrent.futures.ProcessPoolExecutor, job: t.Callable[..., t.Any], **relay: t.Any):
        super().__init__()
        self.pool = pool
        self.job = job
        self.relay_options = relay
        self.relays: list[propagation.Relay] = []
        self.futures: list[concurrent.futures.Future[t.Any]] = []

    def forward(self, text: str, wait: bool = True) -> t.Any:
        with propagation.relay(**self.relay_options) as r:
            self.relays.append(r)
            future = self.pool.submit(self.job, r.carry().to_dict(), text)
            self.futures.append(future)
            if wait:
                return future.result(timeout=60)
            _until(lambda: r.received >= 2, "the child's first chunk")  # its Start and first chunk
            return "handed off"


class Agent(ModuleBase):
    """The root run: calls the tool."""

    def __init__(self, tool: HandOff) -> None:
        super().__init__()
        self.tool = tool

    def forward(self, text: str, wait: bool = True) -> t.Any:
        return self.tool(text, wait=wait)


def _until(cond: t.Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    ready = threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        ready.wait(0.01)


def _pool(endpoint: str | None, gate: t.Any) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        1, mp_context=SPAWN, initializer=children.init_child, initargs=(endpoint, gate)
    )


def _check_tree(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(len(events))), "seq is gap-free and in order"
    starts = [e.run.run_id for e in events if isinstance(e, Start)]
    ends = [e.run.run_id for e in events if isinstance(e, End)]
    assert sorted(starts) == sorted(ends) and len(set(starts)) == len(starts), "one End per Start"
    assert len({e.run.root_id for e in events}) == 1


def test_a_process_pool_child_streams_live_into_the_parents_stream_and_trace() -> None:
    """Chunks of a module run in a spawned child reach the parent's stream live, under the tool run, in one trace."""
    gate = SPAWN.Event()
    with OtlpReceiver(grpc=False) as receiver:
        export = streamtap_otlp.configure(
            endpoint=receiver.http_endpoint, protocol="http/protobuf", metrics=False, set_global=False,
            service_name="parent",
        )  # fmt: skip
        try:
            with _pool(receiver.http_endpoint, gate) as pool:
                events: list[Event] = []
                for ev in Agent(HandOff(pool, children.summarise_job)).stream("alpha beta gamma"):
                    events.append(ev)
                    if isinstance(ev, Chunk) and ev.run.name == "Summarise":
                        gate.set()  # the child streams the rest only once the parent saw its first chunk: live
            export.force_flush()
        finally:
            export.shutdown()
        spans = receiver.wait_for_spans(3)
    _check_tree(events)
    runs = {e.run.name: e.run for e in events if isinstance(e, Start)}
    agent, tool, child = runs["Agent"], runs["HandOff"], runs["Summarise"]
    assert child.parent_id == tool.run_id and child.root_id == agent.run_id
    assert child.path == ("Agent", "HandOff", "Summarise")
    text = "".join(e.delta for e in events if isinstance(e, Chunk) and e.run.run_id == child.run_id)
    assert text == "alpha beta gamma"
    (end,) = [e for e in events if isinstance(e, End) and e.run.name == "Agent"]
    assert end.status == "ok" and end.output == "alpha beta gamma"

    by_name: dict[str, ReceivedSpan] = {}
    for span in spans:
        assert span.name not in by_name, f"one span per run, {span.name} twice"
        by_name[span.name] = span
    root, tool_span, child_span = by_name["Agent"], by_name["execute_tool HandOff"], by_name["Summarise"]
    assert root.trace_id == tool_span.trace_id == child_span.trace_id
    assert child_span.parent_span_id == tool_span.span_id and tool_span.parent_span_id == root.span_id
    assert child_span.resource["service.name"] == "child" and root.resource["service.name"] == "parent"
    assert child_span.attributes["streamtap.run.id"] == child.run_id


def test_a_child_process_dying_mid_run_ends_the_tool_run_with_an_error_not_a_hang() -> None:
    """The pool breaks, the child's open run ends ``error`` (ChildProcessLost), the tool and root end ``error``."""
    gate = SPAWN.Event()
    with (
        _pool(None, gate) as pool,
        streamtap.subscribe(lambda ev: gate.set() if isinstance(ev, Chunk) else None),
        capture_events() as events,
    ):
        tool = HandOff(pool, children.dying_job)
        started = time.monotonic()
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            Agent(tool)("last words")
    assert time.monotonic() - started < 20
    _check_tree(list(events))
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["Dies"].status == "error" and ends["Dies"].error is not None
    assert ends["Dies"].error.type == "streamtap.ChildProcessLost"
    assert "went away" in ends["Dies"].error.message
    assert ends["HandOff"].status == "error" and ends["Agent"].status == "error"
    assert [e.delta for e in events if isinstance(e, Chunk)] == ["last words"]
    assert tool.relays[0].lost_runs == 1


def test_cancelling_the_parent_run_cancels_the_childs_run_and_closes_its_model_stream() -> None:
    """handle.cancel() in the parent: the child's model stream closes, its runs end ``cancelled`` in the parent's tree."""
    words = " ".join(f"w{i}" for i in range(200))
    with FakeOpenAI(token_delay=0.05) as model, _pool(None, None) as pool, capture_events() as events:
        tool = HandOff(pool, functools.partial(children.chat_job, model.base_url))
        started = time.monotonic()
        handle = Agent(tool).start(words)
        _until(lambda: any(isinstance(e, Chunk) and e.run.name == "OpenAIChat" for e in list(events)), "a child chunk")
        cancelled = time.monotonic()
        handle.cancel("user pressed stop")
        closed = model.wait_for_closed(timeout=10, after=started)
        with pytest.raises(RunCancelled, match="user pressed stop"):
            handle.result(timeout=20)
    assert closed.finished_at is not None and closed.finished_at - cancelled < 2.0
    assert closed.chunks_sent < 150
    _check_tree(list(events))
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["OpenAIChat"].status == ends["HandOff"].status == ends["Agent"].status == "cancelled"
    assert ends["OpenAIChat"].error is not None and "user pressed stop" in ends["OpenAIChat"].error.message
    assert tool.relays[0].cancels_sent == 1 and tool.relays[0].lost_runs == 0


def test_a_child_that_connects_after_the_cancel_is_cancelled_at_once() -> None:
    """A stop that comes before the child process connected still wins: the child's run ends ``cancelled``."""

    class Cancelled(ModuleBase):
        kind = "tool"

        def __init__(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
            super().__init__()
            self.pool = pool

        def forward(self, text: str) -> t.Any:
            with propagation.relay() as r:
                streamtap.current().token.cancel("stopped early")  # type: ignore[union-attr]
                return self.pool.submit(children.summarise_job, r.carry().to_dict(), text).result(timeout=60)

    with _pool(None, None) as pool, capture_events() as events, pytest.raises(RunCancelled, match="stopped early"):
        Cancelled(pool)("never streamed at all")
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["Summarise"].status == ends["Cancelled"].status == "cancelled"
    assert not [e for e in events if isinstance(e, Chunk)]


def test_a_childs_events_after_the_parent_run_ended_are_dropped_and_counted() -> None:
    """The tool returns while the child still streams: the child's run is ended for it, later events are counted."""
    gate = SPAWN.Event()
    with _pool(None, gate) as pool, capture_events() as events:
        tool = HandOff(pool, children.late_job, drain_timeout=0.1)
        assert Agent(tool)("one two three", wait=False) == "handed off"
        gate.set()  # now the child streams the rest, into a run tree that has ended
        sent = tool.futures[0].result(timeout=30)
        relay = tool.relays[0]
        _until(lambda: relay.received + relay.dropped == sent, "the late events to be counted")
    assert relay.dropped >= 3  # " two", " three", and the child's End
    _check_tree(list(events))
    ends = {e.run.name: e for e in events if isinstance(e, End)}
    assert ends["Summarise"].status == "error" and ends["Summarise"].error is not None
    assert "ended before the child" in ends["Summarise"].error.message
    assert events[-1].run.name == "Agent" and ends["Agent"].status == "ok"


def test_relay_outside_a_run_and_a_bad_carried_context_are_clear_errors() -> None:
    with pytest.raises(UsageError, match="outside any module run"):
        propagation.relay()
    with pytest.raises(UsageError, match="Not a carried streamtap run context"), propagation.attach({"root_id": "x"}):
        pass
    with pytest.raises(UsageError, match="not int"), propagation.attach(t.cast(t.Any, 3)):
        pass


def test_carried_context_round_trips_through_json_and_masks_its_key() -> None:
    class Tool(ModuleBase):
        kind = "tool"

        def forward(self, x: str) -> propagation.Carried:
            with propagation.relay() as r:
                return r.carry()

    carried = Tool()("x")
    assert propagation.Carried.from_dict(carried.to_dict()) == carried
    assert carried.key not in repr(carried) and "***" in repr(carried)


def test_the_process_pool_example_runs_and_its_children_s_spans_join_the_parents_trace() -> None:
    """``examples/process_pool.py``: two spawned children stream into one gap-free run tree and one trace."""
    example = pathlib.Path(__file__).resolve().parents[1] / "examples" / "process_pool.py"
    with OtlpReceiver(grpc=False) as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        env["OTEL_METRICS_EXPORTER"] = "none"
        proc = subprocess.run(
            [sys.executable, str(example)], capture_output=True, text=True, timeout=90, env=env, check=False
        )
        assert proc.returncode == 0, proc.stderr
        spans = receiver.wait_for_spans(4)
    assert "seq gap-free" in proc.stdout and "ret: You said: What is streamtap?" in proc.stdout
    assert proc.stdout.count("trace: start pool_agent/compare/child_chat") == 2
    assert len({s.trace_id for s in spans}) == 1
    (tool,) = [s for s in spans if s.name == "execute_tool compare"]
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 2 and all(s.parent_span_id == tool.span_id for s in chats)


def test_a_child_that_cannot_reach_the_relay_still_runs_and_counts_what_it_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Tool(ModuleBase):
        kind = "tool"

        def forward(self, x: str) -> propagation.Carried:
            with propagation.relay() as r:
                return r.carry()

    carried = Tool()("x")  # its relay has closed: nothing listens at its address any more
    with propagation.attach(carried.to_dict()) as attached:
        assert children.Summarise()("still runs") == "still runs"
    assert attached.sent == 0 and attached.lost >= 4  # Start, two chunks, End
    assert "cannot reach the parent's relay" in caplog.text
