"""Live spans over real OTLP: a process killed with ``kill -9`` mid-run still leaves its runs' starts in the backend.

The doomed process is a real subprocess running the weather agent (real
``openai`` client, the embedded model server over real HTTP) with
``streamtap_otlp.configure(live_spans=True)``; the backend is the real OTLP
receiver of ``streamtap_otlp.testing``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import typing as t

import pytest

import streamtap_otlp
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import FakeOpenAI, capture_events
from streamtap.tracing import PENDING_ATTRIBUTE
from streamtap_otlp.testing import OtlpReceiver

DOOMED = textwrap.dedent(
    '''
    import sys, threading
    import streamtap_otlp
    from streamtap.agents import FunctionCallAgent
    from streamtap.llm.openai import OpenAIChat
    from streamtap.tools import tool
    from streamtap.demo.weather import QUERY

    streamtap_otlp.configure(endpoint=sys.argv[2], metrics=False, live_spans=True)
    lock = threading.Lock()

    @tool
    def get_current_weather(location: str, unit: str = "celsius") -> str:
        """Get the current weather in a given location.

        Args:
            location (str): The city and state.
            unit (str): The temperature unit to use.
        """
        with lock:  # one line per tool: the two run in parallel threads
            print("tool running", location, flush=True)
        threading.Event().wait()  # hangs until the process is killed
        return "never"

    FunctionCallAgent(OpenAIChat("fake-gpt", base_url=sys.argv[1]), [get_current_weather], name="doomed_agent")(QUERY)
    '''
)


@pytest.fixture
def receiver() -> t.Iterator[OtlpReceiver]:
    with OtlpReceiver(grpc=False) as r:
        yield r


def test_a_run_killed_mid_way_leaves_its_start_in_the_backend(tmp_path, receiver):
    script = tmp_path / "doomed.py"
    script.write_text(DOOMED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_BSP_SCHEDULE_DELAY"] = "50"  # markers leave within 50 ms, not the default 5 s
    with FakeOpenAI() as model:
        proc = subprocess.Popen(
            [sys.executable, str(script), model.base_url, receiver.http_endpoint],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            running = [proc.stdout.readline() for _ in range(2)]  # both tool calls of the turn are running
            assert all(line.startswith("tool running") for line in running), (
                running,
                proc.stderr.read() if proc.poll() is not None else "",
            )
            # In the backend while the run goes on: the agent's, the model call's and both tools' markers, and the
            # finished model call's own span.
            spans = receiver.wait_for_spans(5, timeout=15)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    spans = receiver.spans()
    markers = [s for s in spans if s.attributes.get(PENDING_ATTRIBUTE) is True]
    real = [s for s in spans if PENDING_ATTRIBUTE not in s.attributes]
    kinds = sorted(s.attributes["streamtap.run.kind"] for s in markers)
    assert kinds == ["agent", "llm", "tool", "tool"]
    [agent] = [s for s in markers if s.attributes["streamtap.run.kind"] == "agent"]
    assert (
        agent.name == "invoke_agent doomed_agent" and agent.attributes["streamtap.pending.parent_span_id"] == "0" * 16
    )
    # The agent and its tools never ended: only their markers are there, each pointing at the span that never came.
    assert {s.attributes["streamtap.run.kind"] for s in real} == {"llm"}
    real_ids = {s.span_id for s in real}
    for m in markers:
        assert m.parent_span_id == m.attributes["streamtap.pending.span_id"]
        assert (m.parent_span_id in real_ids) == (m.attributes["streamtap.run.kind"] == "llm")
        assert m.span.start_time_unix_nano == m.span.end_time_unix_nano
    assert len({s.trace_id for s in spans}) == 1
    # The tools' markers sit under the agent's run: their recorded parent is the agent's span.
    for m in markers:
        if m.attributes["streamtap.run.kind"] == "tool":
            assert m.attributes["streamtap.pending.parent_span_id"] == agent.parent_span_id


def test_over_otlp_the_final_tree_is_the_run_tree_and_markers_are_recognisable(receiver):
    export = streamtap_otlp.configure(endpoint=receiver.http_endpoint, metrics=False, live_spans=True, set_global=False)
    try:
        with FakeOpenAI() as model, capture_events(kinds=["start"]) as starts:
            weather_agent(base_url=model.base_url)(QUERY)
        assert export.force_flush()
    finally:
        export.shutdown()
    spans = receiver.wait_for_spans(10)
    assert len(spans) == 10
    real = {s.attributes["streamtap.run.id"]: s for s in spans if PENDING_ATTRIBUTE not in s.attributes}
    markers = [s for s in spans if s.attributes.get(PENDING_ATTRIBUTE) is True]
    runs = {e.run.run_id: e.run for e in starts}
    assert set(real) == set(runs) and len(markers) == len(runs)
    for rid, run in runs.items():
        assert real[rid].parent_span_id == (real[run.parent_id].span_id if run.parent_id else None)
    for m in markers:
        span = real[m.attributes["streamtap.run.id"]]
        assert m.parent_span_id == span.span_id and m.name == span.name
        assert not any(k.startswith("gen_ai.") for k in m.attributes)
        assert m.span.start_time_unix_nano == m.span.end_time_unix_nano == span.span.start_time_unix_nano
