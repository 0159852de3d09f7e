"""LlamaIndex runs as streamtap runs, live: a span handler and an event handler for its instrumentation dispatcher.

Needs the ``llama-index`` extra (``pip install 'streamtap[llama-index]'``,
which brings ``llama-index-core`` only).

``instrument()`` adds both handlers to LlamaIndex's root dispatcher (once per
process), and from then on:

* every LlamaIndex **span** (a decorated method call: ``MockLLM.stream_chat``,
  ``RetrieverQueryEngine.query``, ``FunctionTool.call``...) becomes a streamtap
  run, nested under its parent span, and the outermost under the streamtap run
  current where LlamaIndex was called (``contextvars``). The kind comes from
  the instance: an LLM is ``llm``, a tool or a retriever ``tool``, a workflow
  ``flow``, an agent ``agent``, anything else ``module``; the name is
  ``Class.method``. The run's output is the method's result; a raised
  exception ends it ``error``.
* the **events** stream into those runs: ``LLMChatInProgressEvent`` /
  ``LLMCompletionInProgressEvent`` deltas are ``text`` chunks (a
  ``thinking_delta`` is ``reasoning``), the start events' messages and prompts
  are the run's inputs, usage in the end event's raw response is recorded,
  ``AgentToolCallEvent`` is a ``Tool(requested)``, and a tool span's result its
  ``Tool(result)``.

LlamaIndex closes the span of a streaming call (``stream_chat``,
``stream_complete``, a streaming query) when the generator is *returned*,
before any token: the bridge keeps such a run open until the call's end event
(``LLMChatEndEvent``...) and ends it then; a generator abandoned before its end
is ended ``cancelled`` when it is garbage-collected.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import typing as t
import weakref

from ..context import current
from ..events import RunKind, Usage
from ..module import OpenRun
from ._common import ForeignRun, jsonable

__all__ = ["StreamtapEventHandler", "StreamtapSpanHandler", "instrument"]

log = logging.getLogger("streamtap.bridges.llama_index")

try:
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span import SimpleSpan
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
    from pydantic import PrivateAttr
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError("streamtap.bridges.llama_index", "llama-index") from exc

_UUID_SUFFIX = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_END_EVENTS = frozenset({"LLMChatEndEvent", "LLMCompletionEndEvent", "StreamChatEndEvent"})


class _Runs:
    """The open runs, by LlamaIndex span id (shared by the two handlers)."""

    def __init__(self) -> None:
        self.open: dict[str, OpenRun] = {}
        self.parent: dict[str, str | None] = {}  # span -> its parent span
        self.children: dict[str, int] = {}  # span -> its open child spans
        self.llm_started: set[str] = set()  # spans that sent an LLM start event: their end event ends a stream
        self.streaming: set[str] = set()  # spans whose run waits for their end event
        self.deferred: set[str] = set()  # spans that returned a stream: they end when their last child does
        self.text: dict[str, list[str]] = {}  # streaming span -> the deltas it streamed (its output)
        self.lock = threading.Lock()
        self.warned: set[str] = set()

    def guard(self, what: str, fn: t.Callable[[], t.Any]) -> t.Any:
        try:
            return fn()
        except Exception:  # instrumentation must never break the user's code
            if what not in self.warned:
                self.warned.add(what)
                log.exception("streamtap's LlamaIndex bridge failed in %s (reported once); LlamaIndex goes on", what)
            return None

    def add(self, span_id: str, parent_id: str | None, run: OpenRun) -> None:
        with self.lock:
            self.open[span_id] = run
            parent = parent_id if parent_id is not None and parent_id in self.open else None
            self.parent[span_id] = parent
            if parent is not None:
                self.children[parent] = self.children.get(parent, 0) + 1

    def returned_stream(self, span_id: str) -> bool:
        """The span's method returned a stream; returns whether its run stays open for now."""
        with self.lock:
            if span_id in self.llm_started:
                self.streaming.add(span_id)
                return True
            # A returned stream often starts its model call only when it is read (after this span closed):
            # the run stays open, its later child spans nest under it, and it ends with the last of them.
            self.deferred.add(span_id)
            return True

    def collected(self, span_id: str) -> None:
        """The stream a span returned was garbage-collected: end its run, and its open descendants first.

        They end ``ok``, unless a model stream among them was still waiting for its end
        event: then the stream was abandoned, and they end ``cancelled``.
        """
        with self.lock:
            if span_id not in self.open:
                return
            subtree = [span_id]
            for sid in subtree:  # breadth first: parents before children
                subtree += [c for c, p in self.parent.items() if p == sid and c in self.open]
            abandoned = any(sid in self.streaming for sid in subtree)
        for sid in reversed(subtree):
            self.end(sid, None, None, "cancelled" if abandoned else None)

    def end(self, span_id: str, output: t.Any = None, error: BaseException | None = None, status: t.Any = None) -> None:
        with self.lock:
            run = self.open.pop(span_id, None)
            if run is None:
                return
            self.streaming.discard(span_id)
            self.deferred.discard(span_id)
            self.llm_started.discard(span_id)
            self.children.pop(span_id, None)
            streamed = self.text.pop(span_id, None)
            parent = self.parent.pop(span_id, None)
            finish_parent = False
            if parent is not None and parent in self.children:
                self.children[parent] -= 1
                finish_parent = self.children[parent] <= 0 and parent in self.deferred
        if streamed is not None and error is None and status is None:
            output = "".join(streamed)
        run.end(output, error=error, status=status)
        if finish_parent and parent is not None:
            self.end(parent, None, None, status)


class StreamtapSpanHandler(BaseSpanHandler[SimpleSpan]):
    """LlamaIndex spans as streamtap runs (see the module docs). Made and registered by :func:`instrument`."""

    _runs: _Runs = PrivateAttr(default_factory=_Runs)

    def __init__(self, runs: _Runs | None = None, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        if runs is not None:
            self._runs = runs

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for this handler."""
        return "StreamtapSpanHandler"

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: t.Any = None,
        parent_span_id: str | None = None,
        tags: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> SimpleSpan | None:
        """A span opens: begin its run."""

        def begin() -> None:
            runs = self._runs
            parent = runs.open.get(parent_span_id) if parent_span_id else None
            kind = _kind(instance)
            module = ForeignRun(
                _UUID_SUFFIX.sub("", id_), kind, "llama-index", model=_model(instance) if kind == "llm" else None
            )
            owner = parent.context if parent is not None else current()
            if kind == "tool" and owner is not None and "Retriever" not in type(instance).__name__:
                owner.tool(id_, module.name or "tool", "requested", arguments=_arguments(bound_args))
            run = module.begin(_arguments(bound_args), parent=parent.context if parent is not None else "current")
            runs.add(id_, parent_span_id, run)

        self._runs.guard("new_span", begin)
        return SimpleSpan(id_=id_, parent_id=parent_span_id, tags=tags or {})

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: t.Any = None,
        result: t.Any = None,
        **kwargs: t.Any,
    ) -> SimpleSpan | None:
        """The method returned: end its run (a stream's run waits for its end event)."""

        def exit_() -> None:
            runs = self._runs
            if (
                inspect.isgenerator(result) or inspect.isasyncgen(result) or _is_streaming_response(result)
            ) and runs.returned_stream(id_):
                target = getattr(result, "response_gen", result)
                try:  # abandoned before its end: ended when collected
                    weakref.finalize(target, runs.collected, id_)
                except TypeError:  # not weak-referenceable: the end event (or its last child) ends it
                    pass
                return
            run = runs.open.get(id_)
            if (
                run is not None
                and run.run.kind == "tool"
                and run.run.parent_id is not None
                and "Retriever" not in type(instance).__name__
            ):
                owner = next((r.context for r in runs.open.values() if r.run.run_id == run.run.parent_id), None)
                ctx = current()
                if owner is None and ctx is not None and ctx.run.run_id == run.run.parent_id:
                    owner = ctx
                runs.end(id_, jsonable(_output(result)))
                if owner is not None:
                    owner.tool(id_, run.run.name, "result", result=jsonable(_tool_output(result)))
                return
            runs.end(id_, jsonable(_output(result)))

        self._runs.guard("prepare_to_exit_span", exit_)
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: t.Any = None,
        err: BaseException | None = None,
        **kwargs: t.Any,
    ) -> SimpleSpan | None:
        """The method raised: end its run with the error."""
        self._runs.guard("prepare_to_drop_span", lambda: self._runs.end(id_, None, err))
        return None


class StreamtapEventHandler(BaseEventHandler):
    """LlamaIndex instrumentation events as streamtap chunks and tool events. Made and registered by :func:`instrument`."""

    _runs: _Runs = PrivateAttr(default_factory=_Runs)

    def __init__(self, runs: _Runs | None = None, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        if runs is not None:
            self._runs = runs

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for this handler."""
        return "StreamtapEventHandler"

    def handle(self, event: t.Any, **kwargs: t.Any) -> None:
        """One event: a delta, a tool call, or the end of a stream."""
        runs = self._runs
        span_id = event.span_id
        run = runs.open.get(span_id) if span_id else None
        if run is None:
            return
        name = type(event).__name__
        if name in ("LLMChatStartEvent", "LLMCompletionStartEvent"):
            with runs.lock:
                runs.llm_started.add(span_id)
        elif name in ("LLMChatInProgressEvent", "LLMCompletionInProgressEvent"):
            response = event.response
            thinking = getattr(response, "additional_kwargs", None) or {}
            if isinstance(thinking.get("thinking_delta"), str) and thinking["thinking_delta"]:
                run.context.chunk(thinking["thinking_delta"], "reasoning")
            delta = response.delta
            if delta:
                run.context.chunk(delta)
                if span_id in runs.streaming:
                    runs.text.setdefault(span_id, []).append(delta)
        elif name == "AgentToolCallEvent":
            runs.guard(
                "AgentToolCallEvent",
                lambda: run.context.tool(span_id, str(event.tool.name), "requested", arguments=_json(event.arguments)),
            )
        elif name in _END_EVENTS:
            runs.guard(name, lambda: _end_of_stream(runs, span_id, run, event))


def _end_of_stream(runs: _Runs, span_id: str, run: OpenRun, event: t.Any) -> None:
    response = getattr(event, "response", None)
    usage = _usage(getattr(response, "raw", None))
    if usage is not None:
        run.context.add_usage(usage)
    if span_id in runs.streaming:
        runs.end(span_id, jsonable(_output(response)))


def _is_streaming_response(result: t.Any) -> bool:
    return type(result).__name__ in ("StreamingResponse", "AsyncStreamingResponse")


def _kind(instance: t.Any) -> RunKind:
    names = {c.__name__ for c in type(instance).__mro__} if instance is not None else set()
    if names & {"BaseLLM", "LLM", "FunctionCallingLLM"}:
        return "llm"
    if names & {"BaseTool", "AsyncBaseTool", "BaseRetriever"}:
        return "tool"
    if names & {"BaseWorkflowAgent", "AgentWorkflow", "BaseAgent", "AgentRunner"}:
        return "agent"
    if "Workflow" in names:
        return "flow"
    return "module"


def _model(instance: t.Any) -> str | None:
    meta = getattr(instance, "metadata", None)
    model = getattr(meta, "model_name", None) or getattr(instance, "model", None)
    return model if isinstance(model, str) else None


def _arguments(bound: inspect.BoundArguments) -> t.Any:
    args = {k: _message(v) for k, v in bound.arguments.items() if k not in ("self", "kwargs")}
    return jsonable(args)


def _message(value: t.Any) -> t.Any:
    """Chat messages as ``{role, content}`` (what the tracing subscriber's GenAI conventions read)."""
    if isinstance(value, (list, tuple)):
        return [_message(v) for v in value]
    role = getattr(value, "role", None)
    if role is not None and hasattr(value, "content") and hasattr(value, "blocks"):
        return {"role": str(getattr(role, "value", role)), "content": value.content}
    return value


def _output(result: t.Any) -> t.Any:
    if result is None or _is_streaming_response(result) or inspect.isgenerator(result) or inspect.isasyncgen(result):
        return None  # never str() a stream: LlamaIndex's StreamingResponse.__str__ drains it
    message = getattr(result, "message", None)  # ChatResponse
    if message is not None and hasattr(message, "content"):
        return message.content
    for attr in ("text", "response"):  # CompletionResponse, query Response
        value = getattr(result, attr, None)
        if isinstance(value, str):
            return value
    if isinstance(result, list) and result and hasattr(result[0], "node"):  # retrieved nodes
        return [{"text": n.node.get_content(), "score": getattr(n, "score", None)} for n in result]
    return result


def _tool_output(result: t.Any) -> t.Any:
    content = getattr(result, "content", None)  # ToolOutput
    return content if content is not None else _output(result)


def _usage(raw: t.Any) -> Usage | None:
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is None:
        return None
    get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
    inp = get("prompt_tokens") or get("input_tokens")
    out = get("completion_tokens") or get("output_tokens")
    if inp is None and out is None:
        return None
    return Usage(int(inp or 0), int(out or 0))


def _json(text: t.Any) -> t.Any:
    import json

    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return jsonable(text)


_installed: tuple[StreamtapSpanHandler, StreamtapEventHandler] | None = None
_installed_lock = threading.Lock()


def instrument(dispatcher: t.Any = None) -> tuple[StreamtapSpanHandler, StreamtapEventHandler]:
    """Add streamtap's span and event handlers to LlamaIndex's root dispatcher (idempotent).

    Args:
        dispatcher: another dispatcher to instrument (default: the root, which every
            LlamaIndex dispatcher propagates to).

    Returns:
        The two handlers.
    """
    global _installed  # LlamaIndex's root dispatcher is process-wide; this records our one pair  # noqa: PLW0603 - the framework's own process-wide hook, installed once: instrument() is idempotent
    with _installed_lock:
        if _installed is not None and dispatcher is None:
            return _installed
        from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

        runs = _Runs()
        pair = (StreamtapSpanHandler(runs), StreamtapEventHandler(runs))
        target = dispatcher or get_dispatcher()
        target.add_span_handler(pair[0])
        target.add_event_handler(pair[1])
        if dispatcher is None:
            _installed = pair
        return pair
