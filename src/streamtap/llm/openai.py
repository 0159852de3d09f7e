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
import difflib
import inspect
import os
import threading
import time
import typing as t
import urllib.parse
import weakref

from .._messages import build_messages
from ..context import RunContext, current
from ..exceptions import RunCancelled, UsageError
from ..module import Delta, ModuleBase
from ._accumulate import _Accumulator, _feed_completion, _finished
from ._failures import (
    _describe,
    _errors,
    _Failure,
    _retry_delay,
    _wait,
)
from ._http import _abort_response, _create_cancellable
from ._request import _import_openai, _request_params, _tool_schema
from .budget import Budget
from .errors import LLMError
from .markup import MarkupFilter, markers_for
from .reply import ChatReply, ToolCall

__all__ = ["AsyncOpenAIChat", "ChatReply", "OpenAIChat", "ToolCall"]

Message = dict[str, t.Any]
_SAMPLING = ("temperature", "top_p", "max_tokens", "seed", "stop")
_DEFAULT_MODEL = "gpt-4o-mini"


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
