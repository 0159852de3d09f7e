"""LangChain and LangGraph runs as streamtap runs, live: a callback handler.

Needs the ``langchain`` extra (``pip install 'streamtap[langchain]'``, which
brings ``langchain-core`` only). Two ways in:

* :func:`instrument` -- once per process: every LangChain run from then on
  reports to streamtap, with nothing passed by hand (the handler joins every
  callback manager LangChain configures, through LangChain's own
  ``register_configure_hook``, the way its tracers join).
* :class:`StreamtapCallbackHandler` -- pass it yourself:
  ``chain.invoke(x, config={"callbacks": [StreamtapCallbackHandler()]})``.

Each LangChain run becomes a streamtap run, nested under its LangChain parent,
and the outermost ones under the streamtap run current where LangChain was
called (a streamtap tool, agent, flow node), found through ``contextvars``:
so a chain called inside a streamtap module streams into that module's
``module.stream()``, the web page and the trace. A streamtap module called
inside a LangChain tool or chain nests under it in turn.

What maps to what:

* ``on_chat_model_start`` / ``on_llm_start``: a run of kind ``llm`` (named
  after the model class), inputs = the messages;
* ``on_llm_new_token``: a ``Chunk`` on ``text``; reasoning content on
  ``reasoning``; tool-call argument pieces on ``tool_args`` (matched by index
  to their call id);
* ``on_llm_end``: a ``Tool(requested)`` per tool call of the answer, the
  usage, the ``End`` (output: the text);
* ``on_chain_start`` / ``on_chain_end``: a run, ``flow`` for a LangGraph
  graph, ``node`` for a graph node, else ``module``;
* ``on_tool_start`` / ``on_tool_end``: a ``tool`` run and ``Tool`` requested /
  result events (with the model's call id when LangGraph's ``ToolNode`` runs it);
* ``on_retriever_start`` / ``on_retriever_end``: a ``tool`` run whose output is
  the documents (``page_content``, ``metadata``);
* ``on_*_error``: ``End`` with status ``error`` (``cancelled`` for a
  cancellation, ``interrupted`` for LangGraph's ``GraphInterrupt``);
* ``on_custom_event`` (``dispatch_custom_event``): a ``Custom`` event.

Runs LangChain tags ``langsmith:hidden`` (LangGraph's internal plumbing) are
left out; their children attach to the nearest shown ancestor.

Cancelling the streamtap run (a stop button, ``handle.cancel()``) raises
:class:`~streamtap.RunCancelled` from the next token callback, which stops
the LangChain stream (the handler sets ``raise_error``). Any other failure of
the handler itself is logged once per kind and never breaks the chain.

Tokens skip LangChain's per-handler dispatch when the handler is a run's only
handler (it costs more per token than the rest of the bridge): see
``streamtap.bridges._langchain_tokens`` and the cost section of the bridge's page.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import typing as t
import uuid

from ..events import RunKind, Usage
from ..exceptions import RunCancelled
from ..module import OpenRun
from . import _langchain_tokens
from ._common import ForeignRun, jsonable

__all__ = ["StreamtapCallbackHandler", "instrument"]

log = logging.getLogger("streamtap.bridges.langchain")

try:
    from langchain_core.callbacks import BaseCallbackHandler
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from ..exceptions import MissingDependencyError

    raise MissingDependencyError("streamtap.bridges.langchain", "langchain") from exc

_HIDDEN = "langsmith:hidden"


class _Entry:
    __slots__ = ("activation", "call_ids", "chunk", "ctx", "kind", "name", "run", "tool_call_id")

    def __init__(self, run: OpenRun, kind: RunKind, name: str) -> None:
        self.run = run
        self.ctx = run.context
        self.chunk = run.context.chunk  # bound once: the token path calls it per token
        self.kind = kind
        self.name = name
        self.activation: contextlib.AbstractContextManager[t.Any] | None = None
        self.call_ids: dict[int, str] = {}  # tool-call chunk index -> call id (later chunks omit it)
        self.tool_call_id: str | None = None


class StreamtapCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that reports LangChain runs as streamtap runs (see the module docs).

    Thread-safe; one handler serves any number of concurrent runs.

    Creating one hands LangChain's token callbacks straight to this class's
    handlers, process-wide, when one is a run's only handler (skipping
    LangChain's generic per-handler dispatch, which costs more per token than
    the rest of the bridge; every other handler list is dispatched by
    LangChain as before): see ``streamtap.bridges._langchain_tokens``.

    Args:
        activate: make each LangChain run the current streamtap run while it
            executes, so streamtap modules called inside a LangChain tool or
            chain nest under it (works where LangChain runs callbacks in the
            run's own context: sync code, and async code with this handler,
            which runs inline).
    """

    raise_error = True  # a RunCancelled from a token callback must stop the LangChain stream
    run_inline = True  # async callbacks in the run's own context: contextvars see the run

    def __init__(self, *, activate: bool = True) -> None:
        super().__init__()
        self.activate = activate
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._hidden: dict[uuid.UUID, uuid.UUID | None] = {}  # hidden run -> its parent
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._last: tuple[object, t.Any] = (None, None)  # (run id, its _Entry) of the last token: see on_llm_new_token
        _langchain_tokens.install(StreamtapCallbackHandler, StreamtapCallbackHandler._token)

    # -- runs --------------------------------------------------------------

    def _parent(self, parent_run_id: uuid.UUID | None) -> t.Any:
        seen = 0
        while parent_run_id is not None and seen < 1000:
            entry = self._entries.get(parent_run_id)
            if entry is not None:
                return entry.run.context
            if parent_run_id not in self._hidden:
                break
            parent_run_id = self._hidden[parent_run_id]
            seen += 1
        return "current"

    def _begin(
        self,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        name: str,
        kind: RunKind,
        inputs: t.Any,
        tags: list[str] | None,
        metadata: dict[str, t.Any] | None = None,
        params: dict[str, t.Any] | None = None,
    ) -> _Entry | None:
        if tags and _HIDDEN in tags:
            with self._lock:
                self._hidden[run_id] = parent_run_id
            return None
        model = provider = None
        if kind == "llm":
            meta, params = metadata or {}, params or {}
            model = meta.get("ls_model_name") or params.get("model") or params.get("model_name")
            provider = meta.get("ls_provider")
        module = ForeignRun(
            name,
            kind,
            "langchain",
            tuple(x for x in tags or () if isinstance(x, str)),
            model=model if isinstance(model, str) else None,
            provider=provider if isinstance(provider, str) else None,
        )
        run = module.begin(jsonable(inputs), parent=self._parent(parent_run_id))
        entry = _Entry(run, kind, name)
        with self._lock:
            self._entries[run_id] = entry
        if self.activate:
            activation = run.activate()
            activation.__enter__()
            entry.activation = activation
        return entry

    def _finish(self, run_id: uuid.UUID, output: t.Any = None, error: BaseException | None = None) -> _Entry | None:
        with self._lock:
            entry = self._entries.pop(run_id, None)
            self._hidden.pop(run_id, None)
            if self._last[0] == run_id:
                self._last = (None, None)
        if entry is None:
            return None
        if entry.activation is not None:
            try:
                entry.activation.__exit__(None, None, None)
            except ValueError:  # ended in another context than it started in: nothing to restore there
                pass
        entry.run.end(output, error=error)
        return entry

    def _guard(self, what: str, fn: t.Callable[[], t.Any]) -> None:
        try:
            fn()
        except RunCancelled:
            raise
        except Exception:
            self._warn(what)

    def _warn(self, what: str) -> None:
        """Log the exception being handled, once per callback name."""
        if what not in self._warned:
            self._warned.add(what)
            log.exception("streamtap's LangChain bridge failed in %s (reported once); the chain goes on", what)

    # -- chat models and LLMs ------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, t.Any] | None,
        messages: list[list[t.Any]],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        """A chat model call starts: an ``llm`` run."""
        inputs = [[_message(m) for m in batch] for batch in messages]
        name = _name(serialized, kwargs, "chat_model")
        first = inputs[0] if len(inputs) == 1 else inputs
        params = kwargs.get("invocation_params")
        self._guard(
            "on_chat_model_start",
            lambda: self._begin(run_id, parent_run_id, name, "llm", first, tags, metadata, params),
        )

    def on_llm_start(
        self,
        serialized: dict[str, t.Any] | None,
        prompts: list[str],
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        """A (completion) LLM call starts: an ``llm`` run."""
        name = _name(serialized, kwargs, "llm")
        first = prompts[0] if len(prompts) == 1 else prompts
        params = kwargs.get("invocation_params")
        self._guard(
            "on_llm_start", lambda: self._begin(run_id, parent_run_id, name, "llm", first, tags, metadata, params)
        )

    def on_llm_new_token(self, token: t.Any, *, chunk: t.Any = None, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """A streamed token: text, reasoning and tool-call argument chunks (the hot path: kept lean)."""
        self._token(run_id, token, chunk)

    def _token(self, run_id: uuid.UUID, token: t.Any, chunk: t.Any) -> None:
        """What :meth:`on_llm_new_token` does; LangChain's token callback calls it directly (see ``__init__``)."""
        entry: _Entry
        last = self._last  # the run of the previous token: LangChain passes the same UUID object each time
        if last[0] is run_id:
            entry = last[1]
        else:
            found = self._entries.get(run_id)  # UUID.__hash__ is Python code: the cache above skips it
            if found is None:
                return
            entry = found
            self._last = (run_id, entry)
        try:
            message = getattr(chunk, "message", None)
            if message is None:
                if token.__class__ is str and token:
                    entry.chunk(token)  # raises RunCancelled when the streamtap run was cancelled
                else:
                    entry.ctx.raise_if_cancelled()
                return
            if message.additional_kwargs:
                reasoning = _reasoning(message)
                if reasoning:
                    entry.chunk(reasoning, "reasoning")
            content = message.content
            if content.__class__ is not str:
                reasoning = _reasoning(message)
                if reasoning:
                    entry.chunk(reasoning, "reasoning")
                content = _text_blocks(content)
            if content:
                entry.chunk(content)
            else:
                entry.ctx.raise_if_cancelled()
            if message.tool_call_chunks:
                self._tool_args(entry, message.tool_call_chunks, run_id)
        except RunCancelled:
            raise
        except Exception:
            self._warn("on_llm_new_token")

    @staticmethod
    def _tool_args(entry: _Entry, chunks: list[t.Any], run_id: uuid.UUID) -> None:
        for tc in chunks:
            index = tc.get("index") or 0
            call_id = tc.get("id") or entry.call_ids.get(index) or f"{run_id}-{index}"
            entry.call_ids[index] = call_id
            if tc.get("args"):
                entry.chunk(tc["args"], "tool_args", call_id)

    def on_llm_end(self, response: t.Any, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """The model call ended: its tool calls, usage and text."""

        def end() -> None:
            entry = self._entries.get(run_id)
            if entry is None:
                return
            ctx = entry.run.context
            text, message = "", None
            generations = getattr(response, "generations", None) or []
            if generations and generations[0]:
                gen = generations[0][0]
                text = getattr(gen, "text", "") or ""
                message = getattr(gen, "message", None)
            for call in getattr(message, "tool_calls", None) or ():
                ctx.tool(
                    call.get("id") or "", call.get("name") or "tool", "requested", arguments=jsonable(call.get("args"))
                )
            usage = getattr(message, "usage_metadata", None)
            if usage:
                details = usage.get("output_token_details") or {}
                cached = (usage.get("input_token_details") or {}).get("cache_read")
                ctx.add_usage(
                    Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0), details.get("reasoning"), cached)
                )
            self._finish(run_id, text)

        self._guard("on_llm_end", end)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """The model call failed."""
        self._guard("on_llm_error", lambda: self._finish(run_id, error=error))

    # -- chains ---------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, t.Any] | None,
        inputs: t.Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        """A chain, graph or graph node starts."""
        name = _name(serialized, kwargs, "chain")
        meta = metadata or {}
        kind: RunKind = "module"
        if meta.get("langgraph_node") == name:
            kind = "node"
        elif name == "LangGraph" or (serialized or {}).get("id", [""])[-1] in ("CompiledStateGraph", "Pregel"):
            kind = "flow"
        self._guard("on_chain_start", lambda: self._begin(run_id, parent_run_id, name, kind, inputs, tags))

    def on_chain_end(self, outputs: t.Any, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """A chain ended."""
        self._guard("on_chain_end", lambda: self._finish(run_id, jsonable(outputs)))

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """A chain failed (or was interrupted: LangGraph's ``GraphInterrupt`` ends it ``interrupted``)."""
        status = "interrupted" if type(error).__name__ in ("GraphInterrupt", "NodeInterrupt") else None

        def end() -> None:
            with self._lock:
                entry = self._entries.get(run_id)
            if entry is not None and status is not None:
                if entry.activation is not None:
                    with contextlib.suppress(ValueError):
                        entry.activation.__exit__(None, None, None)
                    entry.activation = None
                with self._lock:
                    self._entries.pop(run_id, None)
                    if self._last[0] == run_id:
                        self._last = (None, None)
                entry.run.end(jsonable(getattr(error, "args", None)), status="interrupted")
                return
            self._finish(run_id, error=error)

        self._guard("on_chain_error", end)

    # -- tools and retrievers -------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, t.Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, t.Any] | None = None,
        inputs: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        """A tool starts: a ``tool`` run and a ``Tool(requested)`` event (unless its model call already sent one)."""

        def start() -> None:
            name = _name(serialized, kwargs, "tool")
            args = inputs if inputs is not None else input_str
            call_id = kwargs.get("tool_call_id")
            parent = self._parent(parent_run_id)
            entry = self._begin(run_id, parent_run_id, name, "tool", args, tags)
            if entry is None:
                return
            entry.tool_call_id = call_id or str(run_id)
            if call_id is None:  # invoked directly: no model asked for it, so announce the call here
                _tool_owner(entry, parent).tool(entry.tool_call_id, name, "requested", arguments=jsonable(args))

        self._guard("on_tool_start", start)

    def on_tool_end(self, output: t.Any, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """A tool returned: ``Tool(result)`` and the run's ``End``."""

        def end() -> None:
            with self._lock:
                entry = self._entries.get(run_id)
            if entry is None:
                return
            call_id = getattr(output, "tool_call_id", None) or entry.tool_call_id or str(run_id)
            content = getattr(output, "content", output)
            parent = entry.run.context.run.parent_id
            self._finish(run_id, jsonable(content))
            _owner_of(entry, parent).tool(call_id, entry.name, "result", result=jsonable(content))

        self._guard("on_tool_end", end)

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """A tool failed: ``Tool(error)`` and the run's ``End``."""

        def end() -> None:
            with self._lock:
                entry = self._entries.get(run_id)
            if entry is None:
                return
            self._finish(run_id, error=error)
            _owner_of(entry, entry.run.context.run.parent_id).tool(
                entry.tool_call_id or str(run_id), entry.name, "error", error=error
            )

        self._guard("on_tool_error", end)

    def on_retriever_start(
        self,
        serialized: dict[str, t.Any] | None,
        query: str,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, t.Any] | None = None,
        **kwargs: t.Any,
    ) -> None:
        """A retriever starts: a ``tool`` run."""
        self._guard(
            "on_retriever_start",
            lambda: self._begin(run_id, parent_run_id, _name(serialized, kwargs, "retriever"), "tool", query, tags),
        )

    def on_retriever_end(self, documents: t.Any, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """The retriever returned its documents."""
        docs = [
            {"page_content": getattr(d, "page_content", str(d)), "metadata": jsonable(getattr(d, "metadata", {}))}
            for d in documents or ()
        ]
        self._guard("on_retriever_end", lambda: self._finish(run_id, docs))

    def on_retriever_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """The retriever failed."""
        self._guard("on_retriever_error", lambda: self._finish(run_id, error=error))

    def on_custom_event(self, name: str, data: t.Any, *, run_id: uuid.UUID, **kwargs: t.Any) -> None:
        """``dispatch_custom_event(name, data)``: a ``Custom`` event on the run that sent it."""

        def emit() -> None:
            entry = self._entries.get(run_id)
            if entry is not None:
                entry.run.context.emit(name, jsonable(data))

        self._guard("on_custom_event", emit)


def _tool_owner(entry: _Entry, parent: t.Any) -> t.Any:
    """The run that reports a tool call: the tool run's parent (as a streamtap agent does), else the tool run."""
    if parent == "current":
        from ..context import current

        return current() or entry.run.context
    return parent


def _owner_of(entry: _Entry, parent_id: str | None) -> t.Any:
    from ..context import current

    ctx = current()
    if ctx is not None and ctx.run.run_id == parent_id:
        return ctx
    return entry.run.context  # the parent's context is not reachable from here: the tool's own run reports


def _name(serialized: dict[str, t.Any] | None, kwargs: t.Mapping[str, t.Any], default: str) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        if isinstance(serialized.get("name"), str):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return default


def _message(m: t.Any) -> dict[str, t.Any]:
    role = {"human": "user", "ai": "assistant"}.get(getattr(m, "type", ""), getattr(m, "type", "user"))
    content = getattr(m, "content", m)
    return {"role": role, "content": content if isinstance(content, str) else jsonable(content)}


def _text_blocks(content: t.Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def _reasoning(message: t.Any) -> str:
    extra = message.additional_kwargs
    text = extra.get("reasoning_content") if extra else None
    if isinstance(text, str):
        return text
    content = message.content
    if isinstance(content, list):
        return "".join(
            b.get("reasoning", "") or b.get("thinking", "")
            for b in content
            if isinstance(b, dict) and b.get("type") in ("reasoning", "thinking")
        )
    return ""


_hook: t.Any = None
_hook_lock = threading.Lock()


def instrument(handler: StreamtapCallbackHandler | None = None) -> StreamtapCallbackHandler:
    """Report every LangChain run of this process to streamtap, with nothing passed by hand.

    Idempotent: the first call registers the handler with LangChain's
    ``register_configure_hook`` (process-wide, like LangChain's own tracers);
    later calls return that handler.

    Args:
        handler: the handler to register (default: a new :class:`StreamtapCallbackHandler`).
    """
    global _hook  # noqa: PLW0603 - the framework's own process-wide hook, installed once: instrument() is idempotent
    with _hook_lock:
        if _hook is not None:
            return t.cast(StreamtapCallbackHandler, _hook.get())
        import contextvars

        from langchain_core.tracers.context import register_configure_hook

        chosen = handler or StreamtapCallbackHandler()
        var: contextvars.ContextVar[StreamtapCallbackHandler | None] = contextvars.ContextVar(
            "streamtap_langchain_handler", default=chosen
        )
        register_configure_hook(var, True)
        _hook = var
        return chosen
