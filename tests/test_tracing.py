"""The tracing subscriber: spans parented by the run tree, GenAI names and attributes, metrics, content and redaction."""

from __future__ import annotations

import asyncio
import threading
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import streamtap
from streamtap import ModuleBase, bus
from streamtap.events import Usage
from streamtap.testing import capture_events
from streamtap.tracing import DURATION_BUCKETS, TOKEN_BUCKETS, TracingSubscriber, instrument


class Traced:
    """An SDK tracer provider with an in-memory exporter and metric reader, and a subscribed tracer."""

    def __init__(self, **kwargs: t.Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.sub = TracingSubscriber(self.provider, self.meter_provider, **kwargs).subscribe()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_run(self) -> dict[str, ReadableSpan]:
        return {s.attributes["streamtap.run.id"]: s for s in self.spans()}

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def metrics(self) -> dict[str, t.Any]:
        data = self.reader.get_metrics_data()
        out: dict[str, t.Any] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out

    def close(self) -> None:
        self.sub.unsubscribe()
        self.provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def traced() -> t.Iterator[Traced]:
    tr = Traced()
    yield tr
    tr.close()


# -- modules ---------------------------------------------------------------------


class Chat(ModuleBase):
    kind = "llm"
    model = "gpt-test"
    provider_name = "openai"

    def forward(self, prompt: t.Any) -> t.Iterator[str]:
        ctx = streamtap.current()
        assert ctx is not None
        ctx.annotate(
            response_model="gpt-test-0613",
            response_id="chatcmpl-1",
            finish_reasons=["stop"],
            server_address="127.0.0.1",
            server_port="8080",
            temperature=0.5,
            max_tokens=64,
        )
        ctx.add_usage(Usage(11, 7, reasoning_tokens=2, cached_input_tokens=3))
        yield "Sunny "
        yield "in Paris."


class Weather(ModuleBase):
    kind = "tool"
    name = "get_weather"
    description = "Current weather of a city."

    def forward(self, city: str) -> str:
        return Summarise()(f"weather of {city}")  # a module nested inside a tool


class Summarise(ModuleBase):
    kind = "node"

    def forward(self, text: str) -> str:
        return text.upper()


class Agent(ModuleBase):
    kind = "agent"
    name = "weather_agent"

    def forward(self, question: str) -> str:
        ctx = streamtap.current()
        assert ctx is not None
        ctx.tool("call_1", "get_weather", "requested", arguments={"city": "Paris"})
        result = Weather()("Paris")
        ctx.tool("call_1", "get_weather", "result", result=result)
        return Chat()(
            [{"role": "user", "content": question}, {"role": "tool", "tool_call_id": "call_1", "content": result}]
        )


def _run_tree(events: list[t.Any]) -> dict[str, str | None]:
    return {e.run.run_id: e.run.parent_id for e in events if e.kind == "start"}


def _span_tree(spans: list[ReadableSpan]) -> dict[str, str | None]:
    by_span_id = {s.context.span_id: s.attributes["streamtap.run.id"] for s in spans}
    return {s.attributes["streamtap.run.id"]: by_span_id.get(s.parent.span_id) if s.parent else None for s in spans}


# -- the span tree -----------------------------------------------------------------


class TestSpanTree:
    def test_span_tree_is_the_run_tree_with_tools_threads_and_tasks(self, traced: Traced) -> None:
        """Tool child runs, modules inside tools, runs in threads and in tasks: one trace, spans parented as runs."""

        class InThreads(ModuleBase):
            kind = "flow"

            def forward(self, cities: list[str]) -> list[str]:
                with streamtap.Executor(2) as pool:
                    return list(pool.map(Weather(), cities))

        class InTasks(ModuleBase):
            kind = "flow"

            async def forward(self, cities: list[str]) -> list[str]:
                return list(await asyncio.gather(*(Weather().acall(c) for c in cities)))

        class Top(ModuleBase):
            kind = "agent"

            def forward(self, x: str) -> str:
                Agent()(x)
                InThreads()(["Oslo", "Rome"])
                out = asyncio.run(InTasks().acall(["Lima", "Kyiv"]))
                return ",".join(out)

        with capture_events(kinds=["start"]) as events:
            Top()("hi")
        spans = traced.spans()
        assert len(spans) == len(events) == 15
        assert _span_tree(spans) == _run_tree(events)
        assert len({s.context.trace_id for s in spans}) == 1
        # exactly one root span, and it is the Top run's
        roots = [s for s in spans if s.parent is None]
        assert [r.name for r in roots] == ["invoke_agent Top"]

    def test_parent_is_the_run_tree_not_the_current_span(self, traced: Traced) -> None:
        """A span the user makes current inside forward() does not become the parent of a child run's span."""
        user_tracer = traced.provider.get_tracer("user")

        class Outer(ModuleBase):
            def forward(self, x: str) -> str:
                with user_tracer.start_as_current_span("user-work"):
                    return Summarise()(x)

        Outer()("a")
        outer = traced.one("Outer")
        child = traced.one("Summarise")
        user = traced.one("user-work")
        assert child.parent is not None and child.parent.span_id == outer.context.span_id
        assert user.parent is not None and user.parent.span_id == outer.context.span_id

    def test_root_run_nests_under_the_callers_span(self, traced: Traced) -> None:
        """A root run called inside an application span (a web request) is its child."""
        tracer = traced.provider.get_tracer("app")
        with tracer.start_as_current_span("POST /chat") as request:
            Summarise()("x")
        run = traced.one("Summarise")
        assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id

    def test_span_times_are_the_runs_wall_clock_times(self, traced: Traced) -> None:
        """The span starts at Start.started_at and lasts End.timings.duration."""
        with capture_events(kinds=["start", "end"]) as events:
            Summarise()("x")
        start, end = events
        span = traced.one("Summarise")
        assert span.start_time == int(start.started_at * 1e9)
        assert span.end_time - span.start_time == int(end.timings.duration * 1e9)

    def test_no_span_per_chunk(self, traced: Traced) -> None:
        """A run of 500 chunks is one span, and the tracer does not even listen to chunks."""

        class Many(ModuleBase):
            def forward(self, n: int) -> t.Iterator[str]:
                for _ in range(n):
                    yield "x"

        assert not bus.signals["chunk"].receivers and not bus.registry.chunk
        assert Many()(500) == "x" * 500
        assert len(traced.spans()) == 1
        assert not traced.spans()[0].events

    @settings(max_examples=25, deadline=None)
    @given(shape=st.recursive(st.just([]), lambda kids: st.lists(kids, max_size=3), max_leaves=12))
    def test_any_tree_shape(self, shape: list[t.Any]) -> None:
        """Property: for any nesting of module calls, the span tree equals the run tree."""

        class Node(ModuleBase):
            def forward(self, children: list[t.Any]) -> int:
                return 1 + sum(Node()(c) for c in children)

        tr = Traced()
        try:
            with capture_events(kinds=["start"]) as events:
                Node()(shape)
            spans = tr.spans()
            assert _span_tree(spans) == _run_tree(events)
            assert len({s.context.trace_id for s in spans}) == 1
        finally:
            tr.close()


# -- names, kinds, attributes -----------------------------------------------------


class TestConventions:
    def test_names_kinds_and_operations(self, traced: Traced) -> None:
        """chat {model} is CLIENT; execute_tool / invoke_agent / invoke_workflow are INTERNAL; nodes keep their name."""

        class Flow(ModuleBase):
            kind = "flow"
            name = "trip"

            def forward(self, x: str) -> str:
                return Agent()(x)

        Flow()("weather?")
        chat = traced.one("chat gpt-test")
        tool = traced.one("execute_tool get_weather")
        agent = traced.one("invoke_agent weather_agent")
        flow = traced.one("invoke_workflow trip")
        node = traced.one("Summarise")
        assert chat.kind == SpanKind.CLIENT
        assert {tool.kind, agent.kind, flow.kind, node.kind} == {SpanKind.INTERNAL}
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.name"] == "get_weather"
        assert tool.attributes["gen_ai.tool.type"] == "function"
        assert tool.attributes["gen_ai.tool.description"] == "Current weather of a city."
        assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert agent.attributes["gen_ai.agent.name"] == "weather_agent"
        assert flow.attributes["gen_ai.operation.name"] == "invoke_workflow"
        assert flow.attributes["gen_ai.workflow.name"] == "trip"
        assert "gen_ai.operation.name" not in node.attributes
        assert node.attributes["streamtap.run.kind"] == "node"
        for span in traced.spans():
            assert span.attributes["streamtap.status"] == "ok"
            assert span.status.status_code == StatusCode.UNSET
            assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "streamtap"

    def test_llm_attributes_and_types(self, traced: Traced) -> None:
        """Model, provider, response, finish reasons, server, request params, usage and TTFC, with their types."""
        Chat()("hi")
        a = traced.one("chat gpt-test").attributes
        assert a["gen_ai.request.model"] == "gpt-test"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.response.model"] == "gpt-test-0613"
        assert a["gen_ai.response.id"] == "chatcmpl-1"
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["server.address"] == "127.0.0.1"
        assert a["server.port"] == 8080 and isinstance(a["server.port"], int)
        assert a["gen_ai.request.temperature"] == 0.5 and isinstance(a["gen_ai.request.temperature"], float)
        assert a["gen_ai.request.max_tokens"] == 64
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 7)
        assert a["gen_ai.usage.reasoning.output_tokens"] == 2
        assert a["gen_ai.usage.cache_read.input_tokens"] == 3
        assert (
            isinstance(a["gen_ai.response.time_to_first_chunk"], float)
            and a["gen_ai.response.time_to_first_chunk"] >= 0
        )
        assert a["gen_ai.request.stream"] is True

    def test_model_from_annotations_names_the_span(self, traced: Traced) -> None:
        """An llm module without a model attribute gets its span named from the request_model it annotates."""

        class Bare(ModuleBase):
            kind = "llm"

            def forward(self, x: str) -> str:
                streamtap.current().annotate(request_model="llama3", provider="ollama", tool_call_count=0)  # type: ignore[union-attr]
                return "ok"

        Bare()("x")
        span = traced.one("chat llama3")
        assert span.attributes["gen_ai.provider.name"] == "ollama"
        assert span.attributes["streamtap.attributes.tool_call_count"] == 0
        assert "gen_ai.request.stream" not in span.attributes  # no chunks: not streamed

    def test_tool_call_id_and_tool_events(self, traced: Traced) -> None:
        """The tool span gets the call id the agent requested; the agent span has one event per tool phase."""
        Agent()("weather?")
        tool = traced.one("execute_tool get_weather")
        agent = traced.one("invoke_agent weather_agent")
        assert tool.attributes["gen_ai.tool.call.id"] == "call_1"
        assert [e.name for e in agent.events] == ["streamtap.tool.requested", "streamtap.tool.result"]
        assert agent.events[0].attributes["gen_ai.tool.call.id"] == "call_1"
        assert "gen_ai.tool.call.arguments" not in agent.events[0].attributes  # content is opt-in

    def test_custom_events_become_span_events(self, traced: Traced) -> None:
        """streamtap.emit(name, data) is a span event named after it; its data is content."""

        class Progress(ModuleBase):
            def forward(self, x: str) -> str:
                streamtap.emit("retrieved", {"docs": 3})
                return x

        Progress()("x")
        (event,) = traced.one("Progress").events
        assert event.name == "retrieved"
        assert "streamtap.data" not in event.attributes


# -- statuses --------------------------------------------------------------------------


class TestStatus:
    def test_error_sets_status_type_and_exception_with_stack(self, traced: Traced) -> None:
        """A failed run: status ERROR, error.type, and an exception event with the stack trace."""

        class Boom(ModuleBase):
            def forward(self, x: str) -> str:
                raise KeyError("missing city")

        with pytest.raises(KeyError):
            Boom()("x")
        span = traced.one("Boom")
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "KeyError: 'missing city'"
        assert span.attributes["error.type"] == "KeyError"
        assert span.attributes["streamtap.status"] == "error"
        (exc,) = [e for e in span.events if e.name == "exception"]
        assert exc.attributes["exception.type"] == "KeyError"
        assert "in forward" in exc.attributes["exception.stacktrace"]

    def test_cancelled_run_is_distinct_and_not_an_error(self, traced: Traced) -> None:
        """A cancelled run keeps status UNSET, with streamtap.status=cancelled and the reason."""
        started = threading.Event()

        class Slow(ModuleBase):
            def forward(self, x: str) -> t.Iterator[str]:
                started.set()
                while True:
                    yield "."
                    threading.Event().wait(0.001)

        handle = Slow().start("x")
        assert started.wait(5)
        handle.cancel("user pressed stop")
        with pytest.raises(streamtap.RunCancelled):
            handle.result(5)
        span = traced.one("Slow")
        assert span.attributes["streamtap.status"] == "cancelled"
        assert span.status.status_code == StatusCode.UNSET
        assert "user pressed stop" in span.attributes["streamtap.cancel.reason"]

    def test_interrupted_run_is_distinct(self, traced: Traced) -> None:
        """A run that pauses for a human ends with streamtap.status=interrupted, not an error."""

        class Pause(Exception):
            __streamtap_status__ = "interrupted"

        class Ask(ModuleBase):
            def forward(self, x: str) -> str:
                raise Pause("need approval")

        with pytest.raises(Pause):
            Ask()("x")
        span = traced.one("Ask")
        assert span.attributes["streamtap.status"] == "interrupted"
        assert span.status.status_code == StatusCode.UNSET
        assert "error.type" not in span.attributes


# -- content and redaction --------------------------------------------------------------


SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"


class Leaky(ModuleBase):
    kind = "llm"
    model = "m"

    def forward(self, prompt: str) -> str:
        streamtap.current().annotate(api_key=SECRET, note=f"Authorization: Bearer {SECRET}")  # type: ignore[union-attr]
        return f"your key is {SECRET}"


class TestContent:
    def test_no_content_by_default(self, traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without opt-in no messages, arguments or results are recorded."""
        Agent()("What is the weather in Paris?")
        for span in traced.spans():
            text = repr(dict(span.attributes)) + repr([dict(e.attributes) for e in span.events])
            assert "Paris" not in text
            assert not any(
                k in span.attributes for k in ("gen_ai.input.messages", "gen_ai.output.messages", "streamtap.input")
            )

    def test_opt_in_records_messages_arguments_and_results(self) -> None:
        """capture_content=True records GenAI message JSON, tool arguments and results."""
        tr = Traced(capture_content=True)
        try:
            Agent()("What is the weather in Paris?")
            chat = tr.one("chat gpt-test").attributes
            assert chat["gen_ai.input.messages"] == (
                '[{"role":"user","parts":[{"type":"text","content":"What is the weather in Paris?"}]},'
                '{"role":"tool","parts":[{"type":"tool_call_response","id":"call_1","response":"WEATHER OF PARIS"}]}]'
            )
            assert chat["gen_ai.output.messages"] == (
                '[{"role":"assistant","parts":[{"type":"text","content":"Sunny in Paris."}],"finish_reason":"stop"}]'
            )
            tool = tr.one("execute_tool get_weather").attributes
            assert tool["gen_ai.tool.call.arguments"] == "Paris"
            assert tool["gen_ai.tool.call.result"] == "WEATHER OF PARIS"
            event = tr.one("invoke_agent weather_agent").events[0]
            assert event.attributes["gen_ai.tool.call.arguments"] == '{"city":"Paris"}'
            assert tr.one("Summarise").attributes["streamtap.output"] == "WEATHER OF PARIS"
        finally:
            tr.close()

    @pytest.mark.parametrize(("value", "on"), [("true", True), ("span_only", True), ("no_content", False), ("", False)])
    def test_env_variable_opts_in(self, monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
        """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is honoured when capture_content is not given."""
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
        tr = Traced()
        try:
            Summarise()("secret plans")
            assert ("streamtap.input" in tr.one("Summarise").attributes) is on
        finally:
            tr.close()

    def test_secrets_always_redacted(self) -> None:
        """API keys and Authorization values never reach a span, with or without content, in any field."""
        for capture in (False, True):
            tr = Traced(capture_content=capture)
            try:
                Leaky()(f"use {SECRET}")

                class Fails(ModuleBase):
                    def forward(self, x: str) -> str:
                        raise RuntimeError(f"401 from server, api_key={SECRET}")

                with pytest.raises(RuntimeError):
                    Fails()("x")
                dump = repr(
                    [
                        (dict(s.attributes), [dict(e.attributes) for e in s.events], s.status.description)
                        for s in tr.spans()
                    ]
                )
                assert SECRET not in dump
                assert "abcdefghijklmnop" not in dump
                assert "[REDACTED]" in dump
                assert tr.one("chat m").attributes["streamtap.attributes.api_key"] == "[REDACTED]"
                if capture:
                    assert tr.one("chat m").attributes["gen_ai.output.messages"].count("[REDACTED]") == 1
            finally:
                tr.close()

    def test_configured_patterns_are_redacted(self) -> None:
        """User patterns are applied on top of the built-in ones."""
        tr = Traced(capture_content=True, redact=[r"acct-\d{6}"])
        try:
            Summarise()("pay acct-123456 now")
            assert tr.one("Summarise").attributes["streamtap.input"] == "pay [REDACTED] now"
        finally:
            tr.close()

    def test_bad_pattern_is_a_usage_error(self) -> None:
        """An invalid regular expression is refused with a message naming it."""
        with pytest.raises(streamtap.UsageError, match=r"'\(unclosed'"):
            TracingSubscriber(redact=["(unclosed"])


class ToolTurn(ModuleBase):
    """A chat module called the way agents call it: ``llm(messages, tools=[...])``, answering with tool calls."""

    kind = "llm"
    model = "gpt-test"

    class Reply(str):
        finish_reason = "tool_calls"
        reasoning = "Paris needs a lookup."
        tool_calls = ({"id": "call_7", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},)

        def to_message(self) -> dict[str, t.Any]:
            return {"role": "assistant", "content": None, "tool_calls": list(self.tool_calls)}

    def forward(self, messages: list[dict[str, t.Any]], *, tools: list[t.Any]) -> str:
        streamtap.current().annotate(finish_reasons=["tool_calls"])  # type: ignore[union-attr]
        return self.Reply("")


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather of a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}  # fmt: skip


class TestGenAIContent:
    """Content in the conventions' shape, checked against their JSON schemas (tests/genai_schemas)."""

    def test_call_arguments_are_messages_and_tool_definitions(self) -> None:
        """llm(messages, tools=[...]): the messages become gen_ai.input.messages, the tools gen_ai.tool.definitions."""
        from genai_schema import check_all

        tr = Traced(capture_content=True)
        try:
            ToolTurn()([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
                       tools=[WEATHER_TOOL])  # fmt: skip
            decoded = check_all(tr.one("chat gpt-test").attributes)
        finally:
            tr.close()
        assert decoded["gen_ai.input.messages"] == [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        ]
        assert decoded["gen_ai.tool.definitions"] == [
            {"type": "function", "name": "get_weather", "description": "Current weather of a city.",
             "parameters": WEATHER_TOOL["function"]["parameters"]}  # type: ignore[index]
        ]  # fmt: skip

    def test_tool_call_turn_output_is_tool_call_parts(self) -> None:
        """A reply with tool calls and no text: reasoning and tool_call parts, no empty text part, finish_reason tool_call."""
        from genai_schema import check

        tr = Traced(capture_content=True)
        try:
            ToolTurn()([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
            out = check("gen_ai.output.messages", tr.one("chat gpt-test").attributes["gen_ai.output.messages"])
        finally:
            tr.close()
        assert out == [{
            "role": "assistant",
            "parts": [{"type": "reasoning", "content": "Paris needs a lookup."},
                      {"type": "tool_call", "id": "call_7", "name": "get_weather", "arguments": {"city": "Paris"}}],
            "finish_reason": "tool_call",
        }]  # fmt: skip

    def test_annotated_openai_messages_are_converted(self) -> None:
        """A module annotating OpenAI-style input_messages / output_messages (record_content) gets the GenAI shape."""
        from genai_schema import check_all

        class Annotating(ModuleBase):
            kind = "llm"
            model = "m"

            def forward(self, prompt: str) -> str:
                streamtap.current().annotate(  # type: ignore[union-attr]
                    input_messages=[{"role": "user", "content": prompt}],
                    output_messages=[{"role": "assistant", "content": "hi"}],
                    finish_reasons=["length"],
                )
                return "hi"

        tr = Traced(capture_content=True)
        try:
            Annotating()("hello")
            decoded = check_all(tr.one("chat m").attributes)
        finally:
            tr.close()
        assert decoded["gen_ai.input.messages"] == [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
        assert decoded["gen_ai.output.messages"][0]["finish_reason"] == "length"

    def test_long_content_is_cut_inside_and_stays_valid_json(self) -> None:
        """Messages over max_content_length: long texts are cut, old messages dropped; the JSON stays valid."""
        from genai_schema import check

        tr = Traced(capture_content=True, max_content_length=2_000)
        try:
            history = [
                {"role": "user" if i % 2 else "assistant", "content": f"message {i} " + "x" * 500} for i in range(20)
            ]
            ToolTurn()([*history, {"role": "user", "content": "last question"}], tools=[WEATHER_TOOL])
            value = tr.one("chat gpt-test").attributes["gen_ai.input.messages"]
        finally:
            tr.close()
        assert len(value) <= 2_000
        decoded = check("gen_ai.input.messages", value)
        assert decoded[-1]["parts"] == [{"type": "text", "content": "last question"}]
        assert "...[truncated]" in value


# -- context, provider fallback, isolation -----------------------------------------------


class TestContext:
    def test_span_is_current_inside_every_forward_shape(self, traced: Traced) -> None:
        """Inside forward (sync, generator, async, async generator) the run's span is OTel's current span."""
        seen: dict[str, int] = {}

        def note(name: str) -> None:
            seen[name] = trace.get_current_span().get_span_context().span_id

        class Sync(ModuleBase):
            def forward(self, x: str) -> str:
                note("Sync")
                return x

        class Gen(ModuleBase):
            def forward(self, x: str) -> t.Iterator[str]:
                note("Gen")
                yield x

        class Coro(ModuleBase):
            async def forward(self, x: str) -> str:
                await asyncio.sleep(0)
                note("Coro")
                return x

        class AGen(ModuleBase):
            async def forward(self, x: str) -> t.AsyncIterator[str]:
                await asyncio.sleep(0)
                note("AGen")
                yield x

        async def run_async() -> None:
            await Coro().acall("x")
            await AGen().acall("x")
            async for _ in AGen().astream("x"):
                pass

        Sync()("x")
        Gen()("x")
        list(Gen().stream("x"))
        asyncio.run(run_async())
        spans = traced.spans()
        for name, span_id in seen.items():
            assert span_id in {s.context.span_id for s in spans if s.name == name}, name
        assert trace.get_current_span().get_span_context().is_valid is False  # restored after the run

    def test_no_provider_configured_costs_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no provider given and none set globally, no span is started and nothing is made current."""
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
        seen = []

        class Probe(ModuleBase):
            def forward(self, x: str) -> str:
                seen.append(trace.get_current_span().get_span_context().is_valid)
                return Summarise()(x)

        with TracingSubscriber() as sub:
            Probe()("x")
            assert sub._entries == {}
            assert sub.errors == 0
        assert seen == [False]

    def test_global_provider_is_used_when_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The fallback is looked up at each root run, so a provider configured later is used."""
        tr = Traced()
        tr.sub.unsubscribe()
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: tr.provider)
        with instrument() as sub:
            Summarise()("x")
        assert [s.name for s in tr.spans()] == ["Summarise"]
        assert sub.errors == 0
        tr.close()

    def test_unsubscribe_stops_tracing(self, traced: Traced) -> None:
        """After unsubscribe no span is made and no receiver is left on the bus."""
        traced.sub.unsubscribe()
        Summarise()("x")
        assert traced.spans() == []
        assert not bus.scope_signal.receivers

    def test_failing_tracer_never_breaks_the_run(self) -> None:
        """A provider whose tracer raises: the run completes and the failures are counted."""

        class BadTracer(trace.Tracer):
            def start_span(self, *a: t.Any, **k: t.Any) -> trace.Span:
                raise RuntimeError("tracer exploded")

            def start_as_current_span(self, *a: t.Any, **k: t.Any) -> t.Any:
                raise RuntimeError("tracer exploded")

        class BadProvider(trace.TracerProvider):
            def get_tracer(self, *a: t.Any, **k: t.Any) -> trace.Tracer:
                return BadTracer()

        with TracingSubscriber(BadProvider()) as sub:
            assert Agent()("x") == "Sunny in Paris."
        assert sub.errors >= 1

    def test_raising_exporter_never_breaks_the_run(self) -> None:
        """An exporter that raises on every export: runs still return, spans are simply lost."""

        class Raising(SpanExporter):
            calls = 0

            def export(self, spans: t.Sequence[ReadableSpan]) -> SpanExportResult:
                Raising.calls += 1
                raise ConnectionError("collector down")

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Raising()))
        with TracingSubscriber(provider) as sub:
            assert Agent()("x") == "Sunny in Paris."
        assert Raising.calls == 4  # one per run: Agent, Weather, Summarise, Chat
        assert sub.errors == 0


# -- metrics -----------------------------------------------------------------------------


class TestMetrics:
    def test_genai_client_histograms(self, traced: Traced) -> None:
        """llm runs record token usage, duration and TTFC with the conventions' names, units and buckets."""
        Chat()("hi")
        Summarise()("not an llm")
        m = traced.metrics()
        assert set(m) == {
            "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
        }
        usage = m["gen_ai.client.token.usage"]
        assert usage.unit == "{token}"
        points = {p.attributes["gen_ai.token.type"]: p for p in usage.data.data_points}
        assert (points["input"].sum, points["output"].sum) == (11, 7)
        assert tuple(points["input"].explicit_bounds) == TOKEN_BUCKETS
        assert points["input"].attributes["gen_ai.request.model"] == "gpt-test"
        assert points["input"].attributes["gen_ai.response.model"] == "gpt-test-0613"
        assert points["input"].attributes["gen_ai.provider.name"] == "openai"
        assert points["input"].attributes["server.port"] == 8080
        duration = m["gen_ai.client.operation.duration"]
        assert duration.unit == "s"
        (point,) = duration.data.data_points
        assert point.count == 1 and tuple(point.explicit_bounds) == DURATION_BUCKETS
        assert m["gen_ai.client.operation.time_to_first_chunk"].unit == "s"

    def test_failed_call_duration_has_error_type(self, traced: Traced) -> None:
        """A failed llm call's duration point carries error.type."""

        class Down(ModuleBase):
            kind = "llm"
            model = "m"

            def forward(self, x: str) -> str:
                raise ConnectionError("refused")

        with pytest.raises(ConnectionError):
            Down()("x")
        (point,) = traced.metrics()["gen_ai.client.operation.duration"].data.data_points
        assert point.attributes["error.type"] == "ConnectionError"


class TestBackgroundChildren:
    def test_child_started_after_its_parent_ended_keeps_the_tree(self, traced: Traced) -> None:
        """A background child run that starts only after its parent returned is still parented by it."""
        gate = threading.Event()
        threads: list[threading.Thread] = []

        def later(x: str) -> None:
            gate.wait(10)
            Summarise()(x)  # starts after Parent has ended

        class Parent(ModuleBase):
            def forward(self, x: str) -> str:
                th = threading.Thread(target=streamtap.wrap(later), args=(x,))
                th.start()
                threads.append(th)
                return x

        with capture_events(kinds=["start", "end"]) as events:
            Parent()("x")
            gate.set()
            threads[0].join(10)
        assert [(e.kind, e.run.name) for e in events] == [
            ("start", "Parent"), ("end", "Parent"), ("start", "Summarise"), ("end", "Summarise"),
        ]  # fmt: skip
        spans = {s.name: s for s in traced.spans()}
        assert spans["Summarise"].parent is not None
        assert spans["Summarise"].parent.span_id == spans["Parent"].context.span_id
        assert spans["Summarise"].context.trace_id == spans["Parent"].context.trace_id
