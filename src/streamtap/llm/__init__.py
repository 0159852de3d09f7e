"""Language models for streamtap.

* :class:`~streamtap.llm.openai.OpenAIChat` -- a chat module on the ``openai``
  client (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, LM Studio...).
  Needs the ``openai`` extra: ``pip install 'streamtap[openai]'``.
* :class:`~streamtap.llm.server.FakeOpenAI` -- an embedded, deterministic
  OpenAI-compatible server (real HTTP, real SSE) for tests, examples and the
  demo. Standard library only.
* :class:`~streamtap.llm.markup.MarkupFilter` -- the hold-back filter that
  keeps inline tool-call markup out of user-facing text.

Nothing is imported from the ``openai`` package until a chat module is made.
"""

from __future__ import annotations

import typing as t

from .._lazy import lazy_getattr

__all__ = ["AsyncOpenAIChat", "ChatReply", "FakeOpenAI", "LLMError", "MarkupFilter", "OpenAIChat", "ToolCall"]

if t.TYPE_CHECKING:  # pragma: no cover
    from .errors import LLMError
    from .markup import MarkupFilter
    from .openai import AsyncOpenAIChat, ChatReply, OpenAIChat, ToolCall
    from .server import FakeOpenAI

_LAZY = {
    "AsyncOpenAIChat": ".openai",
    "ChatReply": ".openai",
    "ToolCall": ".openai",
    "FakeOpenAI": ".server",
    "LLMError": ".errors",
    "MarkupFilter": ".markup",
    "OpenAIChat": ".openai",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
