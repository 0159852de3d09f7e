"""What a chat model answers: a :class:`ChatReply` (the text, a ``str``) and the complete :class:`ToolCall` objects it carries."""

from __future__ import annotations

import typing as t

from ..events import Usage

__all__ = ["ChatReply", "ToolCall"]


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
