"""Encoding never fails: lone surrogates, NUL, CR and line separators in any text keep the streams whole.

The SSE framing is parsed back as the HTML spec says (lines end at CRLF, LF
or CR), and the JSON read back is the value sent, lone surrogates included
(they are written as ``\\uXXXX`` escapes, valid JSON).
"""

from __future__ import annotations

import json
import math
import re
import typing as t

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap import ModuleBase
from streamtap.web.ui_stream import UIMessageMapper, encode_json, encode_part

from .helpers import check_ui_stream, read_sse

EDGE = ["\ud800", "\udfff", "\ud83d", "\x00", "\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\ufeff", "\\", '"', "😀"]
ANY_TEXT = st.lists(st.one_of(st.characters(exclude_categories=()), st.sampled_from(EDGE)), max_size=40).map("".join)


def sse_frames(body: bytes) -> list[dict[str, str]]:
    """Parse an SSE body per the HTML spec: strict UTF-8, lines end at CRLF, LF or CR; fields per line."""
    text = body.decode("utf-8")  # strict: invalid UTF-8 is a broken stream
    frames, frame = [], {}
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if frame:
                frames.append(frame)
            frame = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        frame[field] = frame[field] + "\n" + value if field in frame else value
    assert frame == {}, f"unterminated frame {frame!r}"
    return frames


def strict_json(text: str) -> t.Any:
    def refuse(name: str) -> t.Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def same_text(s: str) -> str:
    """``s`` with surrogate code points that form a pair joined (JSON reads ``\\ud83d\\ude00`` as one character)."""
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def normal(value: t.Any) -> t.Any:
    if isinstance(value, str):
        return same_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {same_text(k): normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)


def test_the_edge_strategy_reaches_lone_surrogates():
    found = []

    @given(ANY_TEXT)
    @settings(max_examples=300, database=None)
    def probe(s: str) -> None:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
            found.append(s)

    probe()
    assert found


@given(ANY_TEXT)
@settings(max_examples=400, deadline=None)
def test_any_text_delta_is_one_frame_that_reads_back(text):
    part = {"type": "text-delta", "id": "t-1", "delta": text}
    body = encode_part(part)
    [frame] = sse_frames(body)
    assert list(frame) == ["data"]
    assert strict_json(frame["data"]) == normal(part)
    assert body.decode().splitlines() == [
        body.decode()[:-2],
        "",
    ]  # even line splitters that break at U+2028 or NEL see one line


@given(JSON)
@settings(max_examples=300, deadline=None)
def test_any_json_value_encodes_to_strict_json_on_one_line(value):
    data = encode_json(value).decode("utf-8")
    assert "\n" not in data and "\r" not in data and len(data.splitlines()) <= 1
    assert strict_json(data) == normal(value)


@given(st.lists(ANY_TEXT, min_size=1, max_size=8), ANY_TEXT, st.sampled_from(["ok", "error", "cancelled"]))
@settings(max_examples=150, deadline=None)
def test_a_mapped_run_with_any_text_parses_back_and_ends(deltas, error, status):
    run = {"run_id": "r", "root_id": "r", "parent_id": None, "name": "m", "kind": "agent"}
    mapper = UIMessageMapper("r", metadata={"runId": "r"})
    events = [{"kind": "start", "seq": 0, "run": run}]
    events += [{"kind": "chunk", "seq": i + 1, "run": run, "channel": "text", "delta": d} for i, d in enumerate(deltas)]
    end = {"kind": "end", "seq": len(events), "run": run, "status": status, "output": "".join(deltas)}
    if status != "ok":
        end["error"] = {"type": "RuntimeError", "message": error}
    body = b"".join(map(encode_part, mapper.begin() + [p for ev in [*events, end] for p in mapper.feed(ev)]))
    parts = [strict_json(f["data"]) for f in sse_frames(body)]
    check_ui_stream(parts)
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == "".join(map(same_text, deltas))


# -- through the real server -------------------------------------------------------


class Edgy(ModuleBase):
    """Streams the user's text back, then every edge character as its own delta."""

    kind = "agent"
    blocking = False

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        yield text
        for piece in EDGE:
            yield piece


async def test_edge_characters_in_the_message_and_the_deltas_finish_both_streams(serve, client: httpx.AsyncClient):
    srv = serve(Edgy())
    raw = '{"id":"u1","messages":[{"id":"m","role":"user","parts":[{"type":"text","text":"a\\ud800b\\u0000c\\r\\u2028"}]}]}'
    res = await read_sse(
        client, "POST", srv.url + "/api/chat", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert res.status == 200 and res.done
    async with client.stream(
        "POST",
        srv.url + "/api/chat",
        content=raw.replace('"u1"', '"u2"').encode(),
        headers={"content-type": "application/json"},
    ) as r:
        body = await r.aread()
    frames = sse_frames(body)
    assert frames[-1] == {"data": "[DONE]"}
    parts = [strict_json(f["data"]) for f in frames[:-1]]
    check_ui_stream(parts)
    assert parts[-1] == {"type": "finish", "finishReason": "stop"}
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    # The module got the message as valid Unicode (no model API takes a lone surrogate); its own deltas
    # are read back exactly as it sent them, lone surrogates included.
    assert text == "a\ufffdb\x00c\r\u2028" + "".join(EDGE)
    run_id = parts[0]["messageMetadata"]["runId"]
    r = await client.get(f"{srv.url}/api/runs/{run_id}/events")
    assert r.status_code == 200
    events = [strict_json(f["data"]) for f in sse_frames(r.content) if "data" in f]
    assert [int(f["id"]) for f in sse_frames(r.content) if "data" in f] == [e["seq"] for e in events]
    assert events[0]["kind"] == "start" and events[0]["inputs"] == "a\ufffdb\x00c\r\u2028", events[0]
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "ok"


async def test_a_lone_surrogate_in_the_question_reaches_the_model_as_a_replacement_character(serve, client):
    """The real openai client cannot send a lone surrogate (UTF-8): the app hands the module valid text."""
    pytest.importorskip("openai")
    from streamtap.demo.weather import weather_agent
    from streamtap.testing import FakeOpenAI

    raw = (
        '{"id":"s1","messages":[{"id":"m","role":"user","parts":[{"type":"text","text":"weather in Par\\ud800is?"}]}]}'
    )
    with FakeOpenAI(token_delay=0) as model:
        srv = serve(lambda: weather_agent(base_url=model.base_url, asynchronous=True))
        res = await read_sse(
            client, "POST", srv.url + "/api/chat", content=raw.encode(), headers={"content-type": "application/json"}
        )
    assert res.done and res.parts[-1] == {"type": "finish", "finishReason": "stop"}, res.parts[-3:]
