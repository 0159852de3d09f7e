"""``streamtap replay``: a recorded weather-agent run replayed over OTLP into a real receiver, and the page's pace.

The recording is made from a real run (weather agent, real ``openai`` client,
embedded model server over real HTTP); the replay runs the real command in a
subprocess and exports over real OTLP/HTTP to the receiver of
``exporters/streamtap-otlp`` (``streamtap_otlp.testing.OtlpReceiver``).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time

import pytest

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.recording import Recorder, read_recording
from streamtap.replaying import ReplayPublisher
from streamtap.testing import FakeOpenAI
from streamtap.web.store import MemoryEventStore

pytest.importorskip("streamtap_otlp")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("rec") / "weather.jsonl"
    with FakeOpenAI() as model, Recorder(path):
        weather_agent(base_url=model.base_url)(QUERY)
    return path


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-m", "streamtap.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_replay_otlp_exports_the_recorded_run_tree(recording):
    from streamtap_otlp.testing import OtlpReceiver

    rec = read_recording(recording)
    starts = {x["run"]["run_id"]: x for x in rec.lines if x["kind"] == "start"}
    ends = {x["run"]["run_id"]: x for x in rec.lines if x["kind"] == "end"}
    with OtlpReceiver() as receiver:
        proc = _cli("replay", str(recording), "--otlp", receiver.http_endpoint)
        assert proc.returncode == 0, proc.stderr
        assert f"5 spans of 1 run(s) exported to {receiver.http_endpoint}" in proc.stdout
        spans = receiver.wait_for_spans(5)
    assert len(spans) == 5
    by_run = {s.attributes["streamtap.run.id"]: s for s in spans}
    assert set(by_run) == set(starts)  # one span per recorded run
    for rid, s in by_run.items():
        parent = starts[rid]["run"]["parent_id"]
        assert s.parent_span_id == (by_run[parent].span_id if parent else None)  # the tree is the run tree
        # The recorded times, not the replay's.
        assert s.span.start_time_unix_nano == int(starts[rid]["started_at"] * 1e9)
        assert s.span.end_time_unix_nano - s.span.start_time_unix_nano == pytest.approx(
            ends[rid]["timings"]["duration"] * 1e9, abs=2000
        )
    assert {s.name for s in spans} == {
        "invoke_agent weather_agent",
        "chat fake-gpt",
        "execute_tool get_current_weather",
    }
    assert len({s.trace_id for s in spans}) == 1


def test_replay_of_a_file_that_is_not_a_recording_says_so(tmp_path, recording):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    proc = _cli("replay", str(bad), "--otlp")
    assert proc.returncode == 2 and "is not JSON" in proc.stderr
    proc = _cli("replay", str(recording), "--root", "nope", "--otlp")
    assert proc.returncode == 2 and "has no root run 'nope'" in proc.stderr
    proc = _cli("replay", str(recording), "--speed", "-1")
    assert proc.returncode == 2 and "--speed must be 0" in proc.stderr


def _lines(span: float, n: int = 6) -> list[dict[str, object]]:
    run = {
        "run_id": "r1",
        "name": "m",
        "kind": "module",
        "parent_id": None,
        "root_id": "r1",
        "tags": [],
        "metadata": {},
    }
    out: list[dict[str, object]] = [
        {"kind": "start", "seq": 0, "run": run, "inputs": "x", "started_at": 1000.0, "recorded_at": 1000.0}
    ]
    for i in range(1, n - 1):
        out.append(
            {
                "kind": "chunk",
                "seq": i,
                "run": run,
                "delta": f"w{i} ",
                "channel": "text",
                "call_id": None,
                "recorded_at": 1000.0 + span * i / (n - 1),
            }
        )
    out.append({"kind": "end", "seq": n - 1, "run": run, "status": "ok", "output": "done", "error": None, "usage": None,
                "timings": {"started_at": 1000.0, "duration": span, "time_to_first_chunk": None}, "attributes": {}, "recorded_at": 1000.0 + span})  # fmt: skip
    return out


@pytest.mark.parametrize(("speed", "low", "high"), [(1.0, 1.0, None), (10.0, 0.1, 1.0), (0.0, 0.0, 1.0)])
async def test_the_page_replay_keeps_the_recorded_pace_or_a_faster_one(speed, low, high):
    store = MemoryEventStore()
    publisher = ReplayPublisher(store, _lines(1.0), speed)
    t0 = time.monotonic()
    await publisher.run()
    took = time.monotonic() - t0
    assert took >= low and (high is None or took < high), took
    res = await store.read("r1")
    assert res is not None and res.finished and [e["seq"] for e in res.events] == list(range(6))
    assert all("recorded_at" not in e for e in res.events)  # the store holds the wire format only


async def test_a_live_reader_sees_the_replayed_events_as_they_are_published():
    store = MemoryEventStore()
    publisher = ReplayPublisher(store, _lines(0.5), 1.0)
    task = asyncio.create_task(publisher.run())
    while await store.read("r1", limit=0) is None:  # the run exists once its first event is due
        await asyncio.sleep(0)
    seen = []
    after = -1
    while True:
        res = await store.read("r1", after)
        assert res is not None
        for e in res.events:
            seen.append((e["seq"], time.monotonic()))
        if res.events:
            after = res.events[-1]["seq"]
        if res.finished and not res.events:
            break
        if not res.events:
            await store.wait("r1", after, 5.0)
    await task
    assert [s for s, _ in seen] == list(range(6))
    assert seen[-1][1] - seen[0][1] >= 0.5  # spread over the recorded half second, not all at once
