"""A function-call agent: the model asks for tools, the agent runs them, until the model answers.

::

    from streamtap.agents import FunctionCallAgent
    from streamtap.llm.openai import OpenAIChat

    agent = FunctionCallAgent(OpenAIChat(), [get_current_weather, get_n_day_weather_forecast])
    for event in agent.stream("What's the weather like today in celsius in Tokyo and Paris?"):
        ...

What a caller sees on the agent's stream:

* the model's user-facing text, live, as ``text`` chunks of the model's runs
  (the agent never re-yields them; inline tool-call markup never gets there);
* for every tool call a :class:`~streamtap.events.Tool` event on the agent's
  run, ``requested`` (with the arguments) and then ``result`` or ``error``;
* the tool's execution as a child run of kind ``tool``;
* the final answer as the agent's output.

Several tool calls in one model turn run concurrently, in threads that keep
the run context. Bad arguments, an unknown tool or a tool that raises produce
a ``Tool`` ``error`` event and an error message back to the model, which can
correct itself; the agent goes on. After ``max_steps`` model turns that still
ask for tools the run fails with :class:`AgentStepLimitError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import typing as t

from ._messages import build_messages
from .context import Executor, RunContext, current
from .events import to_jsonable
from .exceptions import RunCancelled, StreamtapError, UsageError
from .module import ModuleBase
from .tools import FunctionTool, ToolRegistry

__all__ = ["AgentStepLimitError", "AsyncFunctionCallAgent", "FunctionCallAgent"]

Message = dict[str, t.Any]


class AgentStepLimitError(StreamtapError):
    """The agent used all its model turns and the model still asked for tools."""

    def __init__(self, agent: str, max_steps: int) -> None:
        self.max_steps = max_steps
        super().__init__(
            f"Agent {agent!r} stopped after {max_steps} model turns that all asked for tools, without a final answer. "
            "Raise max_steps, or check that the tools' results answer what the model asks."
        )


class _Chat(t.Protocol):
    def __call__(self, prompt: t.Any, *, tools: t.Any = ..., **params: t.Any) -> t.Any: ...


def _result_text(result: t.Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(to_jsonable(result), ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - to_jsonable makes everything serialisable
        return str(result)


class FunctionCallAgent(ModuleBase):
    """Answer with the help of tools, streaming the model's text live.

    Args:
        llm: a chat module such as :class:`~streamtap.llm.openai.OpenAIChat`:
            called as ``llm(messages, tools=[...])`` it returns a reply with
            ``tool_calls`` and ``to_message()``.
        tools: a :class:`~streamtap.tools.ToolRegistry`, or tools / plain functions.
        max_steps: model turns at most.
        system: a system prompt (default: the llm's own).
        max_workers: threads at most for the tool calls of one model turn.
        name: the run name.

    Example::

        agent = FunctionCallAgent(llm, [get_current_weather])
        answer = agent("What's the weather in Tokyo?")
    """

    kind = "agent"

    def __init__(
        self,
        llm: _Chat,
        tools: ToolRegistry | t.Iterable[FunctionTool | t.Callable[..., t.Any]],
        *,
        max_steps: int = 5,
        system: str | None = None,
        max_workers: int = 8,
        name: str | None = None,
    ) -> None:
        if max_steps < 1:
            msg = f"max_steps must be at least 1, not {max_steps!r}."
            raise UsageError(msg)
        self.llm = llm
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.max_steps = max_steps
        self.system = system
        self.max_workers = max_workers
        if name:
            self.name = name

    def _messages(self, query: str | t.Sequence[Message], history: t.Sequence[Message] | None) -> list[Message]:
        system = self.system if self.system is not None else getattr(self.llm, "system", None)
        msgs = build_messages(query, system, lambda: history or ())
        if msgs is not None:
            return msgs
        msg = f"{self._run_name()} takes a question (str) or a list of message dicts, not {type(query).__name__}."
        raise UsageError(msg)

    def forward(self, query: str | t.Sequence[Message], *, history: t.Sequence[Message] | None = None) -> str:
        """Run the tool loop for ``query``; return the model's final answer.

        Args:
            query: the user's question, or a full message list.
            history: earlier messages to put before the question.
        """
        ctx, messages, schemas = self._begin(query, history)
        for steps in range(1, self.max_steps + 1):
            reply = self.llm(messages, tools=schemas)
            calls = _take_reply(messages, reply)
            if not calls:
                return _answer(ctx, steps, reply)
            messages.extend(self._run_tools(ctx, calls))
        raise self._step_limit(ctx)

    def _begin(
        self, query: str | t.Sequence[Message], history: t.Sequence[Message] | None
    ) -> tuple[RunContext, list[Message], list[dict[str, t.Any]]]:
        """The run's context, the first request's messages and the tool schemas."""
        ctx = current()
        assert ctx is not None
        return ctx, self._messages(query, history), self.tools.schemas()

    def _step_limit(self, ctx: RunContext) -> AgentStepLimitError:
        """Annotate the run with its steps; the error to raise when the model still wants tools."""
        ctx.annotate(steps=self.max_steps)
        return AgentStepLimitError(self._run_name(), self.max_steps)

    # -- tools ---------------------------------------------------------------

    def _prepare(self, ctx: RunContext, call: t.Any) -> tuple[FunctionTool, dict[str, t.Any]] | str:
        """Emit ``requested``; return the tool and its arguments, or an error message for the model."""
        try:
            shown: t.Any = json.loads(call.arguments) if call.arguments else {}
        except ValueError:
            shown = call.arguments
        ctx.tool(call.id, call.name, "requested", arguments=shown)
        try:
            found = self.tools.get(call.name)
            return found, found.validate(call.arguments)
        except (LookupError, ValueError, TypeError) as exc:
            ctx.tool(call.id, call.name, "error", error=exc)
            return f"Error: {exc}"

    def _execute(self, ctx: RunContext, call: t.Any, found: FunctionTool, args: dict[str, t.Any]) -> str:
        try:
            result = found(**args)
        except (RunCancelled, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            _reraise_pause(exc)
            return _tool_failed(ctx, call, exc)
        ctx.raise_if_cancelled()  # a tool that finished after the agent was cancelled reports nothing
        return _tool_done(ctx, call, result)

    def _run_tools(self, ctx: RunContext, calls: t.Sequence[t.Any]) -> list[Message]:
        prepared = [self._prepare(ctx, c) for c in calls]
        outputs: list[str] = [p if isinstance(p, str) else "" for p in prepared]
        jobs = [(i, c, p) for i, (c, p) in enumerate(zip(calls, prepared)) if not isinstance(p, str)]
        if len(jobs) == 1:
            i, c, (found, args) = jobs[0]
            outputs[i] = self._execute(ctx, c, found, args)
        elif jobs:
            outputs_by_index = self._parallel(ctx, jobs)
            for i, text in outputs_by_index.items():
                outputs[i] = text
        return _tool_messages(calls, outputs)

    def _parallel(self, ctx: RunContext, jobs: list[tuple[int, t.Any, t.Any]]) -> dict[int, str]:
        cancelled: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_cancel() -> None:
            if not cancelled.done():
                cancelled.set_result(None)

        remove = ctx.on_cancel(on_cancel)
        pool = Executor(max_workers=min(self.max_workers, len(jobs)), thread_name_prefix="streamtap-tool")
        try:
            futures = {pool.submit(self._execute, ctx, c, found, args): i for i, c, (found, args) in jobs}
            pending: set[concurrent.futures.Future[t.Any]] = set(futures)
            while pending:
                done, _ = concurrent.futures.wait(pending | {cancelled}, return_when=concurrent.futures.FIRST_COMPLETED)
                if cancelled in done:
                    ctx.raise_if_cancelled()
                pending -= done
            return {futures[f]: f.result() for f in futures}
        finally:
            remove()
            # Wait for tools in flight even when cancelled: they stop at their next chunk or
            # raise_if_cancelled(), and their runs end before the agent's (no thread left behind).
            pool.shutdown(wait=True, cancel_futures=True)


class AsyncFunctionCallAgent(FunctionCallAgent):
    """:class:`FunctionCallAgent` for async code: the model is awaited, the tool calls of a turn run as tasks.

    Use it with :class:`~streamtap.llm.openai.AsyncOpenAIChat` (any chat
    module works: ``llm.acall`` runs a synchronous one in a thread).
    Synchronous tools run in the SDK's thread pool, async tools on the loop;
    cancelling the task cancels the model call and the tools in flight.
    """

    async def forward(  # type: ignore[override]
        self, query: str | t.Sequence[Message], *, history: t.Sequence[Message] | None = None
    ) -> str:
        """Run the tool loop for ``query``; return the model's final answer."""
        ctx, messages, schemas = self._begin(query, history)
        for steps in range(1, self.max_steps + 1):
            reply = await t.cast(t.Any, self.llm).acall(messages, tools=schemas)
            calls = _take_reply(messages, reply)
            if not calls:
                return _answer(ctx, steps, reply)
            prepared = [self._prepare(ctx, c) for c in calls]
            outputs = await asyncio.gather(*(self._aexecute(ctx, c, p) for c, p in zip(calls, prepared)))
            messages.extend(_tool_messages(calls, outputs))
        raise self._step_limit(ctx)

    async def _aexecute(
        self, ctx: RunContext, call: t.Any, prepared: tuple[FunctionTool, dict[str, t.Any]] | str
    ) -> str:
        if isinstance(prepared, str):
            return prepared
        found, args = prepared
        try:
            result = await found.acall(**args)
        except (RunCancelled, asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            _reraise_pause(exc)
            return _tool_failed(ctx, call, exc)
        ctx.raise_if_cancelled()
        return _tool_done(ctx, call, result)


def _answer(ctx: RunContext, steps: int, reply: t.Any) -> str:
    """Annotate the run with its steps; the final answer."""
    ctx.annotate(steps=steps)
    return str(reply)


def _take_reply(messages: list[Message], reply: t.Any) -> tuple[t.Any, ...]:
    """Append the model's reply to ``messages``; return the tool calls it asks for."""
    to_message = getattr(reply, "to_message", None)
    messages.append(to_message() if callable(to_message) else {"role": "assistant", "content": str(reply)})
    return tuple(getattr(reply, "tool_calls", ()) or ())


def _tool_messages(calls: t.Sequence[t.Any], outputs: t.Sequence[str]) -> list[Message]:
    """The ``tool`` messages answering ``calls`` with ``outputs``."""
    return [{"role": "tool", "tool_call_id": c.id, "content": out} for c, out in zip(calls, outputs)]


def _reraise_pause(exc: Exception) -> None:
    """A tool that calls ``interrupt()`` pauses the agent too: that is no tool failure."""
    if getattr(type(exc), "__streamtap_status__", None) == "interrupted":
        raise exc


def _tool_failed(ctx: RunContext, call: t.Any, exc: Exception) -> str:
    """Emit the tool call's ``error``; return the error text for the model."""
    ctx.tool(call.id, call.name, "error", error=exc)
    return f"Error: the tool {call.name!r} failed: {type(exc).__name__}: {exc}"


def _tool_done(ctx: RunContext, call: t.Any, result: t.Any) -> str:
    """Emit the tool call's ``result``; return its text for the model."""
    ctx.tool(call.id, call.name, "result", result=result)
    return _result_text(result)
