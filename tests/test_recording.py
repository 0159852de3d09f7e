"""The recorder: every event of every root run as JSON lines in the wire format, after a versioned header.

Runs are real: the seeds' weather agent on the embedded model server over real HTTP.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import typing as t

import pytest

from streamtap import ModuleBase, subscribe
from streamtap.demo.weather import QUERY, weather_agent
from streamtap.exceptions import UsageError
from streamtap.recording import (
    RECORD_ENV,
    SCHEMA,
    SCHEMA_VERSION,
    Recorder,
    RecordingError,
    event_from_dict,
    read_recording,
)
from streamtap.testing import FakeOpenAI, check_invariants, replay

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def test_every_event_is_its_wire_dict_after_a_versioned_header(tmp_path, model):
    path = tmp_path / "weather.jsonl"
    live: list[dict[str, t.Any]] = []  # the wire form at the time of each event (agents append to the list they pass)
    with subscribe(lambda e: live.append(json.loads(json.dumps(e.to_dict())))), Recorder(path) as rec:
        answer = weather_agent(base_url=model.base_url)(QUERY)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    header, lines = rows[0], rows[1:]
    assert header["schema"] == SCHEMA and header["version"] == SCHEMA_VERSION and header["streamtap"]
    assert rec.events == len(live) == len(lines)
    assert [{k: v for k, v in x.items() if k != "recorded_at"} for x in lines] == live
    stamps = [x["recorded_at"] for x in lines]
    assert stamps == sorted(stamps)
    # Read back: typed events that keep the core's guarantees and the same wire form.
    events = replay(path)
    check_invariants(events)
    assert [e.to_dict() for e in events] == [
        {k: v for k, v in x.items() if k != "recorded_at"} for x in sorted(lines, key=lambda x: x["seq"])
    ]
    assert events.text() == answer and len(events.runs()) == 5


def test_concurrent_roots_are_told_apart(tmp_path, model):
    path = tmp_path / "two.jsonl"
    with Recorder(path):
        a = weather_agent(base_url=model.base_url).start(QUERY)
        b = weather_agent(base_url=model.base_url, name="second").start("hello")
        a.result(timeout=20), b.result(timeout=20)
    rec = read_recording(path)
    assert len(rec.roots()) == 2
    for root in rec.roots():
        check_invariants(rec.events(root))
    with pytest.raises(RecordingError, match="has no root run 'nope'"):
        rec.of("nope")
    with pytest.raises(RecordingError, match="no root run"):
        replay(path, root_id="nope")


class Leaky(ModuleBase):
    def forward(self, prompt: str) -> str:
        return f"sent with Authorization: Bearer sk-live-abcdefghijklmnopqrstuvwx to {prompt}"


def test_secrets_never_reach_the_file(tmp_path):
    path = tmp_path / "leaky.jsonl"
    with Recorder(path):
        Leaky()({"api_key": "sk-live-abcdefghijklmnopqrstuvwx", "q": "x"})
    text = path.read_text()
    assert "sk-live-abcdefghijklmnopqrstuvwx" not in text and "[REDACTED]" in text


def test_bad_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    with Recorder(good):
        Leaky()("x")
    header, *lines = good.read_text().splitlines()
    cases = {
        "missing.jsonl": None,
        "empty.jsonl": "",
        "headless.jsonl": "\n".join(lines) + "\n",
        "newer.jsonl": json.dumps({"schema": SCHEMA, "version": SCHEMA_VERSION + 1}) + "\n" + "\n".join(lines) + "\n",
        "other.jsonl": json.dumps({"schema": "something.else", "version": 1}) + "\n",
        "broken.jsonl": header + "\n{not json\n" + "\n".join(lines) + "\n",
    }
    expected = {
        "missing.jsonl": "Cannot read the recording",
        "empty.jsonl": "no streamtap recording header",
        "headless.jsonl": "is not a streamtap recording: line 1 comes before",
        "newer.jsonl": "of version 2; this streamtap reads versions 1 to 1. Upgrade streamtap",
        "other.jsonl": "schema 'something.else' is not 'streamtap.recording'",
        "broken.jsonl": "line 2 is not JSON",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_text(content)
        with pytest.raises(RecordingError, match=expected[name]):
            read_recording(p)
    with pytest.raises(RecordingError, match="Unknown event kind 'bogus'"):
        event_from_dict({"kind": "bogus", "seq": 0, "run": {"run_id": "r"}})
    with pytest.raises(UsageError, match="is a directory"):
        Recorder(tmp_path)


def test_a_process_killed_mid_line_leaves_a_readable_recording(tmp_path):
    path = tmp_path / "cut.jsonl"
    with Recorder(path):
        Leaky()("x")
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # the last line cut short, as a kill -9 leaves it
    events = read_recording(path).events()
    assert [e.kind for e in events] == ["start"]


EXITS_3 = """
import sys
from streamtap import ModuleBase, subscribe
class Echo(ModuleBase):
    def forward(self, text):
        yield "echo: "
        yield text
print(Echo()("hi"))
sys.exit(3)
"""


def test_streamtap_record_records_a_program_with_no_code_change(tmp_path):
    out = tmp_path / "sub" / "prog.jsonl"
    script = tmp_path / "prog.py"
    script.write_text(EXITS_3)
    env = {k: v for k, v in os.environ.items() if k != RECORD_ENV and not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamtap.cli", "record", "-o", str(out), "--", sys.executable, str(script)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # the program's own exit status
    assert "echo: hi" in proc.stdout
    assert f"4 events of 1 runs in {out}" in proc.stderr and "Error" not in proc.stderr
    events = replay(out)
    assert events.kinds() == ["start", "chunk", "chunk", "end"] and events.text() == "echo: hi"


def test_streamtap_record_without_a_program_is_a_usage_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streamtap.cli", "record", "-o", str(tmp_path / "x.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "give the program to run after --" in proc.stderr
