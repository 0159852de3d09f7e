"""The embedded OpenAI-compatible server, over real HTTP with the real ``openai`` client."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import typing as t

import openai
import pytest

from streamtap.testing import FakeOpenAI, model_endpoint

WEATHER_TOOLS = [
    {"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_n_day_weather_forecast", "parameters": {"type": "object"}}},
]
SEED_QUERY = "What's the weather like today in celsius in Tokyo and Paris."


def client(srv: FakeOpenAI, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0, **kw)  # type: ignore[arg-type]


def raw_post(srv: FakeOpenAI, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_sse_framing_is_real(server: FakeOpenAI) -> None:
    status, headers, raw = raw_post(
        server, {"model": "fake-gpt", "messages": [{"role": "user", "content": "hi there"}], "stream": True}
    )
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    frames = raw.decode().split("\n\n")
    assert frames[-1] == ""
    assert frames[-2] == "data: [DONE]"
    payloads = [json.loads(f[len("data: ") :]) for f in frames[:-2]]
    assert all(f.startswith("data: ") for f in frames[:-1])
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads)
    assert text == "You said: hi there"
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)


def test_models_and_non_streaming(server: FakeOpenAI) -> None:
    c = client(server)
    assert "fake-gpt" in [m.id for m in c.models.list()]
    reply = c.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "echo me"}])
    assert reply.choices[0].message.content == "You said: echo me"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    rec = server.chat_records()[-1]
    assert rec.stream is False and rec.outcome == "completed"


def test_streamed_tool_calls_are_parallel_and_split(server: FakeOpenAI) -> None:
    stream = client(server).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": SEED_QUERY}], tools=WEATHER_TOOLS, stream=True
    )
    pieces: dict[int, list[str]] = {}
    ids: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                if tc.id:
                    ids[tc.index] = tc.id
                if tc.function and tc.function.arguments:
                    pieces.setdefault(tc.index, []).append(tc.function.arguments)
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(pieces) == [0, 1]  # one call per city, in one turn
    assert len(set(ids.values())) == 2
    args = [json.loads("".join(pieces[i])) for i in (0, 1)]
    assert all(len(pieces[i]) >= 3 for i in (0, 1))  # arguments split over several chunks
    assert ["Tokyo" in args[0]["location"], "Paris" in args[1]["location"]] == [True, True]
    assert all(a["unit"] == "celsius" for a in args)


def test_answers_from_tool_results(server: FakeOpenAI) -> None:
    messages = [
        {"role": "user", "content": SEED_QUERY},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{}"}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": json.dumps({"location": "Tokyo", "temperature": "10", "unit": "celsius"}),
        },
    ]
    reply = client(server).chat.completions.create(model="fake-gpt", messages=messages, tools=WEATHER_TOOLS)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "The current weather in Tokyo is 10 degrees Celsius."


def test_reasoning_and_usage_chunk(server: FakeOpenAI) -> None:
    stream = client(server).chat.completions.create(
        model="fake-reasoning",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
    )
    assert reasoning.startswith("The user said something")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == len(reasoning.split())
    plain = list(
        client(server).chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain)


@pytest.mark.parametrize(
    ("model", "marker"), [("fake-inline", "<tool_call>"), ("internlm2-chat-20b", "<|action_start|>")]
)
def test_inline_tool_markup_modes(server: FakeOpenAI, model: str, marker: str) -> None:
    stream = client(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": SEED_QUERY}], tools=WEATHER_TOOLS, stream=True
    )
    contents = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(contents)
    assert text.count(marker) == 2
    assert not any(marker in piece for piece in contents)  # markers straddle chunk boundaries


def test_token_delay_paces_the_stream(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.02)
    t0 = time.monotonic()
    chunks = list(
        client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c d"}], stream=True)
    )
    assert time.monotonic() - t0 >= 0.02 * len(chunks)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ({"extra_headers": {"x-fake-fault": "500"}}, openai.InternalServerError),
        ({"model": "fault-429"}, openai.RateLimitError),
        ({"content": "hi [fault=404]"}, openai.NotFoundError),
    ],
)
def test_http_faults(server: FakeOpenAI, how: dict, error: type) -> None:
    kwargs = {
        "model": how.get("model", "fake-gpt"),
        "messages": [{"role": "user", "content": how.get("content", "hi")}],
    }
    with pytest.raises(error):
        client(server).chat.completions.create(stream=True, extra_headers=how.get("extra_headers"), **kwargs)  # type: ignore[arg-type]
    assert server.chat_records()[-1].outcome == "fault"


def test_429_is_retried_by_the_client(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server()
    c = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=1)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="fault-429", messages=[{"role": "user", "content": "x"}])
    assert [r.status for r in srv.chat_records()] == [429, 429]


def test_malformed_chunk(server: FakeOpenAI) -> None:
    stream = client(server).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "a b c d e [fault=malformed]"}], stream=True
    )
    got = []
    with pytest.raises(json.JSONDecodeError):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 2


def test_dropped_connection(server: FakeOpenAI) -> None:
    stream = client(server).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "a b c d e [fault=drop]"}], stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    assert server.chat_records()[-1].outcome == "fault"


def test_hang_until_the_client_times_out(server: FakeOpenAI) -> None:
    start = time.monotonic()
    stream = client(server, timeout=0.3).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "a b c d e [fault=hang]"}], stream=True
    )
    with pytest.raises(openai.APITimeoutError):
        list(stream)
    rec = server.wait_for_closed(after=start)
    assert rec.chunks_sent == 2


def test_early_close_is_recorded(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.01)
    stream = client(srv).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "one two three four five six"}], stream=True
    )
    next(iter(stream))
    closed = time.monotonic()
    stream.close()
    rec = srv.wait_for_closed()
    assert rec.outcome == "client_closed" and rec.closed_early
    assert rec.finished_at is not None and 0 <= rec.finished_at - closed < 0.1


def test_api_key_is_checked(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(api_key="right")
    with pytest.raises(openai.AuthenticationError):
        client(srv).models.list()
    assert openai.OpenAI(base_url=srv.base_url, api_key="right").models.list().data


async def test_two_hundred_concurrent_streams(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.05)
    c = openai.AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0)

    async def one(i: int) -> str:
        stream = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"n{i} a b c d e"}], stream=True
        )
        return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    t0 = time.monotonic()
    texts = await asyncio.gather(*(one(i) for i in range(200)))
    elapsed = time.monotonic() - t0
    await c.close()
    assert texts == [f"You said: n{i} a b c d e" for i in range(200)]
    recs = srv.chat_records()
    assert len(recs) == 200 and all(r.outcome == "completed" for r in recs)
    # Each stream takes >= 0.4 s (8+ chunks at 50 ms); 200 in a row would take 80 s.
    assert elapsed < 20
    marks = sorted([(r.started_at, 1) for r in recs] + [(t.cast(float, r.finished_at), -1) for r in recs])
    open_now = peak = 0
    for _, step in marks:
        open_now += step
        peak = max(peak, open_now)
    assert peak >= 100  # the streams were served at the same time


def test_model_endpoint_prefers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1")
    with model_endpoint() as url:
        assert url == "http://example.invalid/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with model_endpoint() as url:
        assert url.startswith("http://127.0.0.1:")


def test_cli_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "fake-openai", "--port", "0", "--delay", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("OPENAI_BASE_URL=")[1].rstrip(")\n")
        reply = openai.OpenAI(base_url=url, api_key="k").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "cli"}]
        )
        assert reply.choices[0].message.content == "You said: cli"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="tool_mode"):
        FakeOpenAI(tool_mode="xml")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not running"):
        _ = FakeOpenAI().base_url


def test_a_long_running_server_keeps_a_bounded_number_of_request_records() -> None:
    """`streamtap demo` runs for days: the records of old requests must not pile up."""
    with FakeOpenAI(keep_records=3) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
        for i in range(5):
            client.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": f"q{i}"}])
        kept = srv.chat_records()
        assert [r.index for r in kept] == [2, 3, 4]  # the newest, numbered in arrival order
        assert [r.messages[-1]["content"] for r in kept] == ["q2", "q3", "q4"]
        client.close()


def test_keep_records_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keep_records"):
        FakeOpenAI(keep_records=0)
