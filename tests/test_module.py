"""ModuleBase: the four forward shapes, one start and one end on every path, timings, errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamtap
from streamtap import Delta, Executor, ModuleBase, RunCancelled, UsageError, current
from streamtap.events import Usage
from streamtap.testing import capture_events, check_invariants


class Ret(ModuleBase):
    def forward(self, x):
        return x * 2


class ARet(ModuleBase):
    async def forward(self, x):
        await asyncio.sleep(0)
        return x * 2


class Gen(ModuleBase):
    def forward(self, text):
        for w in text.split():
            yield w + " "


class AGen(ModuleBase):
    async def forward(self, text):
        for w in text.split():
            await asyncio.sleep(0)
            yield w + " "


class Boom(Exception):
    pass


class TestShapes:
    @pytest.mark.parametrize(
        "module, arg, out", [(Ret(), 2, 4), (ARet(), 2, 4), (Gen(), "a b", "a b "), (AGen(), "a b", "a b ")]
    )
    def test_sync_call(self, module, arg, out):
        """module(x) returns the output for all four shapes; chunks reach subscribers."""
        with capture_events() as events:
            assert module(arg) == out
        check_invariants(events)
        assert events.text() == ("" if isinstance(out, int) else out)

    @pytest.mark.parametrize(
        "module, arg, out", [(Ret(), 2, 4), (ARet(), 2, 4), (Gen(), "a b", "a b "), (AGen(), "a b", "a b ")]
    )
    async def test_acall(self, module, arg, out):
        """await module.acall(x) returns the output for all four shapes."""
        with capture_events() as events:
            assert await module.acall(arg) == out
        check_invariants(events)

    def test_generator_return_value_wins(self):
        """A generator's return value is the output; its chunks still stream."""

        class R(ModuleBase):
            def forward(self):
                yield "partial"
                return {"final": True}

        with capture_events() as events:
            assert R()() == {"final": True}
        assert events.text() == "partial"
        assert events.of("end")[0].output == {"final": True}

    def test_channels_and_data(self):
        """Delta picks a channel; other objects go on 'data'; only text makes the joined output."""

        class M(ModuleBase):
            def forward(self):
                yield Delta("hmm", "reasoning")
                yield "Hello"
                yield Delta('{"a"', "tool_args", call_id="c1")
                yield {"partial": 1}
                yield " world"

        with capture_events() as events:
            assert M()() == "Hello world"
        chunks = [(e.channel, e.delta, e.call_id) for e in events.of("chunk")]
        assert chunks == [
            ("reasoning", "hmm", None),
            ("text", "Hello", None),
            ("tool_args", '{"a"', "c1"),
            ("data", {"partial": 1}, None),
            ("text", " world", None),
        ]

    def test_data_only_generator_returns_last_item(self):
        """A generator of partial objects returns the last (most complete) one."""

        class Partial(ModuleBase):
            def forward(self):
                yield {}
                yield {"a": 1}

        assert Partial()() == {"a": 1}

    def test_empty_chunks_are_legal(self):
        """Empty deltas stream as chunks and break nothing."""

        class E(ModuleBase):
            def forward(self):
                yield ""
                yield "x"
                yield ""

        with capture_events() as events:
            assert E()() == "x"
        assert [e.delta for e in events.of("chunk")] == ["", "x", ""]

    def test_missing_forward(self):
        """A subclass without forward() gets an error that says what to do."""

        class Nothing(ModuleBase):
            pass

        with pytest.raises(NotImplementedError, match="must implement forward"):
            Nothing()()

    async def test_async_forward_called_sync_inside_a_loop(self):
        """Calling an async module synchronously inside a running loop is a clear error, with one start and end."""
        with pytest.raises(UsageError, match="await module.acall"):
            ARet()(1)

    def test_sync_forward_returning_awaitable(self):
        """A sync forward that returns a coroutine is a clear error; the run ends 'error'."""

        class Wrong(ModuleBase):
            def forward(self):
                return asyncio.sleep(0)

        with capture_events() as events, pytest.raises(UsageError, match="async def forward"):
            Wrong()()
        assert events.of("end")[0].status == "error"


class TestEndings:
    def test_exception_reaches_caller_unchanged(self):
        """The module's own exception object is re-raised; the run ends 'error' with its description."""
        err = Boom("bad input 42")

        class Fails(ModuleBase):
            def forward(self):
                yield "x"
                raise err

        with capture_events() as events, pytest.raises(Boom) as info:
            Fails()()
        assert info.value is err
        end = events.of("end")[0]
        assert end.status == "error" and end.error.type.endswith("Boom") and end.error.message == "bad input 42"
        check_invariants(events)

    async def test_asyncio_cancellation(self):
        """Cancelling the awaiting task ends the run 'cancelled' and re-raises CancelledError."""
        started = asyncio.Event()

        class Slow(ModuleBase):
            async def forward(self):
                started.set()
                await asyncio.Event().wait()

        with capture_events() as events:
            task = asyncio.create_task(Slow().acall())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert events.of("end")[0].status == "cancelled"
        check_invariants(events)

    def test_consumer_stops_early(self):
        """Breaking out of a stream cancels the run, which still ends exactly once."""
        produced = []

        class Endless(ModuleBase):
            def forward(self):
                i = 0
                while True:
                    produced.append(i)
                    yield str(i)
                    i += 1

        with capture_events() as events:
            stream = Endless().stream()
            for ev in stream:
                if ev.kind == "chunk" and ev.delta == "3":
                    break
            stream.close()
            with pytest.raises(RunCancelled):
                stream.handle.result(5)
        end = events.of("end")[0]
        assert end.status == "cancelled" and end.error.type.endswith("RunCancelled")
        check_invariants(events)

    def test_abandoned_stream_is_collected(self):
        """Dropping an unfinished stream (and its handle) cancels its run when it is collected."""
        gate = threading.Event()
        ended = threading.Event()

        class Endless(ModuleBase):
            def forward(self):
                while True:
                    gate.wait(5)
                    yield "x"

        with capture_events() as events, streamtap.subscribe(lambda e: ended.set(), kinds=["end"]):
            stream = Endless().stream()
            next(stream)
            del stream  # the only reference: the stream and its handle are collected now
            gc.collect()
            gate.set()
            assert ended.wait(5)
        assert events.of("end")[0].status == "cancelled"
        check_invariants(events)

    def test_interrupted_status_from_exception(self):
        """An exception class can declare the status (the interrupts feature builds on this)."""

        class Pause(Exception):
            __streamtap_status__ = "interrupted"

            def __init__(self) -> None:
                super().__init__("waiting for approval")
                self.streamtap_output = {"id": "p1"}

        class Asks(ModuleBase):
            def forward(self):
                raise Pause()

        with capture_events() as events, pytest.raises(Pause):
            Asks()()
        end = events.of("end")[0]
        assert end.status == "interrupted" and end.output == {"id": "p1"} and end.error is None


class TestRecording:
    def test_timings_annotations_usage(self):
        """End carries duration, time to first chunk, annotations and summed usage."""

        class LLMish(ModuleBase):
            kind = "llm"

            def forward(self):
                ctx = current()
                ctx.annotate(response_model="m1", finish_reasons=["stop"])
                ctx.add_usage(Usage(3, 1))
                yield "a"
                ctx.add_usage(Usage(0, 1))

        with capture_events() as events:
            LLMish()()
        end = events.of("end")[0]
        assert end.run.kind == "llm"
        assert end.attributes == {"response_model": "m1", "finish_reasons": ["stop"]}
        assert end.usage == Usage(3, 2)
        assert 0 <= end.timings.time_to_first_chunk <= end.timings.duration
        assert events.of("start")[0].started_at == end.timings.started_at

    def test_no_chunk_no_ttfc(self):
        """A run that streamed nothing has no time to first chunk."""
        with capture_events() as events:
            Ret()(1)
        assert events.of("end")[0].timings.time_to_first_chunk is None

    def test_names_tags_metadata_inherit(self):
        """Names default to the class; tags are inherited by child runs; inputs are recorded."""

        class Child(ModuleBase):
            tags = ("child",)

            def forward(self, a, b=1):
                return a + b

        class Parent(ModuleBase):
            name = "parent-flow"
            kind = "flow"
            tags = ("p",)
            metadata = {"v": 2}  # noqa: RUF012 - a class attribute of a test double

            def forward(self):
                return Child()(1, b=2)

        with capture_events() as events:
            assert Parent()() == 3
        runs = {r.name: r for r in events.runs().values()}
        assert runs["parent-flow"].metadata == {"v": 2} and runs["parent-flow"].kind == "flow"
        assert runs["Child"].tags == ("p", "child")
        child_start = next(e for e in events.of("start") if e.run.name == "Child")
        assert child_start.inputs == {"args": [1], "b": 2}

    async def test_acall_offloads_blocking_sync_forward(self):
        """A sync forward runs in the SDK's thread pool under acall(), inline when blocking=False."""
        loop_thread = threading.get_ident()

        class Where(ModuleBase):
            def forward(self):
                return threading.get_ident()

        class Inline(Where):
            blocking = False

        assert await Where().acall() != loop_thread
        assert await Inline().acall() == loop_thread

    @pytest.mark.parametrize("returns", [False, True], ids=["plain-generator", "generator-with-return"])
    async def test_cancelling_acall_of_a_blocking_generator_nobody_listens_to_stops_it_within_a_few_chunks(
        self, returns
    ):
        """No subscriber, no stream: cancelling the awaiting task still reaches the generator in its worker thread."""
        state = {"produced": 0}
        third, closed, never = threading.Event(), threading.Event(), threading.Event()

        class Blocking(ModuleBase):
            def forward(self, n):
                try:
                    for i in range(n):
                        never.wait(0.005)  # blocking I/O between chunks
                        state["produced"] = i + 1
                        if i == 2:
                            third.set()
                        yield f"{i},"
                    if returns:
                        return "all of it"
                finally:
                    closed.set()

        task = asyncio.create_task(Blocking().acall(2000))  # 10 s if nothing stops it
        assert await asyncio.get_running_loop().run_in_executor(None, third.wait, 10)
        at_cancel = state["produced"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert closed.is_set()  # the generator was closed before the await returned
        assert state["produced"] - at_cancel <= 3, f"{state['produced'] - at_cancel} chunks after the cancel"


class TestNestingInsideTools:
    def test_module_called_inside_a_tool_streams_into_the_outer_stream(self):
        """LangChain's 'callbacks lost inside tools': nothing is passed by hand, the inner chunks still arrive."""

        class Summarise(ModuleBase):
            kind = "llm"

            def forward(self, text):
                for w in text.split():
                    yield w.upper() + " "

        class SearchTool(ModuleBase):
            kind = "tool"

            def forward(self, q):
                return Summarise()(f"results for {q}")

        class Agent(ModuleBase):
            kind = "agent"

            def forward(self, q):
                with Executor(2) as pool:  # the tool runs in another thread
                    return pool.submit(SearchTool(), q).result()

        events = list(Agent().stream("sse"))
        inner = [e for e in events if e.kind == "chunk"]
        assert "".join(e.delta for e in inner) == "RESULTS FOR SSE "
        assert {e.run.name for e in inner} == {"Summarise"}
        by_id = {e.run.run_id: e.run for e in events}
        summarise = next(r for r in by_id.values() if r.name == "Summarise")
        assert by_id[summarise.parent_id].name == "SearchTool"
        check_invariants(events)


# -- property test: random module trees ----------------------------------------------------

SHAPES = ("ret", "aret", "gen", "agen")


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> dict[str, t.Any]:
    n_children = draw(st.integers(0, 3 if depth < 2 else 0))
    return {
        "shape": draw(st.sampled_from(SHAPES)),
        "chunks": draw(st.integers(0, 4)),
        "fail": draw(st.booleans()),
        "children": [
            (draw(trees(depth + 1)), draw(st.sampled_from(("direct", "thread", "task")))) for _ in range(n_children)
        ],
    }


def build(spec: dict[str, t.Any], label: str, labels: list[str]) -> ModuleBase:
    """A module tree following `spec`; each module's input is its unique label."""
    labels.append(label)
    kids = [
        (build(child, f"{label}.{i}", labels), via, f"{label}.{i}") for i, (child, via) in enumerate(spec["children"])
    ]
    shape, n, fail = spec["shape"], spec["chunks"], spec["fail"]

    def run_kids_sync() -> None:
        for mod, via, lab in kids:
            try:
                if via == "direct":
                    mod(lab)
                else:
                    with Executor(1) as ex:
                        ex.submit(mod, lab).result()
            except Boom:
                pass

    async def run_kids_async() -> None:
        for mod, via, lab in kids:
            try:
                if via == "task":
                    await asyncio.gather(mod.acall(lab))
                else:
                    await mod.acall(lab)
            except Boom:
                pass

    if shape == "ret":

        class M(ModuleBase):
            def forward(self, lab):
                run_kids_sync()
                current().raise_if_cancelled()
                if fail:
                    raise Boom(lab)
                return lab
    elif shape == "aret":

        class M(ModuleBase):  # type: ignore[no-redef]
            async def forward(self, lab):
                await run_kids_async()
                if fail:
                    raise Boom(lab)
                return lab
    elif shape == "gen":

        class M(ModuleBase):  # type: ignore[no-redef]
            def forward(self, lab):
                run_kids_sync()
                for i in range(n):
                    yield f"{lab}:{i} "
                if fail:
                    raise Boom(lab)
    else:

        class M(ModuleBase):  # type: ignore[no-redef]
            async def forward(self, lab):
                await run_kids_async()
                for i in range(n):
                    await asyncio.sleep(0)
                    yield f"{lab}:{i} "
                if fail:
                    raise Boom(lab)

    M.name = "M-" + shape
    return M()


def expected_parents(spec: dict[str, t.Any], label: str, parent: str | None, out: dict[str, str | None]) -> None:
    out[label] = parent
    for i, (child, _) in enumerate(spec["children"]):
        expected_parents(child, f"{label}.{i}", label, out)


def parents_seen(events: list[t.Any]) -> dict[str, str | None]:
    label_of = {e.run.run_id: e.inputs for e in events if e.kind == "start"}
    return {
        label_of[e.run.run_id]: (label_of[e.run.parent_id] if e.run.parent_id else None)
        for e in events
        if e.kind == "start"
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=trees(), mode=st.sampled_from(("call", "stream", "early", "cancel")), stop_after=st.integers(1, 12))
def test_random_trees_keep_the_invariants(spec, mode, stop_after):
    """Random trees of all four shapes, threads, tasks, failures, early exits and cancels:
    one end per start, gap-free seq, parent links equal to the real call tree."""
    labels: list[str] = []
    root = build(spec, "r", labels)
    with capture_events() as events:
        if mode == "call":
            try:
                root("r")
            except Boom:
                pass
        else:
            stream = root.stream("r")
            seen = []
            for ev in stream:
                seen.append(ev)
                if mode != "stream" and len(seen) >= stop_after:
                    break
            if mode == "cancel":
                stream.handle.cancel()
            stream.close()
            try:
                stream.handle.result(20)
            except (Boom, RunCancelled):
                pass
            # the stream saw a prefix of what the bus saw, in the same order
            assert [e.seq for e in seen] == list(range(len(seen)))
    check_invariants(events)
    expected: dict[str, str | None] = {}
    expected_parents(spec, "r", None, expected)
    seen_parents = parents_seen(events)
    assert all(expected[label] == parent for label, parent in seen_parents.items())
    if mode in ("call", "stream"):
        assert seen_parents == expected


def test_concurrent_roots_never_mix():
    """Several random-ish roots streaming at once: each stream holds exactly its own root's events."""
    spec = {
        "shape": "gen",
        "chunks": 50,
        "fail": False,
        "children": [
            ({"shape": "agen", "chunks": 20, "fail": False, "children": []}, "thread"),
            ({"shape": "ret", "chunks": 0, "fail": False, "children": []}, "direct"),
        ],
    }
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: list(build(spec, f"root{i}", []).stream(f"root{i}")), range(4)))
    roots = set()
    for i, events in enumerate(results):
        assert len({e.run.root_id for e in events}) == 1
        roots.add(events[0].run.root_id)
        assert all(e.inputs.startswith(f"root{i}") for e in events if e.kind == "start")
        check_invariants(events)
    assert len(roots) == 4


def test_a_failures_detail_mapping_is_kept_on_the_end_for_spans_and_logs() -> None:
    """An exception with a ``detail`` mapping (LLMError's) puts it on the End under ``error.detail.*``."""
    from streamtap import ModuleBase
    from streamtap.events import ERROR_DETAIL_PREFIX

    class Upstream(Exception):
        detail = {"status_code": 401, "base_url": "http://10.20.30.40/v1"}  # noqa: RUF012 - a class attribute of a test double

    class Failing(ModuleBase):
        def forward(self, x: str) -> str:
            raise Upstream("the server said no")

    events = list(Failing().stream("x"))  # a stream ends with the failed End; it does not raise
    end = events[-1]
    assert end.kind == "end" and end.status == "error"
    assert end.attributes[f"{ERROR_DETAIL_PREFIX}status_code"] == 401
    assert end.attributes[f"{ERROR_DETAIL_PREFIX}base_url"] == "http://10.20.30.40/v1"


def test_buffered_run_id_names_the_root_run_and_bad_ids_are_refused() -> None:
    """A run id handed out before the run starts (a worker's request) becomes the root run's id."""

    class Echo(ModuleBase):
        def forward(self, x: str) -> str:
            return x

    handle = Echo().buffered(16, run_id="req-42").start("hi")
    events = list(handle.events())
    assert handle.run_id == "req-42"
    assert {e.run.run_id for e in events} == {"req-42"} and {e.run.root_id for e in events} == {"req-42"}
    with pytest.raises(UsageError, match="run_id"):
        Echo().buffered(16, run_id="")
