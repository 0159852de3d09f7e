"""A chat module that serves the model answers of a recording, so a run can be re-run offline.

::

    from streamtap.llm.replay import ReplayChat
    from streamtap.testing import capture_events, first_divergence, replay

    with capture_events() as events:
        weather_agent(llm=ReplayChat("weather.jsonl"))(QUERY)
    print(first_divergence(replay("weather.jsonl"), events))   # None: the run is reproduced

The n-th call gets the n-th recorded model run's answer: its chunks (text,
reasoning, tool-call arguments, with their call ids) are streamed again as
chunks of the new run, its usage and annotations recorded again, and a
:class:`~streamtap.llm.openai.ChatReply` returned with the tool calls the
recorded agent acted on. The agent, its tools and everything else run for
real: change a tool, and :func:`~streamtap.testing.first_divergence` tells
where the new run departs from the recording.
"""

from __future__ import annotations

import json
import os
import threading
import typing as t

from ..context import current
from ..events import Chunk, End, Event, Start, Tool, Usage
from ..exceptions import StreamtapError
from ..module import ModuleBase
from ..recording import Recording, as_events, read_recording
from .openai import ChatReply, ToolCall

__all__ = ["RecordedAnswer", "ReplayChat", "ReplayExhaustedError"]


class ReplayExhaustedError(StreamtapError):
    """The new run asked the model more often than the recording did: it diverged."""


class RecordedAnswer(t.NamedTuple):
    """One recorded model call: what was streamed and what the agent got back."""

    chunks: tuple[Chunk, ...]
    reply: ChatReply
    attributes: t.Mapping[str, t.Any]
    usage: Usage | None


def _answers(events: list[Event]) -> tuple[str | None, str | None, list[RecordedAnswer]]:
    """The recorded model runs of a tree, in start order: (model run name, system prompt, answers)."""
    llm_runs = [e for e in events if isinstance(e, Start) and e.run.kind == "llm"]
    if not llm_runs:
        return None, None, []
    position = {id(e): i for i, e in enumerate(events)}
    answers: list[RecordedAnswer] = []
    for start in llm_runs:
        rid = start.run.run_id
        chunks = tuple(e for e in events if isinstance(e, Chunk) and e.run.run_id == rid)
        end = next((e for e in events if isinstance(e, End) and e.run.run_id == rid), None)
        if end is None:
            continue  # the recording stopped mid-call
        # The calls the model asked for: the parent's `requested` tool events after this run's end.
        after = position[id(end)]
        parent = start.run.parent_id
        calls: list[ToolCall] = []
        raw = {c.call_id: "" for c in chunks if c.channel == "tool_args" and c.call_id}
        for c in chunks:
            if c.channel == "tool_args" and c.call_id:
                raw[c.call_id] += str(c.delta)
        for e in events[after + 1 :]:
            if isinstance(e, Start) and e.run.kind == "llm" and e.run.parent_id == parent:
                break
            if isinstance(e, Tool) and e.run.run_id == parent and e.phase == "requested":
                args = raw.get(e.call_id)
                if args is None:
                    args = e.arguments if isinstance(e.arguments, str) else json.dumps(e.arguments)
                calls.append(ToolCall(e.call_id, e.name, args))
        attrs = dict(end.attributes)
        reasons = attrs.get("finish_reasons") or []
        reasoning = "".join(str(c.delta) for c in chunks if c.channel == "reasoning")
        output = end.output if isinstance(end.output, str) else ""
        reply = ChatReply(
            output,
            tool_calls=calls,
            reasoning=reasoning,
            finish_reason=reasons[0] if reasons else ("tool_calls" if calls else "stop"),
            model=attrs.get("response_model") or attrs.get("request_model"),
            usage=end.usage,
            id=attrs.get("response_id"),
        )
        answers.append(RecordedAnswer(chunks, reply, attrs, end.usage))
    system = _system_of(llm_runs[0].inputs)
    return llm_runs[0].run.name, system, answers


def _system_of(inputs: t.Any) -> str | None:
    prompt = inputs.get("prompt") if isinstance(inputs, dict) else inputs
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict) and prompt[0].get("role") == "system":
        content = prompt[0].get("content")
        return content if isinstance(content, str) else None
    return None


class ReplayChat(ModuleBase):
    """Serves a recording's model answers, one per call, in order (see the module docstring).

    Args:
        recording: a recording file, a :class:`~streamtap.recording.Recording`,
            or the events of one run tree (typed or wire dicts).
        root_id: which root run of the file (default: the first).
        name: the run name (default: the recorded model run's, so that the
            new run's tree matches the recording's).
        system: the system prompt the agent reads from its model (default: the
            recorded first request's system message).

    Raises:
        RecordingError: not a recording, or no such root run.
        UsageError: the recording has no model call to serve.
    """

    kind = "llm"

    def __init__(
        self,
        recording: str | os.PathLike[str] | Recording | t.Iterable[Event | t.Mapping[str, t.Any]],
        *,
        root_id: str | None = None,
        name: str | None = None,
        system: str | None = None,
    ) -> None:
        if isinstance(recording, (str, os.PathLike)):
            recording = read_recording(recording)
        if isinstance(recording, Recording):
            roots = recording.roots()
            events = recording.events(root_id or (roots[0] if roots else None))
        else:
            events = as_events(recording)
        run_name, recorded_system, answers = _answers(events)
        if not answers:
            from ..exceptions import UsageError

            raise UsageError("The recording has no finished model call (no run of kind 'llm') for ReplayChat to serve.")
        self.answers: tuple[RecordedAnswer, ...] = tuple(answers)
        """The recorded answers, in call order."""
        self.name = name or run_name or "ReplayChat"
        self.system = system if system is not None else recorded_system
        self.model = answers[0].reply.model
        self._next = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """How many answers were served."""
        return self._next

    def forward(self, prompt: t.Any, *, tools: t.Sequence[t.Any] | None = None, **params: t.Any) -> ChatReply:
        """Stream the next recorded answer's chunks; return its reply.

        Raises:
            ReplayExhaustedError: every recorded answer was served already.
        """
        with self._lock:
            n = self._next
            if n >= len(self.answers):
                msg = (
                    f"The recording has {len(self.answers)} model calls and the new run asks for call {n + 1}: "
                    "the run diverged from the recording (streamtap.testing.first_divergence says where)."
                )
                raise ReplayExhaustedError(msg)
            self._next = n + 1
        answer = self.answers[n]
        ctx = current()
        assert ctx is not None
        for c in answer.chunks:
            ctx.chunk(c.delta, c.channel, c.call_id)
        if answer.attributes:
            ctx.annotate(**answer.attributes)
        if answer.usage is not None:
            ctx.add_usage(answer.usage)
        return answer.reply
