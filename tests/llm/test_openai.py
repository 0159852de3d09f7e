"""The OpenAI chat module, with the real ``openai`` client against the embedded server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import typing as t

import openai
import pytest

from streamtap.events import End, Usage
from streamtap.exceptions import RunCancelled
from streamtap.llm.errors import LLMError
from streamtap.llm.openai import AsyncOpenAIChat, ChatReply, OpenAIChat
from streamtap.testing import FakeOpenAI, capture_events, check_invariants

TOOLS = [
    {"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_n_day_weather_forecast", "parameters": {"type": "object"}}},
]
SEED_QUERY = "What's the weather like today in celsius in Tokyo and Paris."


def chat(srv: FakeOpenAI, model: str = "fake-gpt", **kw: object) -> OpenAIChat:
    return OpenAIChat(model, base_url=srv.base_url, api_key="k", max_retries=0, **kw)  # type: ignore[arg-type]


def end_of(events: list, kind: str = "llm") -> End:
    return next(e for e in events if isinstance(e, End) and e.run.kind == kind)


def test_text_streams_with_usage_ttft_and_attributes(server: FakeOpenAI) -> None:
    llm = chat(server)
    with capture_events() as events:
        reply = llm("stream these words please")
    check_invariants(events)
    chunks = list(events.of("chunk"))
    assert [c.channel for c in chunks] == ["text"] * len(chunks) and len(chunks) == 6
    assert "".join(c.delta for c in chunks) == "You said: stream these words please" == reply
    assert isinstance(reply, ChatReply) and reply.finish_reason == "stop"
    end = end_of(events)
    assert end.status == "ok" and end.output == reply
    assert isinstance(end.usage, Usage) and end.usage.input_tokens > 0 and end.usage.output_tokens == 6
    assert end.timings.time_to_first_chunk is not None and 0 < end.timings.time_to_first_chunk <= end.timings.duration
    attrs = end.attributes
    assert attrs["request_model"] == "fake-gpt" and attrs["response_model"] == "fake-gpt-fake-0001"
    assert attrs["finish_reasons"] == ["stop"] and attrs["response_id"].startswith("chatcmpl-")
    assert attrs["server_address"] == "127.0.0.1" and attrs["server_port"] == server.port
    assert 0 < attrs["time_to_first_token"] <= end.timings.duration
    assert "input_messages" not in attrs  # content only on opt-in


def test_time_to_first_token_follows_the_server(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.05)
    with capture_events() as events:
        chat(srv)("hi")
    assert end_of(events).attributes["time_to_first_token"] >= 0.05


def test_reasoning_channel(server: FakeOpenAI) -> None:
    with capture_events() as events:
        reply = chat(server, "fake-reasoning")("think first")
    reasoning = [e.delta for e in events.of("chunk") if e.channel == "reasoning"]
    text = [e.delta for e in events.of("chunk") if e.channel == "text"]
    assert len(reasoning) > 3 and "".join(reasoning) == reply.reasoning
    assert "".join(text) == reply == "You said: think first"
    assert end_of(events).usage.reasoning_tokens == len(reasoning)


def test_tool_call_deltas_are_accumulated_by_index(server: FakeOpenAI) -> None:
    with capture_events() as events:
        reply = chat(server)(SEED_QUERY, tools=TOOLS)
    assert reply == "" and reply.finish_reason == "tool_calls" and len(reply.tool_calls) == 2
    args_chunks = [e for e in events.of("chunk") if e.channel == "tool_args"]
    for call in reply.tool_calls:
        mine = [e.delta for e in args_chunks if e.call_id == call.id]
        assert len(mine) >= 3  # they arrived in pieces, each streamed with its call id
        assert "".join(mine) == call.arguments
        assert json.loads(call.arguments)["unit"] == "celsius"
    assert {json.loads(c.arguments)["location"].split(",")[0] for c in reply.tool_calls} == {"Tokyo", "Paris"}
    assert end_of(events).attributes["tool_call_count"] == 2
    assert reply.to_message()["tool_calls"][0]["function"]["name"] == "get_current_weather"


def test_history_and_content_opt_in(server: FakeOpenAI) -> None:
    llm = chat(server, keep_history=True, system="be brief", record_content=True)
    llm("first")
    with capture_events() as events:
        llm("second")
    sent = server.chat_records()[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "You said: first"
    assert len(llm.history) == 4
    attrs = end_of(events).attributes
    assert attrs["input_messages"][-1] == {"role": "user", "content": "second"}
    assert attrs["output_messages"][0]["content"] == "You said: second"
    explicit = chat(server)("third", history=[{"role": "user", "content": "zero"}])
    assert explicit == "You said: third" and server.chat_records()[-1].messages[0]["content"] == "zero"


def test_non_streaming_mode(server: FakeOpenAI) -> None:
    with capture_events() as events:
        reply = chat(server, "fake-reasoning", stream=False)("all at once")
    assert server.chat_records()[-1].stream is False
    assert (
        [(e.channel, e.delta) for e in events.of("chunk")][-1] == ("text", "You said: all at once") == ("text", reply)
    )
    assert end_of(events).usage.output_tokens > 0


async def test_async_client_streams(server: FakeOpenAI) -> None:
    llm = AsyncOpenAIChat("fake-gpt", base_url=server.base_url, api_key="k", max_retries=0)
    texts = [e.delta async for e in llm.astream("async hello") if e.kind == "chunk"]
    assert "".join(texts) == "You said: async hello"
    reply = await llm.acall(SEED_QUERY, tools=TOOLS)
    assert isinstance(reply, ChatReply) and len(reply.tool_calls) == 2


def test_async_module_called_synchronously(server: FakeOpenAI) -> None:
    llm = AsyncOpenAIChat("fake-gpt", base_url=server.base_url, api_key="k", max_retries=0)
    assert llm("sync call") == "You said: sync call"


def test_environment_configuration(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    llm = OpenAIChat(max_retries=0)
    assert llm("env") == "You said: env"
    rec = server.chat_records()[-1]
    assert rec.model == "env-model" and rec.headers["authorization"] == "Bearer from-env"


@pytest.mark.parametrize(
    ("directive", "reason", "cause", "hint"),
    [
        ("[fault=500]", "server", openai.InternalServerError, "HTTP 500"),
        ("[fault=429]", "rate_limit", openai.RateLimitError, "max_retries"),
        ("[fault=404]", "not_found", openai.NotFoundError, "OPENAI_MODEL"),
        ("a b c d [fault=malformed]", "malformed_stream", json.JSONDecodeError, "OPENAI_BASE_URL"),
        ("a b c d [fault=drop]", "stream_cut", openai.APIConnectionError, "cut after"),
    ],
)
def test_faults_end_the_run_with_a_clear_error(
    server: FakeOpenAI, directive: str, reason: str, cause: type, hint: str
) -> None:
    llm = chat(server)
    with capture_events() as events, pytest.raises(LLMError) as info:
        llm(directive)
    err = info.value
    assert err.reason == reason and isinstance(err.__cause__, cause)
    assert hint in str(err) and err.detail["base_url"] == server.base_url
    assert server.base_url not in str(err)  # the model server's URL is internal: only in the detail
    end = end_of(events)
    assert end.status == "error" and end.error is not None and hint in end.error.message
    check_invariants(events)


def test_timeout_on_a_hanging_server(server: FakeOpenAI) -> None:
    with pytest.raises(LLMError) as info:
        chat(server, timeout=0.3)("a b c d [fault=hang]")
    assert info.value.reason == "timeout" and "0.3 s" in str(info.value)
    assert isinstance(info.value.__cause__, openai.APITimeoutError)


def test_wrong_key_and_unreachable_server(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(api_key="right")
    with pytest.raises(LLMError, match="OPENAI_API_KEY") as info:
        chat(srv)("hi")
    assert info.value.status_code == 401
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="Could not connect") as info:
        OpenAIChat("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)("hi")
    assert info.value.reason == "connection" and isinstance(info.value.__cause__, openai.APIConnectionError)


def test_closing_the_consumer_closes_the_http_stream(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.02)
    with capture_events() as events:
        stream = chat(srv).stream("one two three four five six seven eight")
        for event in stream:
            if event.kind == "chunk":
                break
        closed = time.monotonic()
        stream.close()
        rec = srv.wait_for_closed()
        with pytest.raises(RunCancelled):
            stream.handle.result(timeout=5)
    assert rec.finished_at is not None and rec.finished_at - closed < 0.1
    assert rec.chunks_sent < 10  # the server stopped writing
    assert end_of(events).status == "cancelled"
    check_invariants(events)


def test_cancel_while_blocked_on_a_hanging_server(server: FakeOpenAI) -> None:
    """The sync client is blocked in a socket read; cancel still closes the connection at once."""
    started = time.monotonic()
    with capture_events() as events:
        handle = chat(server).start("a b c d e [fault=hang]")
        rec = server.wait_for(lambda r: r.started_at >= started and r.chunks_sent == 2)
        cancelled = time.monotonic()
        handle.cancel("user pressed stop")
        closed = server.wait_for_closed(after=started)
        with pytest.raises(RunCancelled, match="user pressed stop"):
            handle.result(timeout=5)
    assert closed is rec
    assert closed.finished_at - cancelled < 0.1
    assert end_of(events).status == "cancelled"


async def test_async_cancel_closes_the_http_stream(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(token_delay=0.02)
    llm = AsyncOpenAIChat("fake-gpt", base_url=srv.base_url, api_key="k", max_retries=0)
    with capture_events() as events:
        handle = llm.astart("one two three four five six seven eight")
        async for event in handle.events():
            if event.kind == "chunk":
                break
        cancelled = time.monotonic()
        handle.cancel("stop")
        with pytest.raises((asyncio.CancelledError, RunCancelled)):
            await handle
    rec = await asyncio.to_thread(srv.wait_for_closed)
    assert rec.finished_at - cancelled < 0.1
    assert end_of(events).status == "cancelled"


def test_bad_prompt_is_refused(server: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="prompt string or a list of message dicts"):
        chat(server)(42)  # type: ignore[arg-type]


def test_many_threads_share_one_module(server: FakeOpenAI) -> None:
    llm = chat(server)
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = llm(f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {i: f"You said: thread {i}" for i in range(16)}


def test_streaming_bot_and_retriever_examples(run_example: t.Callable[..., str]) -> None:
    bot = run_example("streaming_bot.py").splitlines()
    assert "ret: You said: What skills do you have?" in bot and "history: 4 messages" in bot
    assert bot[-1] == "ret: You said: Streaming from async code too?"
    rag = run_example("retriever_then_stream.py").splitlines()
    assert rag[1] == "[Docs] ['harrison worked at kensho', 'harrison likes spicy food']"
    assert rag[2].rstrip("|").split("|")[0] == "According" and rag[-1].startswith("ret: 'According to the context")


class TestToolCallDeltasFromOtherServers:
    """Tool-call deltas as OpenAI-compatible servers other than OpenAI send them (review findings)."""

    @staticmethod
    def calls(deltas):
        import openai as _openai
        from openai.types.chat import ChatCompletionChunk

        from streamtap.llm.openai import _Accumulator

        class Ctx:
            def annotate(self, **k):
                pass

        acc = _Accumulator(Ctx(), None, 0.0)
        for d in deltas:
            chunk = _openai._models.construct_type(
                type_=ChatCompletionChunk,
                value={
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "delta": d, "finish_reason": None}],
                },
            )
            acc.feed(chunk)
        return [(c.id, c.name, c.arguments) for c in acc.reply().tool_calls]

    def test_name_repeated_in_every_delta(self):
        """Some proxies repeat the whole name: it is not doubled."""
        assert self.calls(
            [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": '{"x":1}'}}]},
            ]
        ) == [("a", "get_weather", '{"x":1}')]

    def test_no_index(self):
        """Calls without an index (Gemini's compatible API) stay separate, told apart by id."""
        assert self.calls(
            [
                {"tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}]},
                {"tool_calls": [{"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y":2}'}}]},
            ]
        ) == [("a", "f", '{"x":1}'), ("b", "g", '{"y":2}')]

    def test_index_reused_for_every_call(self):
        """Index 0 for every complete call with distinct ids (Ollama) gives separate calls."""
        assert self.calls(
            [
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "ca",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"c":"T"}'},
                        }
                    ]
                },
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "cb",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"c":"P"}'},
                        }
                    ]
                },
            ]
        ) == [("ca", "w", '{"c":"T"}'), ("cb", "w", '{"c":"P"}')]


def test_cancel_before_the_first_byte_ends_the_run_at_once() -> None:
    """A sync call still waiting for response headers (a hanging server) is abandoned at once on cancel."""
    import time

    import pytest

    from streamtap.exceptions import RunCancelled
    from streamtap.llm.openai import OpenAIChat
    from streamtap.testing import FakeOpenAI, capture_events, check_invariants

    with FakeOpenAI() as srv:
        llm = OpenAIChat("fake-gpt", base_url=srv.base_url, api_key="k", max_retries=0, stream=False, timeout=5)
        t0 = time.monotonic()
        with capture_events() as events:
            handle = llm.start("a b c [fault=hang]")
            srv.wait_for(lambda r: r.started_at >= t0 and r.path.endswith("/chat/completions"))
            cancelled_at = time.monotonic()
            handle.cancel("user stop")
            with pytest.raises(RunCancelled):
                handle.result(2)
            assert time.monotonic() - cancelled_at < 1.0
        assert [e.status for e in events.of("end")] == ["cancelled"]
        check_invariants(events)
