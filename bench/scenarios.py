"""What ``python -m bench`` measures: streamtap and its peers, each producer probed the same way.

Every producer below has the shape of the bare loop -- ``for size in
segments(n, probe): for _ in range(size): yield "x"`` -- so that the probe
runs in the middle of the scenario, in the producer's own thread. A peer
that is not installed is skipped with a line saying so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import typing as t

from bench.harness import Probe, Scenario, segments

__all__ = ["all_scenarios"]

Skip = t.Callable[[str], None]


# -- streamtap ------------------------------------------------------------------


def _streamtap() -> list[Scenario]:
    import streamtap
    from streamtap import ModuleBase

    class Gen(ModuleBase):
        """Streams n one-character chunks, probing between segments."""

        join_output = False

        def forward(self, n: int, probe: Probe) -> t.Iterator[str]:
            for size in segments(n, probe):
                for _ in range(size):
                    yield "x"

    class AGen(ModuleBase):
        """The async-generator shape of Gen."""

        join_output = False

        async def forward(self, n: int, probe: Probe) -> t.AsyncIterator[str]:
            for size in segments(n, probe):
                for _ in range(size):
                    yield "x"

    def call(n: int, probe: Probe) -> None:
        Gen()(n, probe)

    def call_with(subscribers: int) -> t.Callable[[int, Probe], None]:
        def run(n: int, probe: Probe) -> None:
            subs = [streamtap.subscribe(lambda e: None, kinds=["chunk"]) for _ in range(subscribers)]
            try:
                Gen()(n, probe)
            finally:
                for s in subs:
                    s.unsubscribe()

        return run

    def stream(n: int, probe: Probe) -> None:
        for _ in Gen().stream(n, probe):
            pass

    def text(n: int, probe: Probe) -> None:
        for _ in Gen().stream(n, probe).text():
            pass

    def astream(n: int, probe: Probe) -> None:
        async def main() -> None:
            async for _ in AGen().astream(n, probe):
                pass

        asyncio.run(main())

    return [
        Scenario("per chunk", "module(x), nobody listening", call),
        Scenario("per chunk", "module(x), 1 subscribe()d callback", call_with(1)),
        Scenario("per chunk", "module(x), 3 subscribe()d callbacks", call_with(3)),
        Scenario("per chunk", "module.stream(x) consumed by for", stream),
        Scenario("per chunk", "module.stream(x).text()", text),
        Scenario("per chunk", "module.astream(x), async generator forward", astream),
    ]


def _streamtap_per_run() -> list[Scenario]:
    from streamtap import ModuleBase

    class Plain(ModuleBase):
        """Returns at once: the per-run cost."""

        def forward(self, x: int) -> int:
            return x

    def plain(x: int) -> int:
        return x

    def plain_calls(n: int) -> None:
        f = plain
        for i in range(n):
            f(i)

    def runs(n: int, probe: Probe) -> None:
        m = Plain()
        for size in segments(n, probe):
            for i in range(size):
                m(i)

    return [
        Scenario(
            "per run",
            "ModuleBase call, nobody listening",
            runs,
            unit="run",
            floor="plain function call",
            n_scale=0.2,
            probe=lambda: Probe(500, plain_calls),
        )
    ]


def _tracing(skip: Skip) -> list[Scenario]:
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        skip("OpenTelemetry SDK not installed: tracing scenarios skipped (pip install 'streamtap[otel]')")
        return []
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    from streamtap import ModuleBase
    from streamtap.tracing import TracingSubscriber

    class Drop(SpanExporter):
        """Accepts every batch and keeps nothing."""

        def export(self, spans: t.Sequence[t.Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    tracer = provider.get_tracer("bench")

    class Plain(ModuleBase):
        """Returns at once."""

        kind = "llm"
        model = "bench-model"

        def forward(self, x: int) -> int:
            return x

    def work(x: int) -> int:
        return x

    def bare_spans(n: int) -> None:
        # What a bare SDK user writes for the same run: the span current around the call (as
        # streamtap's is around forward()), the same seven attributes the traced run's span
        # gets, six known at start and the outcome set at the end.
        start = tracer.start_as_current_span
        client = SpanKind.CLIENT
        f = work
        for i in range(n):
            with start(
                "chat bench-model",
                kind=client,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "bench-model",
                    "streamtap.run.id": "0123456789abcdef",
                    "streamtap.run.kind": "llm",
                    "streamtap.root.id": "0123456789abcdef",
                    "streamtap.run.name": "Plain",
                },
            ) as span:
                f(i)
                span.set_attribute("streamtap.status", "ok")

    def traced_runs(n: int, probe: Probe) -> None:
        sub = TracingSubscriber(tracer_provider=provider).subscribe()
        m = Plain()
        try:
            for size in segments(n, probe):
                for i in range(size):
                    m(i)
        finally:
            sub.unsubscribe()

    def span_events(n: int, probe: Probe) -> None:
        with tracer.start_as_current_span("stream") as span:
            add = span.add_event
            for size in segments(n, probe):
                for _ in range(size):
                    add("chunk", {"delta": "x"})

    return [
        Scenario(
            "per run",
            "ModuleBase call, tracing subscriber on",
            traced_runs,
            unit="run",
            floor="bare OpenTelemetry SDK span, same attributes",
            n_scale=0.02,
            probe=lambda: Probe(100, bare_spans),
        ),
        Scenario(
            "per chunk", "OpenTelemetry span.add_event per chunk", span_events, library="opentelemetry", n_scale=0.2
        ),
    ]


# -- peers ------------------------------------------------------------------------


def _blinker() -> list[Scenario]:
    import blinker

    def send(n: int, probe: Probe) -> None:
        sig = blinker.Signal()

        def recv(sender: object, **kw: object) -> None:
            pass

        sig.connect(recv)
        for size in segments(n, probe):
            for _ in range(size):
                sig.send(None, delta="x")

    return [Scenario("per chunk", "blinker Signal.send, 1 receiver", send, library="blinker")]


def _structlog() -> list[Scenario]:
    import structlog

    def lines(n: int, probe: Probe) -> None:
        sink = io.StringIO()
        log = structlog.wrap_logger(
            structlog.PrintLogger(sink),
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        )
        for size in segments(n, probe):
            for _ in range(size):
                log.info("chunk", delta="x")
            sink.seek(0)
            sink.truncate()

    return [Scenario("per chunk", "structlog JSON line per chunk", lines, library="structlog", n_scale=0.2)]


LC_STREAM = "LangChain chat model .stream()"
LC_BRIDGE = "LangChain .stream() + streamtap bridge"
LC_BRIDGE_STREAM = "LangChain .stream() + bridge, read by module.stream()"


def _langchain(skip: Skip) -> list[Scenario]:
    if importlib.util.find_spec("langchain_core") is None:
        skip("langchain-core not installed: LangChain scenarios skipped (pip install -r bench/requirements.txt)")
        return []
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk, ChatResult

    class Streamer(BaseChatModel):
        """A chat model streaming n one-character chunks, probing between segments."""

        n: int = 0
        probe: t.Any = None

        @property
        def _llm_type(self) -> str:
            return "bench"

        def _generate(self, messages: t.Any, stop: t.Any = None, run_manager: t.Any = None, **kw: t.Any) -> ChatResult:
            raise NotImplementedError

        def _stream(
            self, messages: t.Any, stop: t.Any = None, run_manager: t.Any = None, **kw: t.Any
        ) -> t.Iterator[t.Any]:
            for size in segments(self.n, self.probe):
                for _ in range(size):
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content="x"))
                    if run_manager is not None:
                        run_manager.on_llm_new_token("x", chunk=chunk)
                    yield chunk

        async def _astream(
            self, messages: t.Any, stop: t.Any = None, run_manager: t.Any = None, **kw: t.Any
        ) -> t.AsyncIterator[t.Any]:
            for size in segments(self.n, self.probe):
                for _ in range(size):
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content="x"))
                    if run_manager is not None:
                        await run_manager.on_llm_new_token("x", chunk=chunk)
                    yield chunk

    class Counter(BaseCallbackHandler):
        """A callback handler counting tokens."""

        def __init__(self) -> None:
            self.tokens = 0

        def on_llm_new_token(self, token: str, **kw: t.Any) -> None:
            self.tokens += 1

    def stream(n: int, probe: Probe) -> None:
        for _ in Streamer(n=n, probe=probe).stream("hi"):
            pass

    def callbacks(n: int, probe: Probe) -> None:
        for _ in Streamer(n=n, probe=probe).stream("hi", config={"callbacks": [Counter()]}):
            pass

    def events(n: int, probe: Probe) -> None:
        async def main() -> None:
            async for _ in Streamer(n=n, probe=probe).astream_events("hi", version="v2"):
                pass

        asyncio.run(main())

    from streamtap import ModuleBase
    from streamtap.bridges.langchain import StreamtapCallbackHandler

    bridge = StreamtapCallbackHandler()

    def bridged(n: int, probe: Probe) -> None:
        for _ in Streamer(n=n, probe=probe).stream("hi", config={"callbacks": [bridge]}):
            pass

    class Bridged(ModuleBase):
        """A streamtap module streaming a LangChain model through the bridge."""

        def forward(self, n: int, probe: Probe) -> None:
            bridged(n, probe)

    def bridged_stream(n: int, probe: Probe) -> None:
        for _ in Bridged().buffered(1 << 20).stream(n, probe):
            pass

    return [
        Scenario("per chunk", LC_STREAM, stream, library="langchain", n_scale=0.05),
        Scenario("per chunk", "LangChain .stream() + callback handler", callbacks, library="langchain", n_scale=0.05),
        Scenario("per chunk", LC_BRIDGE, bridged, n_scale=0.05),
        Scenario("per chunk", LC_BRIDGE_STREAM, bridged_stream, n_scale=0.05),
        Scenario("per chunk", "LangChain astream_events(version='v2')", events, library="langchain", n_scale=0.02),
    ]


def _llama_index(skip: Skip) -> list[Scenario]:
    if importlib.util.find_spec("llama_index") is None or importlib.util.find_spec("llama_index.core") is None:
        skip("llama-index-core not installed: LlamaIndex scenario skipped (pip install -r bench/requirements.txt)")
        return []
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent

    class DeltaEvent(BaseEvent):
        """One streamed delta."""

        delta: str = ""

        @classmethod
        def class_name(cls) -> str:
            return "DeltaEvent"

    class Handler(BaseEventHandler):
        """Counts events."""

        count: int = 0

        @classmethod
        def class_name(cls) -> str:
            return "BenchHandler"

        def handle(self, event: BaseEvent, **kw: t.Any) -> None:
            self.count += 1

    dispatcher = get_dispatcher("streamtap.bench")
    handler = Handler()
    dispatcher.add_event_handler(handler)

    def dispatch(n: int, probe: Probe) -> None:
        event = dispatcher.event
        for size in segments(n, probe):
            for _ in range(size):
                event(DeltaEvent(delta="x"))

    return [
        Scenario("per chunk", "LlamaIndex dispatcher event per chunk", dispatch, library="llama_index", n_scale=0.1)
    ]


def all_scenarios(skip: Skip) -> list[Scenario]:
    """Every scenario whose library is installed; ``skip`` is told about the others."""
    return [
        *_streamtap(),
        *_streamtap_per_run(),
        *_tracing(skip),
        *_blinker(),
        *_structlog(),
        *_langchain(skip),
        *_llama_index(skip),
    ]
