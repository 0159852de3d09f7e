"""OpenAI Agents SDK runs as streamtap runs, live: a tracing processor and a stream adapter.

Needs the ``openai-agents`` extra (``pip install 'streamtap[openai-agents]'``).

* :class:`StreamtapTracingProcessor` (registered by :func:`instrument`) turns
  the SDK's traces and spans into streamtap runs, nested under the streamtap
  run current where the agent was started: the trace is a ``flow`` run, agent
  spans ``agent`` runs, generation and response spans ``llm`` runs (named
  ``chat {model}`` in the trace, with their usage), function spans ``tool``
  runs, handoffs, guardrails and the SDK's task/turn spans ``module`` runs.
* :func:`stream_events` wraps ``Runner.run_streamed(...).stream_events()``:
  it yields the SDK's events unchanged and mirrors them on the current
  streamtap run as they come: text deltas as ``text`` chunks, reasoning
  summary deltas as ``reasoning``, function-call argument deltas as
  ``tool_args`` (with the call id), tool calls and their outputs as ``Tool``
  events, handoffs as a ``handoff`` custom event.
* :class:`AgentModule` puts both together: a :class:`~streamtap.ModuleBase`
  that runs an agent streamed, so it works wherever a module does
  (``module.stream()``, the web app, AG-UI, Gradio). Cancelling its run
  cancels the agent's run: the model's HTTP stream closes.

The processor only sees what the SDK traces: with tracing disabled
(``OPENAI_AGENTS_DISABLE_TRACING``, ``RunConfig(tracing_disabled=True)``) only
the stream adapter's events remain.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import typing as t

from ..context import current
from ..events import RunKind, Usage
from ..module import ModuleBase, OpenRun
from ._common import ForeignRun, jsonable

__all__ = ["AgentModule", "AgentsSpanError", "StreamtapTracingProcessor", "instrument", "stream_events"]

log = logging.getLogger("streamtap.bridges.openai_agents")

try:
    from agents.tracing import TracingProcessor
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError("streamtap.bridges.openai_agents", "openai-agents") from exc


class AgentsSpanError(Exception):
    """A span the Agents SDK recorded as failed (its ``span.error`` message)."""


class _Open(t.NamedTuple):
    run: OpenRun
    activation: contextlib.AbstractContextManager[t.Any] | None


class StreamtapTracingProcessor(TracingProcessor):
    """An Agents SDK tracing processor reporting traces and spans as streamtap runs (see the module docs).

    Args:
        activate: make each function (tool) span's run the current streamtap
            run while the tool executes, so streamtap modules called in a tool nest under it.
    """

    def __init__(self, *, activate: bool = True) -> None:
        self.activate = activate
        self._open: dict[str, _Open] = {}  # trace id / span id -> its run
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _guard(self, what: str, fn: t.Callable[[], t.Any]) -> None:
        try:
            fn()
        except Exception:  # tracing must never break the agent
            if what not in self._warned:
                self._warned.add(what)
                log.exception("streamtap's OpenAI Agents bridge failed in %s (reported once); the agent goes on", what)

    def _parent(self, key: str | None) -> t.Any:
        entry = self._open.get(key) if key else None
        return entry.run.context if entry is not None else "current"

    def on_trace_start(self, trace: t.Any) -> None:
        """A trace (one workflow) starts: a ``flow`` run."""

        def start() -> None:
            module = ForeignRun(str(getattr(trace, "name", "") or "Agent workflow"), "flow", "openai-agents")
            run = module.begin({"trace_id": trace.trace_id}, parent=self._parent(None))
            with self._lock:
                self._open[trace.trace_id] = _Open(run, None)

        self._guard("on_trace_start", start)

    def on_trace_end(self, trace: t.Any) -> None:
        """The trace ended."""
        self._guard("on_trace_end", lambda: self._end(trace.trace_id, None, None))

    def on_span_start(self, span: t.Any) -> None:
        """A span starts: a run of the kind its data says."""

        def start() -> None:
            data = span.span_data
            name, kind, model = _describe(data)
            module = ForeignRun(name, kind, "openai-agents", model=model)
            parent = self._parent(span.parent_id or span.trace_id)
            run = module.begin(_inputs(data), parent=parent)
            activation = None
            if self.activate and kind == "tool":
                activation = run.activate()
                activation.__enter__()
            with self._lock:
                self._open[span.span_id] = _Open(run, activation)

        self._guard("on_span_start", start)

    def on_span_end(self, span: t.Any) -> None:
        """The span ended: its output, usage and error."""

        def end() -> None:
            data = span.span_data
            entry = self._open.get(span.span_id)
            if entry is None:
                return
            usage = getattr(data, "usage", None)
            if isinstance(usage, dict) and ("input_tokens" in usage or "output_tokens" in usage):
                details = usage.get("output_tokens_details") or {}
                cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
                entry.run.context.add_usage(
                    Usage(
                        int(usage.get("input_tokens") or 0),
                        int(usage.get("output_tokens") or 0),
                        details.get("reasoning_tokens"),
                        cached,
                    )
                )
            error = span.error
            exc = AgentsSpanError(str(error.get("message") or "the span failed")) if isinstance(error, dict) else None
            self._end(span.span_id, _output(data), exc)

        self._guard("on_span_end", end)

    def _end(self, key: str, output: t.Any, error: BaseException | None) -> None:
        with self._lock:
            entry = self._open.pop(key, None)
        if entry is None:
            return
        if entry.activation is not None:
            with contextlib.suppress(ValueError):  # ended in another context than it started in
                entry.activation.__exit__(None, None, None)
        entry.run.end(output, error=error)

    def shutdown(self) -> None:
        """End every run still open (the process is stopping)."""
        with self._lock:
            keys = list(self._open)
        for key in keys:
            self._end(key, None, None)

    def force_flush(self) -> None:
        """Nothing is buffered: events go out as they happen."""


def _describe(data: t.Any) -> tuple[str, RunKind, str | None]:
    typ = getattr(data, "type", "")
    if typ == "agent":
        return str(data.name), "agent", None
    if typ in ("generation", "response"):
        model = getattr(data, "model", None)
        if model is None and typ == "response":
            model = getattr(getattr(data, "response", None), "model", None)
        return str(model or typ), "llm", str(model) if model else None
    if typ == "function":
        return str(data.name), "tool", None
    if typ == "handoff":
        return f"handoff {data.from_agent} -> {data.to_agent}", "module", None
    if typ == "guardrail":
        return f"guardrail {data.name}", "module", None
    if typ == "custom":
        return str(getattr(data, "name", "custom")), "module", None
    return str(typ or "span"), "module", None


def _inputs(data: t.Any) -> t.Any:
    typ = getattr(data, "type", "")
    if typ == "agent":
        return {"tools": jsonable(getattr(data, "tools", None)), "handoffs": jsonable(getattr(data, "handoffs", None))}
    if typ == "handoff":
        return {"from_agent": data.from_agent, "to_agent": data.to_agent}
    return None


def _output(data: t.Any) -> t.Any:
    typ = getattr(data, "type", "")
    if typ == "function":
        return jsonable(data.output)
    if typ == "generation":
        return jsonable(data.output)
    if typ == "agent":
        return None
    if typ == "custom":
        return jsonable(getattr(data, "data", None))
    return None


# -- the stream adapter ------------------------------------------------------------


async def stream_events(result: t.Any) -> t.AsyncGenerator[t.Any, None]:
    """Yield ``result.stream_events()`` unchanged, mirroring each on the current streamtap run.

    Args:
        result: what ``Runner.run_streamed(agent, input)`` returned.

    Call it inside a streamtap run (a module's ``forward``); outside one the
    events are only yielded. Leaving the loop early cancels the agent's run
    (``result.cancel()``).
    """
    ctx = current()
    calls: dict[t.Any, str] = {}  # output index -> call id being streamed; "name:<call id>" -> tool name
    finished = False
    try:
        async for event in result.stream_events():
            if ctx is not None:
                _mirror(ctx, event, calls)
            yield event
        finished = True
    finally:
        if not finished:
            result.cancel()


def _mirror(ctx: t.Any, event: t.Any, calls: dict[t.Any, str]) -> None:
    typ = getattr(event, "type", "")
    if typ == "raw_response_event":
        data = event.data
        kind = getattr(data, "type", "")
        if kind == "response.output_text.delta":
            ctx.chunk(data.delta)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            ctx.chunk(data.delta, "reasoning")
        elif kind == "response.output_item.added" and getattr(data.item, "type", "") == "function_call":
            calls[data.output_index] = data.item.call_id
        elif kind == "response.function_call_arguments.delta":
            call_id = calls.get(data.output_index) or getattr(data, "item_id", "") or "call"
            ctx.chunk(data.delta, "tool_args", call_id)
    elif typ == "run_item_stream_event":
        item, name = event.item, event.name
        raw = getattr(item, "raw_item", None)
        if name == "tool_called":
            call_id, tool = _get(raw, "call_id"), _get(raw, "name")
            args = _get(raw, "arguments")
            calls["name:" + str(call_id)] = str(tool or "tool")
            ctx.tool(str(call_id or ""), str(tool or "tool"), "requested", arguments=_parse(args))
        elif name == "tool_output":
            call_id = _get(raw, "call_id")
            tool = calls.pop("name:" + str(call_id), None) or "tool"
            ctx.tool(str(call_id or ""), tool, "result", result=_parse(getattr(item, "output", None)))
        elif name in {"handoff_occured", "handoff_occurred"}:
            ctx.emit(
                "handoff",
                {
                    "from": _agent_name(getattr(item, "source_agent", None)),
                    "to": _agent_name(getattr(item, "target_agent", None)),
                },
            )
    elif typ == "agent_updated_stream_event":
        ctx.emit("agent", {"name": _agent_name(getattr(event, "new_agent", None))})


def _get(raw: t.Any, key: str) -> t.Any:
    return raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)


def _parse(value: t.Any) -> t.Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return jsonable(value)


def _agent_name(agent: t.Any) -> str | None:
    return getattr(agent, "name", None)


class AgentModule(ModuleBase):
    """An OpenAI Agents SDK agent as a streamtap module: ``AgentModule(agent).stream("question")``.

    ``forward`` runs ``Runner.run_streamed(agent, input, **run_options)``,
    yields the answer's text deltas (reasoning and tool-call arguments on
    their channels, tool calls as ``Tool`` events) and returns the run's
    ``final_output``. With :func:`instrument` called, the agent's spans are
    its child runs. Cancelling the run cancels the agent's run.

    Args:
        agent: an ``agents.Agent``.
        name: the run name (default: the agent's name).
        **run_options: more ``Runner.run_streamed`` arguments (``max_turns``, ``run_config``...).
    """

    kind = "agent"
    blocking = False

    def __init__(self, agent: t.Any, *, name: str | None = None, **run_options: t.Any) -> None:
        self.agent = agent
        self.name = name or str(getattr(agent, "name", None) or "Agent")
        self.run_options = run_options

    async def forward(self, input: t.Any) -> t.Any:  # "input": the SDK's own name
        """Run the agent streamed (its deltas become this run's chunks); return its ``final_output``."""
        from agents import Runner

        result = Runner.run_streamed(self.agent, input, **self.run_options)
        events = stream_events(result)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()  # cancelled or failed early: result.cancel() stops the agent's run
        return result.final_output


_processor: StreamtapTracingProcessor | None = None
_processor_lock = threading.Lock()


def instrument(processor: StreamtapTracingProcessor | None = None) -> StreamtapTracingProcessor:
    """Register the tracing processor with the Agents SDK (``add_trace_processor``); idempotent.

    The SDK's other processors (its default exporter to the OpenAI platform)
    stay; replace them with ``agents.set_trace_processors([...])`` when the
    platform is not wanted (offline, or another backend).

    Args:
        processor: the processor to register (default: a new :class:`StreamtapTracingProcessor`).
    """
    global _processor  # the SDK's processor list is process-wide; this records our one entry  # noqa: PLW0603 - the framework's own process-wide hook, installed once: instrument() is idempotent
    with _processor_lock:
        if _processor is None:
            from agents import add_trace_processor

            _processor = processor or StreamtapTracingProcessor()
            add_trace_processor(_processor)
        return _processor
