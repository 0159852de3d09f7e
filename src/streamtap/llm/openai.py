"""Chat modules on the ``openai`` client, for any OpenAI-compatible endpoint.

:class:`OpenAIChat` uses the synchronous client (``llm(x)``, ``llm.stream(x)``
from any thread); :class:`AsyncOpenAIChat` uses the async client (``await
llm.acall(x)``, ``llm.astream(x)``). Both stream the answer as it arrives:

* channel ``text``: the user-facing content (inline tool-call markup removed);
* channel ``reasoning``: ``reasoning_content`` / ``reasoning`` deltas;
* channel ``tool_args``: tool-call argument pieces, with ``call_id``.

The output is a :class:`ChatReply`: a ``str`` (the text) that also carries
``tool_calls``, ``reasoning``, ``finish_reason``, ``model``, ``usage`` and ``id``.

Configuration comes from the arguments, else ``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` and ``OPENAI_MODEL``. Usage goes to the run
(:meth:`RunContext.add_usage`), and these attributes to its ``End.attributes``
(the names the tracing subscriber reads):

===========================  ===================================================
``provider``                 ``"openai"`` (the API spoken)
``operation``                ``"chat"``
``request_model``            the model asked for
``response_model``           the model that answered (from the response)
``response_id``              the completion id
``finish_reasons``           list of finish reasons (``["stop"]``, ``["tool_calls"]``)
``server_address``           host of ``base_url``
``server_port``              port of ``base_url`` (int)
``stream``                   whether the call streamed
``time_to_first_token``      seconds from sending the request to the first content,
                             reasoning or tool-call delta
``tool_call_count``          number of tool calls the model made
``request_temperature``,     sampling parameters, when given
``request_top_p``,
``request_max_tokens``,
``request_seed``,
``request_stop``
``input_messages``,          the messages and the reply -- only with
``output_messages``          ``record_content=True``
===========================  ===================================================

Failures of the server or the network end the run with status ``error`` and
raise :class:`~streamtap.llm.errors.LLMError` (the ``openai`` exception is its
``__cause__``); the message says what failed and what to check, with no secret
and no server address in it (those, redacted, are in ``LLMError.detail``). A
stream that ends without a finish reason is incomplete (``stream_cut``), and
what streamed before any mid-stream failure stays on the End. ``timeout`` is
one deadline for the answer to start, retries included
(:mod:`streamtap.llm.budget`). A run cancelled while its stream ran ends
``cancelled``, however the stream ended. Closing the
stream early or cancelling the run closes the HTTP stream at once, even while
the synchronous client is blocked reading it. Before the server's first byte
the synchronous client cannot be interrupted: the run then ends ``cancelled``
at once and the request is closed when the server answers (or the client's
timeout expires); the async client closes it at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import difflib
import functools
import inspect
import json
import os
import re
import secrets
import socket
import threading
import time
import typing as t
import urllib.parse
import weakref

from .._messages import build_messages
from ..context import RunContext, current
from ..events import Usage
from ..exceptions import MissingDependencyError, RunCancelled, UsageError
from ..module import Delta, ModuleBase
from ..redaction import Redactor
from .budget import Budget, is_retryable_status, retry_after
from .errors import LLMError
from .markup import Markup, MarkupFilter, markers_for

__all__ = ["AsyncOpenAIChat", "ChatReply", "OpenAIChat", "ToolCall"]

Message = dict[str, t.Any]
_SAMPLING = ("temperature", "top_p", "max_tokens", "seed", "stop")
_DEFAULT_MODEL = "gpt-4o-mini"


class ToolCall(t.NamedTuple):
    """A complete tool call requested by the model.

    Attributes:
        id: the call id (from the server, or made up for inline markup).
        name: the tool's name.
        arguments: the arguments as the model wrote them (a JSON string, maybe invalid).
    """

    id: str
    name: str
    arguments: str

    def to_message(self) -> dict[str, t.Any]:
        """The call in OpenAI's ``tool_calls`` message format."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ChatReply(str):
    """A model's answer: the text itself (a ``str``), plus what else came with it.

    Attributes:
        tool_calls: the complete tool calls, in index order.
        reasoning: the reasoning text, if the server streamed any.
        finish_reason: why the model stopped (``stop``, ``tool_calls``, ``length``...).
        model: the model that answered.
        usage: token usage, when the server reported it.
        id: the completion id.
    """

    tool_calls: tuple[ToolCall, ...]
    reasoning: str
    finish_reason: str | None
    model: str | None
    usage: Usage | None
    id: str | None

    def __new__(
        cls,
        text: str = "",
        *,
        tool_calls: t.Sequence[ToolCall] = (),
        reasoning: str = "",
        finish_reason: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        id: str | None = None,
    ) -> ChatReply:
        """Make the reply: its text, and what the model call said besides."""
        self = super().__new__(cls, text)
        self.tool_calls = tuple(tool_calls)
        self.reasoning = reasoning
        self.finish_reason = finish_reason
        self.model = model
        self.usage = usage
        self.id = id
        return self

    @property
    def text(self) -> str:
        """The text as a plain ``str``."""
        return str.__str__(self)

    def to_message(self) -> dict[str, t.Any]:
        """The reply as an assistant message for the next request."""
        content = self.text if self.text or not self.tool_calls else None
        msg: dict[str, t.Any] = {"role": "assistant", "content": content}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return msg

    def __repr__(self) -> str:
        extra = f", tool_calls={list(self.tool_calls)!r}" if self.tool_calls else ""
        return f"ChatReply({self.text!r}{extra}, finish_reason={self.finish_reason!r})"


def _import_openai() -> t.Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("OpenAIChat (the openai client)", "openai") from exc
    return openai


_MANAGED_PARAMS = frozenset({"self", "messages", "model", "stream", "tools", "timeout"})
"""Request parameters the module sets itself (or takes under its own argument)."""


@functools.lru_cache(maxsize=1)
def _request_params() -> frozenset[str] | None:
    """The keyword arguments of the installed client's ``chat.completions.create``, or ``None`` without openai."""
    try:
        from openai.resources.chat.completions import Completions
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return frozenset(inspect.signature(Completions.create).parameters) - _MANAGED_PARAMS


def _check_params(owner: str, params: t.Mapping[str, t.Any]) -> None:
    """Refuse constructor keywords that are neither the module's own nor request parameters of the client."""
    known = _request_params()
    if known is None or not params:
        return
    unknown = [k for k in params if k not in known]
    if not unknown:
        return
    own = [p for p in inspect.signature(OpenAIChat.__init__).parameters if p not in ("self", "params")]
    own += ["tags", "metadata"]
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, [*own, *known], n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    msg = (
        f"{owner}() got unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
        f"It takes {', '.join(own)}, and the request parameters of chat.completions.create: "
        f"{', '.join(sorted(known - {'metadata'}))}."
    )
    raise UsageError(msg)


def _tool_schema(tool: t.Any) -> dict[str, t.Any]:
    if isinstance(tool, dict):
        return tool
    to_openai = getattr(tool, "to_openai", None)
    if callable(to_openai):
        return t.cast("dict[str, t.Any]", to_openai())
    msg = f"A tool must be an OpenAI tool dict or have a to_openai() method (like a @tool); got {tool!r}."
    raise UsageError(msg)


class _Accumulator:
    """Turns a stream of chat-completion chunks into chunks for the run and a :class:`ChatReply`."""

    def __init__(self, ctx: RunContext, markup: MarkupFilter | None, t0: float) -> None:
        self.ctx = ctx
        self.markup = markup
        self.t0 = t0
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # arrival order -> [id, name, [argument pieces], id came from the server]
        self.calls: dict[int, list[t.Any]] = {}
        self._by_index: dict[int, int] = {}  # the server's tool-call index -> its current slot
        self._last: int | None = None
        self.inline_calls: list[ToolCall] = []
        self.finish_reasons: list[str] = []
        self.model: str | None = None
        self.id: str | None = None
        self.usage: Usage | None = None
        self.ttft: float | None = None
        self.chunks = 0

    def _first(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0
            self.ctx.annotate(time_to_first_token=self.ttft)

    def _content(self, message: t.Any, out: list[Delta]) -> None:
        """Add the reasoning and the text of a message (or a stream delta) to ``out``."""
        reasoning = _reasoning_of(message)
        if reasoning:
            self._first()
            self.reasoning.append(reasoning)
            out.append(Delta(reasoning, "reasoning"))
        if message.content:
            self._first()
            out.extend(self._text(message.content))

    def _text(self, text: str) -> list[Delta]:
        if not text:
            return []
        if self.markup is None:
            self.text.append(text)
            return [Delta(text)]
        return self._pieces(self.markup.feed(text))

    def _pieces(self, pieces: t.Sequence[t.Any]) -> list[Delta]:
        out: list[Delta] = []
        for piece in pieces:
            if isinstance(piece, Markup):
                call = _parse_markup(piece)
                if call is not None:
                    self.inline_calls.append(call)
                    out.append(Delta(call.arguments, "tool_args", call.id))
            else:
                self.text.append(piece.text)
                out.append(Delta(piece.text))
        return out

    def feed(self, chunk: t.Any) -> list[Delta]:
        self.chunks += 1
        self.model = getattr(chunk, "model", None) or self.model
        self.id = getattr(chunk, "id", None) or self.id
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = _usage_of(usage)
        out: list[Delta] = []
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = choice.delta
            if delta is not None:
                self._content(delta, out)
                for tc in delta.tool_calls or ():
                    self._first()
                    slot = self._slot(tc)
                    fn = tc.function
                    if fn is not None:
                        if fn.name and fn.name != slot[1]:  # some proxies repeat the whole name
                            slot[1] += fn.name
                        if fn.arguments:
                            slot[2].append(fn.arguments)
                            out.append(Delta(fn.arguments, "tool_args", slot[0]))
            if choice.finish_reason:
                self.finish_reasons.append(choice.finish_reason)
        return out

    def _slot(self, tc: t.Any) -> list[t.Any]:
        """The call a tool-call delta belongs to.

        By index as OpenAI sends it, or by id and order when a server leaves the
        index out (Gemini) or reuses it for every call (Ollama).
        """
        index = tc.index
        key = self._by_index.get(index) if index is not None else self._last
        slot = self.calls.get(key) if key is not None else None
        if slot is not None and tc.id and slot[3] and tc.id != slot[0]:
            slot = None  # a new call that reuses the index
        if slot is None:
            key = len(self.calls)
            slot = self.calls[key] = [tc.id or f"call_{secrets.token_hex(8)}", "", [], bool(tc.id)]
            if index is not None:
                self._by_index[index] = key
        elif tc.id and not slot[3]:
            slot[0], slot[3] = tc.id, True  # the server's id arrived late: the tool message must use it
        self._last = key
        return slot

    def finish(self) -> list[Delta]:
        if self.markup is None:
            return []
        return self._pieces(self.markup.close())

    def reply(self) -> ChatReply:
        calls = [ToolCall(cid, name, "".join(args)) for _, (cid, name, args, _) in sorted(self.calls.items())]
        calls += self.inline_calls
        finish = self.finish_reasons[-1] if self.finish_reasons else None
        if self.inline_calls and finish == "stop":
            finish = "tool_calls"
        return ChatReply(
            "".join(self.text),
            tool_calls=calls,
            reasoning="".join(self.reasoning),
            finish_reason=finish,
            model=self.model,
            usage=self.usage,
            id=self.id,
        )


def _reasoning_of(delta: t.Any) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = getattr(delta, key, None)
        if value is None:
            extra = getattr(delta, "model_extra", None) or {}
            value = extra.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _usage_of(usage: t.Any) -> Usage:
    details = getattr(usage, "completion_tokens_details", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        reasoning_tokens=getattr(details, "reasoning_tokens", None) if details is not None else None,
        cached_input_tokens=getattr(prompt_details, "cached_tokens", None) if prompt_details is not None else None,
    )


def _parse_markup(block: Markup) -> ToolCall | None:
    """Read ``{"name": ..., "arguments"|"parameters": {...}}`` from a markup block."""
    body = block.body.strip()
    if body.startswith("<|plugin|>"):
        body = body[len("<|plugin|>") :].strip()
    call_id = f"call_{secrets.token_hex(8)}"
    try:
        data = json.loads(body)
    except ValueError:
        return ToolCall(call_id, "", body)  # the agent reports the bad call back to the model
    if not isinstance(data, dict):
        return ToolCall(call_id, "", body)
    args = data.get("arguments", data.get("parameters", {}))
    return ToolCall(call_id, str(data.get("name", "")), args if isinstance(args, str) else json.dumps(args))


def _abort_response(response: t.Any) -> None:
    """Close an HTTP response from another thread, waking a read blocked on its socket."""
    try:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            return
    except (OSError, AttributeError):
        pass
    try:
        response.close()
    except Exception:  # pragma: no cover - best effort from another thread  # noqa: S110 - best effort: nothing useful to report here
        pass


class OpenAIChat(ModuleBase):
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (sync client).

    Args:
        model: model id; default ``OPENAI_MODEL``, else ``gpt-4o-mini``.
        base_url: endpoint; default ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: key; default ``OPENAI_API_KEY`` (a placeholder is used for
            servers that need none when a ``base_url`` is set).
        system: a system prompt put first in every request made from a string.
        stream: stream the answer (default). ``False`` makes one
            non-streaming request and emits the text as a single chunk.
        keep_history: remember the conversation across calls (``self.history``).
        tool_markup: find tool calls written inline in the text: ``"auto"``
            (Hermes/Qwen ``<tool_call>`` and InternLM markers), ``"hermes"``,
            ``"internlm"``, or ``None``. Applied only when tools are offered.
        include_usage: ask for a usage chunk (``stream_options.include_usage``).
        record_content: put the messages and the reply on the run's attributes.
        timeout: the call's time budget, in seconds: the model must start answering
            within it, retries and the waits between them included; while the answer
            streams, the longest silence allowed between two chunks. A per-call
            ``timeout=`` replaces it for that call. See :mod:`streamtap.llm.budget`.
        max_retries: retries (inside ``timeout``) of connection errors, timeouts,
            408/409/429/5xx, honouring ``Retry-After``. The ``openai`` client's own
            retries are off: they would multiply the budget.
        name: the run name (default ``"OpenAIChat"``).
        client_options: more keyword arguments for the ``openai`` client.
        tags, metadata: the runs' tags and metadata (as every module takes them).
            OpenAI's own request ``metadata`` goes per call (``llm(x, metadata={...})``)
            or in ``extra_body``.
        **params: request parameters for every call (``temperature``, ``max_tokens``,
            ``extra_headers``, ``extra_body``...): those of the installed client's
            ``chat.completions.create``. Any other keyword is refused here, with the
            accepted ones, rather than failing on the first request.

    Example::

        llm = OpenAIChat(model="gpt-4o-mini")
        for piece in llm.stream("What color is the sky?").text():
            print(piece, end="|")
    """

    kind = "llm"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        system: str | None = None,
        stream: bool = True,
        keep_history: bool = False,
        tool_markup: str | None = "auto",
        include_usage: bool = True,
        record_content: bool = False,
        timeout: float = 60.0,
        max_retries: int = 2,
        name: str | None = None,
        client_options: t.Mapping[str, t.Any] | None = None,
        **params: t.Any,
    ) -> None:
        self.model = model or os.environ.get("OPENAI_MODEL") or _DEFAULT_MODEL
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if key is None and (base_url or os.environ.get("OPENAI_BASE_URL")):
            key = "not-needed"
        self.api_key = key
        self.system = system
        self.streaming = stream
        self.keep_history = keep_history
        self.markers = markers_for(tool_markup) if tool_markup else None
        self.include_usage = include_usage
        self.record_content = record_content
        self.timeout = timeout
        self.max_retries = max_retries
        Budget(timeout, max_retries)  # refuse a bad timeout or max_retries now, naming the value
        self.client_options = dict(client_options or {})
        _check_params(type(self).__name__, params)
        self.params = params
        self.history: list[Message] = []
        self._history_lock = threading.Lock()
        self._client: t.Any = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[t.Any, t.Any]] = (
            weakref.WeakKeyDictionary()
        )
        if name:
            self.name = name
        parsed = urllib.parse.urlsplit(self.base_url)
        self.server_address = parsed.hostname or ""
        self.server_port = parsed.port or (443 if parsed.scheme == "https" else 80)

    # -- clients -------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, t.Any]:
        if self.api_key is None:
            msg = (
                f"{self._run_name()}: no API key. Pass api_key=..., set OPENAI_API_KEY, or set base_url / "
                "OPENAI_BASE_URL for a server that needs no key."
            )
            raise UsageError(msg)
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "timeout": self.timeout,
            **self.client_options,
            # the module retries inside its time budget (llm/budget.py); the client's own retries would multiply it
            "max_retries": 0,
        }

    @property
    def client(self) -> t.Any:
        """The ``openai.OpenAI`` client (made on first use, shared by threads)."""
        if self._client is None:
            self._client = _import_openai().OpenAI(**self._client_kwargs())
        return self._client

    async def async_client(self) -> t.Any:
        """The ``openai.AsyncOpenAI`` client of the running event loop (one per loop).

        It is closed on its own loop when that loop shuts down (``asyncio.run``
        finalises async generators, and a keeper generator holds the client),
        so no connection outlives its loop.
        """
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(loop)
        if entry is None:
            client = _import_openai().AsyncOpenAI(**self._client_kwargs())
            keeper = _keep_until_loop_closes(client)
            await keeper.__anext__()
            entry = self._async_clients[loop] = (client, keeper)
        return entry[0]

    def close(self) -> None:
        """Close the synchronous client's connections (async clients close with their loops)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- requests ------------------------------------------------------------

    def messages_for(
        self, prompt: str | t.Sequence[Message], history: t.Sequence[Message] | None = None
    ) -> list[Message]:
        """Build the request messages for a prompt (a string, or a list of messages used as they are)."""
        msgs = build_messages(prompt, self.system, lambda: self._history_for(history))
        if msgs is not None:
            return msgs
        msg = f"{self._run_name()} takes a prompt string or a list of message dicts, not {type(prompt).__name__}: {prompt!r:.80}"
        raise UsageError(msg)

    def _history_for(self, history: t.Sequence[Message] | None) -> list[Message]:
        """The history to put before a prompt: the one given, else the kept one (``keep_history``)."""
        if history is not None:
            return list(history)
        if self.keep_history:
            with self._history_lock:
                return list(self.history)
        return []

    def _request(
        self,
        prompt: t.Any,
        tools: t.Sequence[t.Any] | None,
        history: t.Sequence[Message] | None,
        params: dict[str, t.Any],
    ) -> tuple[dict[str, t.Any], MarkupFilter | None]:
        messages = self.messages_for(prompt, history)
        kwargs: dict[str, t.Any] = {"model": self.model, "messages": messages, **self.params, **params}
        schemas = [_tool_schema(x) for x in tools] if tools else []
        if schemas:
            kwargs["tools"] = schemas
        if self.streaming:
            kwargs["stream"] = True
            if self.include_usage:
                kwargs["stream_options"] = {"include_usage": True}
        ctx = current()
        if ctx is not None:
            attrs: dict[str, t.Any] = {
                "provider": "openai",
                "operation": "chat",
                "request_model": kwargs["model"],
                "server_address": self.server_address,
                "server_port": self.server_port,
                "stream": self.streaming,
            }
            for key in _SAMPLING:
                if kwargs.get(key) is not None:
                    attrs[f"request_{key}"] = kwargs[key]
            if self.record_content:
                attrs["input_messages"] = messages
            ctx.annotate(**attrs)
        markup = MarkupFilter(self.markers) if self.markers and schemas else None
        return kwargs, markup

    def _finish(self, ctx: RunContext, acc: _Accumulator, prompt: t.Any, history: t.Any) -> ChatReply:
        reply = acc.reply()
        attrs: dict[str, t.Any] = {
            "response_model": reply.model,
            "response_id": reply.id,
            "finish_reasons": list(acc.finish_reasons) or ([reply.finish_reason] if reply.finish_reason else []),
            "tool_call_count": len(reply.tool_calls),
        }
        if self.record_content:
            attrs["output_messages"] = [reply.to_message()]
        ctx.annotate(**attrs)
        if reply.usage is not None:
            ctx.add_usage(reply.usage)
        if self.keep_history and history is None and isinstance(prompt, str):
            with self._history_lock:
                self.history.append({"role": "user", "content": prompt})
                self.history.append(reply.to_message())
        return reply

    def _error(self, exc: BaseException, acc: _Accumulator | None, model: str, budget: Budget) -> BaseException:
        """What to raise for ``exc``: :class:`RunCancelled` if the run was cancelled, else an :class:`LLMError`.

        ``acc`` is the stream's accumulator once the response has started (``None`` before).
        """
        ctx = current()
        if ctx is not None and ctx.cancelled:
            return RunCancelled(ctx.token.reason or "the model call was cancelled")
        return _describe(exc, _Failure(self.base_url, model, budget, acc, self.api_key))

    def _cut(self, acc: _Accumulator, model: str, budget: Budget) -> LLMError:
        """The error of a stream that ended with no finish reason: the answer is incomplete."""
        failure = _Failure(self.base_url, model, budget, acc, self.api_key)
        msg = (
            f"The model stream ended after {acc.chunks} chunks without a finish reason or [DONE] (model {model!r}; "
            f"{budget.summary()}): the answer is incomplete. The server or a proxy closed the stream early; "
            "check their logs, or retry."
        )
        return failure.error(msg, "stream_cut")

    def _create(
        self, ctx: RunContext, create: t.Callable[..., t.Any], kwargs: dict[str, t.Any], budget: Budget
    ) -> t.Any:
        """Make the request, retrying inside the budget; a cancel stops the wait at once."""
        errors = _errors()
        while True:
            kwargs["timeout"] = budget.start_attempt()
            try:
                return _create_cancellable(ctx, create, kwargs)
            except errors as exc:
                delay = _retry_delay(exc, budget)
                if delay is None or ctx.cancelled:
                    raise self._error(exc, None, kwargs["model"], budget) from exc
            _wait(ctx, delay)

    async def _acreate(self, create: t.Callable[..., t.Any], kwargs: dict[str, t.Any], budget: Budget) -> t.Any:
        """:meth:`_create` for the async client (cancelling the task stops the wait)."""
        errors = _errors()
        while True:
            kwargs["timeout"] = budget.start_attempt()
            try:
                return await create(**kwargs)
            except errors as exc:
                delay = _retry_delay(exc, budget)
                if delay is None:
                    raise self._error(exc, None, kwargs["model"], budget) from exc
            await asyncio.sleep(delay)

    # -- forward -------------------------------------------------------------

    def forward(
        self,
        prompt: str | t.Sequence[Message],
        *,
        tools: t.Sequence[t.Any] | None = None,
        history: t.Sequence[Message] | None = None,
        **params: t.Any,
    ) -> t.Generator[Delta, None, ChatReply]:
        """Ask the model; stream its answer; return a :class:`ChatReply`.

        Args:
            prompt: the user's message, or the full list of messages.
            tools: tools to offer (``@tool`` functions or OpenAI tool dicts).
            history: earlier messages to put before the prompt (overrides ``keep_history``).
            **params: request parameters for this call (``temperature``, ``extra_headers``...).
        """
        ctx = current()
        assert ctx is not None
        kwargs, markup = self._request(prompt, tools, history, params)
        errors = _errors()
        client = self.client
        budget = self._budget(kwargs)  # after the client is made: the budget is the model's, not the import's
        ctx.raise_if_cancelled()
        acc = _Accumulator(ctx, markup, time.perf_counter())
        if not self.streaming:
            completion = self._create(ctx, client.chat.completions.create, kwargs, budget)
            yield from _feed_completion(acc, completion)
            return self._finish(ctx, acc, prompt, history)
        stream = self._create(ctx, client.chat.completions.create, kwargs, budget)
        remove = ctx.on_cancel(lambda: _abort_response(stream.response))
        try:
            iterator = iter(stream)
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    break
                except errors as exc:
                    if _finished(ctx, acc):
                        break
                    raise self._error(exc, acc, kwargs["model"], budget) from exc
                yield from acc.feed(chunk)
            self._check_end(ctx, acc, kwargs["model"], budget)
            yield from acc.finish()
        finally:
            remove()
            stream.close()
        return self._finish(ctx, acc, prompt, history)

    def _budget(self, kwargs: dict[str, t.Any]) -> Budget:
        """The call's time budget: ``timeout`` (or a ``timeout=`` given to this call) and ``max_retries``."""
        return Budget(kwargs.pop("timeout", self.timeout), self.max_retries)

    def _check_end(self, ctx: RunContext, acc: _Accumulator, model: str, budget: Budget) -> None:
        """After the stream ended, however it ended: a cancelled run ends cancelled; no finish reason: cut.

        A close-delimited body (HTTP/1.0 style) closed by a cancel, a proxy or a
        crashing server looks to the client like a normal end of the body.
        """
        ctx.raise_if_cancelled()
        if not acc.finish_reasons:
            raise self._cut(acc, model, budget)


@functools.lru_cache(maxsize=1)
def _waiting_pool() -> concurrent.futures.ThreadPoolExecutor:
    # Its own pool: requests waiting here must never queue behind the runs that wait for them.
    return concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="streamtap-http")


def _create_cancellable(ctx: RunContext, create: t.Callable[..., t.Any], kwargs: dict[str, t.Any]) -> t.Any:
    """``create(**kwargs)``, but a cancel stops the wait at once, even before the server's first byte.

    The synchronous client cannot be interrupted while it waits for response
    headers, so a cancellable run waits for it in another thread and abandons
    it on cancel; a response that arrives later is closed straight away. A
    call that nobody can cancel is made directly.
    """
    if not ctx.cancellable:
        return create(**kwargs)
    cancelled: concurrent.futures.Future[None] = concurrent.futures.Future()

    def settle() -> None:
        if not cancelled.done():
            cancelled.set_result(None)

    remove = ctx.on_cancel(settle)
    try:
        fut = _waiting_pool().submit(functools.partial(contextvars.copy_context().run, create, **kwargs))
        concurrent.futures.wait({fut, cancelled}, return_when=concurrent.futures.FIRST_COMPLETED)
        if not fut.done():
            fut.add_done_callback(_close_late)
            ctx.raise_if_cancelled()
        return fut.result()
    finally:
        remove()


def _close_late(fut: concurrent.futures.Future[t.Any]) -> None:
    """Close a response that arrived after its run was cancelled."""
    if fut.cancelled() or fut.exception() is not None:
        return
    close = getattr(fut.result(), "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: S110 - best effort: nothing useful to report here
            pass


class AsyncOpenAIChat(OpenAIChat):
    """:class:`OpenAIChat` on the async client: ``await llm.acall(x)``, ``async for e in llm.astream(x)``.

    Same arguments as :class:`OpenAIChat`. Called synchronously (``llm(x)``)
    it runs on a private event loop. Cancelling the task closes the stream.
    """

    async def forward(  # type: ignore[override]
        self,
        prompt: str | t.Sequence[Message],
        *,
        tools: t.Sequence[t.Any] | None = None,
        history: t.Sequence[Message] | None = None,
        **params: t.Any,
    ) -> ChatReply:
        """Ask the model; stream its answer as chunks of this run; return a :class:`ChatReply`."""
        ctx = current()
        assert ctx is not None
        kwargs, markup = self._request(prompt, tools, history, params)
        errors = _errors()
        client = await self.async_client()
        budget = self._budget(kwargs)
        ctx.raise_if_cancelled()
        acc = _Accumulator(ctx, markup, time.perf_counter())
        if not self.streaming:
            completion = await self._acreate(client.chat.completions.create, kwargs, budget)
            await _emit(ctx, _feed_completion(acc, completion))
            return self._finish(ctx, acc, prompt, history)
        stream = await self._acreate(client.chat.completions.create, kwargs, budget)
        try:
            iterator = stream.__aiter__()
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except errors as exc:
                    if _finished(ctx, acc):
                        break
                    raise self._error(exc, acc, kwargs["model"], budget) from exc
                await _emit(ctx, acc.feed(chunk))
            self._check_end(ctx, acc, kwargs["model"], budget)
            await _emit(ctx, acc.finish())
        finally:
            await stream.close()
        return self._finish(ctx, acc, prompt, history)


async def _emit(ctx: RunContext, deltas: list[Delta]) -> None:
    """Stream deltas as chunks of the run, then wait while a stream on this loop is full (back-pressure)."""
    if not deltas:
        return
    for d in deltas:
        ctx.chunk(d.delta, d.channel, d.call_id)
    await ctx.wait_for_room()


async def _keep_until_loop_closes(client: t.Any) -> t.AsyncGenerator[None, None]:
    """Yield once; when the loop finalises this generator at shutdown, close the client on that loop."""
    try:
        yield
    finally:
        await client.close()


def _feed_completion(acc: _Accumulator, completion: t.Any) -> list[Delta]:
    """Turn a non-streaming completion into the same chunks a stream would give."""
    acc.model = completion.model
    acc.id = completion.id
    if completion.usage is not None:
        acc.usage = _usage_of(completion.usage)
    out: list[Delta] = []
    if not completion.choices:
        return out
    choice = completion.choices[0]
    message = choice.message
    acc._content(message, out)
    for index, tc in enumerate(message.tool_calls or ()):
        fn = getattr(tc, "function", None)
        if fn is None:
            continue
        acc.calls[index] = [tc.id, fn.name, [fn.arguments or ""]]
        out.append(Delta(fn.arguments or "", "tool_args", tc.id))
    if choice.finish_reason:
        acc.finish_reasons.append(choice.finish_reason)
    out.extend(acc.finish())
    return out


def _finished(ctx: RunContext, acc: _Accumulator) -> bool:
    """Whether a stream that broke had already given its finish reason.

    The answer is then complete, only its tail (a usage chunk, ``[DONE]``) is
    lost, so the call succeeds.
    """
    return bool(acc.finish_reasons) and not ctx.cancelled


def _errors() -> tuple[type[BaseException], ...]:
    """What a model request or stream raises when the server or the network fails."""
    return (_import_openai().OpenAIError, ValueError, OSError)


def _retry_delay(exc: BaseException, budget: Budget) -> float | None:
    """Seconds to wait before retrying a failed request, or ``None`` to give up (see :class:`Budget`)."""
    openai = _import_openai()
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    should = headers.get("x-should-retry") if headers is not None else None
    if should in ("true", "false"):  # the server's own word, as the openai client honours it
        retryable = should == "true"
    elif isinstance(exc, openai.APIStatusError):
        retryable = is_retryable_status(exc.status_code)
    else:
        retryable = isinstance(exc, openai.APIConnectionError)  # timeouts included: the budget decides
    return budget.retry_delay(retryable=retryable, server_wait=retry_after(headers))


def _wait(ctx: RunContext, delay: float) -> None:
    """Sleep ``delay`` seconds between attempts; a cancel wakes it at once (and raises :class:`RunCancelled`)."""
    woken = threading.Event()
    remove = ctx.on_cancel(woken.set)
    try:
        woken.wait(delay)
    finally:
        remove()
    ctx.raise_if_cancelled()


_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>)\]]+", re.IGNORECASE)
_QUOTE_LIMIT = 240


def _seconds(value: float) -> str:
    """``3`` -> ``"3.0"``, ``0.25`` -> ``"0.25"``: a duration as people write it."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.3g}"


def _redactor(api_key: str | None) -> Redactor:
    """The project's redactor, plus the module's own API key (whatever its shape: a server may echo it)."""
    own = [re.escape(api_key)] if api_key and len(api_key) >= 8 else []
    return Redactor(own)


def _safe_url(url: str, redact: Redactor) -> str:
    """``url`` without user info (``user:password@``), secrets in its query redacted."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return redact(urllib.parse.urlunsplit(parts))


def _scrub_exception(exc: BaseException, redact: Redactor) -> None:
    """Redact the messages and bodies along an exception's chain, in place (they may echo the key)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        cur.args = tuple(redact(a) if isinstance(a, str) else a for a in cur.args)
        for name in ("message", "body"):
            value = getattr(cur, name, None)
            if isinstance(value, str | dict | list):
                try:
                    setattr(cur, name, redact.scrub(value))
                except AttributeError:  # pragma: no cover - a read-only attribute: leave it
                    pass
        cur = cur.__cause__ or cur.__context__


class _Failure:
    """What is known about a failed call; makes its :class:`LLMError` (short safe message, redacted detail)."""

    def __init__(
        self, base_url: str, model: str, budget: Budget, acc: _Accumulator | None, api_key: str | None
    ) -> None:
        self.redact = _redactor(api_key)
        self.base_url = _safe_url(base_url, self.redact)
        self.model = model
        self.budget = budget
        self.acc = acc
        self.chunks = acc.chunks if acc is not None else 0

    def quote(self, text: str) -> str:
        """Foreign text (a server's error, a network error) fit for the short message: redacted, no URLs, short."""
        text = " ".join(_URL.sub("[URL]", self.redact(text)).split())
        return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 1] + "\u2026"

    def error(
        self, message: str, reason: str, *, exc: BaseException | None = None, status_code: int | None = None
    ) -> LLMError:
        budget, acc = self.budget, self.acc
        detail: dict[str, t.Any] = {
            "attempts": budget.attempts,
            "elapsed_s": round(budget.elapsed(), 3),
            "timeout_s": budget.timeout,
            "chunks": self.chunks,
        }
        if exc is not None:
            _scrub_exception(exc, self.redact)
            detail["cause"] = self.redact(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
            if status_code is not None:
                detail["upstream"] = self.redact(_server_message(exc))
        partial = acc.reply() if acc is not None and (acc.text or acc.calls or acc.reasoning) else None
        return LLMError(
            message,
            base_url=self.base_url,
            model=self.model,
            status_code=status_code,
            reason=reason,
            partial=partial,
            detail=detail,
        )


def _describe(exc: BaseException, failure: _Failure) -> LLMError:
    """An :class:`LLMError` saying what failed and what to check -- no secret, no URL (those go to ``detail``)."""
    openai = _import_openai()
    model, budget, chunks = failure.model, failure.budget, failure.chunks
    spent = budget.summary()
    started = failure.acc is not None  # the response had started: this is a broken stream
    if isinstance(exc, openai.APITimeoutError):
        if started:
            msg = (
                f"The model server stopped sending after {chunks} chunks: nothing arrived for "
                f"{_seconds(budget.attempt_timeout)} s (model {model!r}; {spent}). The answer is incomplete; "
                "check the server's logs, or raise timeout=."
            )
        else:
            msg = (
                f"The model server did not start answering within the {_seconds(budget.timeout)} s timeout "
                f"(model {model!r}; {spent}). Check that the server is up and that base_url (OPENAI_BASE_URL) "
                "and model (OPENAI_MODEL) are right, or raise timeout=."
            )
        return failure.error(msg, "timeout", exc=exc)
    if isinstance(exc, openai.APIConnectionError):
        if started:
            msg = (
                f"The connection to the model server was cut after {chunks} stream chunks (model {model!r}): "
                f"{failure.quote(_root(exc))}. The answer is incomplete; check the server's logs and any proxy "
                "between you and it."
            )
            return failure.error(msg, "stream_cut", exc=exc)
        msg = (
            f"Could not connect to the model server ({failure.quote(_root(exc))}; {spent}). Check that base_url "
            "(OPENAI_BASE_URL) is right and the server is running and reachable."
        )
        return failure.error(msg, "connection", exc=exc)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = _status_reason(openai, exc, status)
        msg = _STATUS_HINTS[reason].format(status=status, detail=failure.quote(_server_message(exc)), model=model)
        if budget.declined_wait is not None:
            msg += (
                f" It asked to retry after {_seconds(budget.declined_wait)} s, past the {_seconds(budget.timeout)} s "
                "timeout, so the call failed at once."
            )
        return failure.error(f"{msg} ({spent}.)", reason, exc=exc, status_code=status)
    if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
        msg = (
            f"The model server sent a malformed stream chunk after {chunks} good ones (model {model!r}): "
            f"{failure.quote(str(exc))}. The answer is incomplete; check that base_url (OPENAI_BASE_URL) points to "
            "an OpenAI-compatible API."
        )
        return failure.error(msg, "malformed_stream", exc=exc)
    if isinstance(exc, openai.APIError):
        msg = (
            f"The model server reported an error mid-stream for model {model!r}: {failure.quote(str(exc))}. "
            "Check the server's logs."
        )
        return failure.error(msg, "status", exc=exc)
    msg = (
        f"The call to the model server failed (model {model!r}): {type(exc).__name__}: {failure.quote(str(exc))}. "
        "Check base_url (OPENAI_BASE_URL) and the network."
    )
    return failure.error(msg, "connection", exc=exc)


_STATUS_HINTS = {
    "auth": (
        "The model server rejected the API key (HTTP {status}: {detail}). Check api_key / OPENAI_API_KEY, and that "
        "the key belongs to this server."
    ),
    "not_found": (
        "The model server answered 404 for model {model!r} ({detail}). Check model / OPENAI_MODEL, and that "
        "base_url ends with the API root (usually '/v1')."
    ),
    "rate_limit": (
        "The model server rate-limited the request for model {model!r} (HTTP 429: {detail}). Retry later, lower "
        "the concurrency, or raise max_retries and timeout."
    ),
    "server": (
        "The model server failed with HTTP {status} for model {model!r} ({detail}). The server had an error: "
        "check its logs, retry, or check that model (OPENAI_MODEL) is served there."
    ),
    "bad_request": (
        "The model server refused the request for model {model!r} (HTTP {status}: {detail}). Check the model name "
        "and the request parameters."
    ),
}
"""``LLMError.reason`` of an HTTP status error -> its message template."""


def _status_reason(openai: t.Any, exc: BaseException, status: int | None) -> str:
    """The ``LLMError.reason`` of an ``openai.APIStatusError``."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    if isinstance(exc, openai.NotFoundError):
        return "not_found"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit"
    if status is not None and status >= 500:
        return "server"
    return "bad_request"


def _server_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, dict) else None
        if isinstance(message, str):
            return message
        message = body.get("message")
        if isinstance(message, str):
            return message
    return str(getattr(exc, "message", exc))


def _root(exc: BaseException) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause) or type(cause).__name__
    return text if cause is exc else f"{type(cause).__name__}: {text}"
