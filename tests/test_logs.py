"""structlog integration: ids on lines written inside modules, one line per step, one-call configuration."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import typing as t

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import LogCapture

import streamtap
from streamtap import ModuleBase, logs
from streamtap.testing import capture_events
from streamtap.tracing import TracingSubscriber

log = structlog.get_logger("test")


@pytest.fixture(autouse=True)
def _fresh_structlog() -> t.Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def captured() -> LogCapture:
    cap = LogCapture()
    structlog.configure(processors=[logs.add_run_ids, cap])
    return cap


@pytest.fixture
def tracing(traced: tuple[TracingSubscriber, InMemorySpanExporter]) -> tuple[TracingSubscriber, InMemorySpanExporter]:
    return traced


def _span_ids(exporter: InMemorySpanExporter) -> dict[str, tuple[str, str]]:
    """run id -> (trace id, span id), hex."""
    return {
        s.attributes["streamtap.run.id"]: (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
        for s in exporter.get_finished_spans()
    }


class Worker(ModuleBase):
    """Logs one line from inside its forward."""

    def forward(self, label: str) -> str:
        log.info("working", label=label)
        return label


class TestAddRunIds:
    def test_lines_inside_modules_in_threads_and_tasks_carry_their_runs_ids(
        self, captured: LogCapture, tracing: tuple[TracingSubscriber, InMemorySpanExporter]
    ) -> None:
        """Every line gets the run, root, trace and span ids of the module that wrote it, in any thread or task."""
        _, exporter = tracing

        class Parent(ModuleBase):
            def forward(self, x: str) -> str:
                log.info("parent line")
                with streamtap.Executor(2) as pool:
                    list(pool.map(Worker(), ["pool-1", "pool-2"]))
                t = threading.Thread(target=streamtap.wrap(lambda: log.info("plain thread line")))
                t.start()
                t.join()
                asyncio.run(self.in_tasks())
                return x

            async def in_tasks(self) -> None:
                async def task_line() -> None:
                    log.info("task line")

                await asyncio.gather(Worker().acall("task-1"), asyncio.create_task(task_line()))
                await asyncio.to_thread(log.info, "to_thread line")

        with capture_events(kinds=["start"]) as starts:
            Parent()("x")
        runs = {e.run.run_id: e.run for e in starts}
        ids = _span_ids(exporter)
        parent = next(r for r in runs.values() if r.name == "Parent")
        lines = captured.entries
        assert len(lines) == 7
        for line in lines:
            rid = line["run_id"]
            assert line["root_id"] == parent.run_id
            assert (line["trace_id"], line["span_id"]) == ids[rid], line
            if line["event"] == "working":
                assert runs[rid].name == "Worker"
            else:
                assert rid == parent.run_id, line
        labels = sorted(line.get("label", "") for line in lines if line["event"] == "working")
        assert labels == ["pool-1", "pool-2", "task-1"]
        assert len({line["trace_id"] for line in lines}) == 1

    def test_ids_without_tracing(self, captured: LogCapture) -> None:
        """Without a tracer, lines still carry run_id and root_id (and no trace ids)."""
        Worker()("a")
        (line,) = captured.entries
        assert set(line) >= {"run_id", "root_id"}
        assert "trace_id" not in line

    def test_outside_modules_lines_are_untouched(self, captured: LogCapture) -> None:
        """Outside any run and span nothing is added."""
        log.info("plain")
        assert captured.entries == [{"event": "plain", "log_level": "info"}]

    def test_explicit_values_win(self, captured: LogCapture) -> None:
        """An id passed explicitly by the caller is kept."""

        class Explicit(ModuleBase):
            def forward(self, x: str) -> str:
                log.info("x", run_id="mine")
                return x

        Explicit()("x")
        assert captured.entries[0]["run_id"] == "mine"


class TestLogSubscriber:
    def test_one_line_per_start_tool_and_end_not_per_chunk(self, captured: LogCapture) -> None:
        """Start, tool and end lines; chunks are not logged unless asked."""

        class Agent(ModuleBase):
            kind = "agent"

            def forward(self, x: str) -> t.Iterator[str]:
                ctx = streamtap.current()
                assert ctx is not None
                ctx.tool("c1", "search", "requested", arguments={"q": x})
                ctx.tool("c1", "search", "error", error=ValueError("no index"))
                for _ in range(50):
                    yield "."

        with logs.LogSubscriber() as sub:
            Agent()("find")
        events = [(e["event"], e["log_level"]) for e in captured.entries]
        assert events == [
            ("run.start", "info"),
            ("tool.requested", "info"),
            ("tool.error", "warning"),
            ("run.end", "info"),
        ]
        end = captured.entries[-1]
        assert end["status"] == "ok" and end["run_kind"] == "agent" and end["run_name"] == "Agent"
        assert end["duration_ms"] >= 0 and end["ttfc_ms"] >= 0
        assert captured.entries[2]["error_type"] == "ValueError"
        assert all("arguments" not in e and "output" not in e for e in captured.entries)
        assert sub.errors == 0

    def test_chunks_on_request(self, captured: LogCapture) -> None:
        """chunks=True writes one debug line per chunk."""

        class Two(ModuleBase):
            def forward(self, x: str) -> t.Iterator[str]:
                yield "a"
                yield "b"

        with logs.LogSubscriber(chunks=True, capture_content=True):
            Two()("x")
        chunks = [e for e in captured.entries if e["event"] == "run.chunk"]
        assert [(c["delta"], c["log_level"], c["channel"]) for c in chunks] == [
            ("a", "debug", "text"),
            ("b", "debug", "text"),
        ]

    def test_failure_levels_content_and_redaction(self, captured: LogCapture) -> None:
        """A failed run's end line is an error with a redacted message; content only on opt-in, redacted too."""
        secret = "sk-live-0123456789abcdefghij"

        class Fails(ModuleBase):
            def forward(self, x: str) -> str:
                raise PermissionError(f"bad key {secret}")

        with logs.LogSubscriber(capture_content=True), pytest.raises(PermissionError):
            Fails()(f"key={secret}")
        start, end = captured.entries
        assert end["log_level"] == "error" and end["status"] == "error"
        assert end["error"] == "bad key [REDACTED]"
        assert start["inputs"] == "key=[REDACTED]"
        assert secret not in json.dumps(captured.entries)

    def test_lines_carry_the_runs_own_span(
        self, captured: LogCapture, tracing: tuple[TracingSubscriber, InMemorySpanExporter]
    ) -> None:
        """With the tracing subscriber, each step line has its own run's trace and span ids."""
        sub, exporter = tracing

        class Outer(ModuleBase):
            def forward(self, x: str) -> str:
                return Worker()(x)

        with logs.LogSubscriber(tracing=sub):
            Outer()("x")
        ids = _span_ids(exporter)
        steps = [e for e in captured.entries if e["event"].startswith("run.")]
        assert len(steps) == 4
        for line in steps:
            assert (line["trace_id"], line["span_id"]) == ids[line["run_id"]], line

    def test_raising_logger_never_breaks_the_run(self) -> None:
        """A logger that raises: the run completes, the failures are counted."""

        class Broken:
            def info(self, *a: t.Any, **k: t.Any) -> None:
                raise OSError("disk full")

            error = warning = debug = info

        with logs.LogSubscriber(Broken()) as sub:
            structlog.configure(processors=[structlog.testing.LogCapture()])
            assert Worker()("a") == "a"
        assert sub.errors == 2


class TestConfigure:
    def test_json_lines_with_ids(self) -> None:
        """configure(json=True) writes one JSON object per line with the run ids."""
        out = io.StringIO()
        logs.configure(json=True, file=out)
        with logs.LogSubscriber():
            Worker()("a")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["run.start", "working", "run.end"]
        assert len({line["run_id"] for line in lines}) == 1
        assert all("timestamp" in line and "level" in line for line in lines)

    def test_pretty_console(self) -> None:
        """configure(json=False) uses the console renderer."""
        out = io.StringIO()
        logs.configure(json=False, file=out)
        Worker()("a")
        text = out.getvalue()
        assert "working" in text and "run_id=" in text

    def test_level_filters(self) -> None:
        """Lines below the chosen level are dropped."""
        out = io.StringIO()
        logs.configure(json=True, level="warning", file=out)
        Worker()("a")
        assert out.getvalue() == ""

    def test_existing_configuration_is_respected(self) -> None:
        """An existing configuration keeps its processors and renderer; add_run_ids is inserted before the renderer."""
        cap = LogCapture()

        def mine(logger: t.Any, name: str, ed: t.Any) -> t.Any:
            ed["mine"] = True
            return ed

        structlog.configure(processors=[mine, cap])
        logs.configure(json=True)
        logs.configure(json=True)  # twice is harmless
        assert structlog.get_config()["processors"] == [mine, logs.add_run_ids, cap]
        Worker()("a")
        (line,) = cap.entries
        assert line["mine"] is True and "run_id" in line

    def test_unknown_level(self) -> None:
        """A bad level is refused with the valid ones listed."""
        with pytest.raises(streamtap.UsageError, match="'loud'.*debug"):
            logs.configure(level="loud")
