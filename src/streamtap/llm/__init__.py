"""Language models for streamtap.

* :class:`~streamtap.llm.openai.OpenAIChat` -- a chat module on the ``openai``
  client (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, LM Studio...).
  Needs the ``openai`` extra: ``pip install 'streamtap[openai]'``.
* :class:`~streamtap.llm.markup.MarkupFilter` -- the hold-back filter that
  keeps inline tool-call markup out of user-facing text.

The embedded OpenAI-compatible test server lives in :mod:`streamtap.testing`
(``from streamtap.testing import FakeOpenAI, model_endpoint``).

Nothing is imported from the ``openai`` package until a chat module is made.
"""

from __future__ import annotations

import typing as t

from .._lazy import lazy_getattr

__all__ = ["AsyncOpenAIChat", "ChatReply", "LLMError", "MarkupFilter", "OpenAIChat", "ToolCall"]

if t.TYPE_CHECKING:  # pragma: no cover
    from .errors import LLMError
    from .markup import MarkupFilter
    from .openai import AsyncOpenAIChat, ChatReply, OpenAIChat, ToolCall

_LAZY = {
    "AsyncOpenAIChat": ".openai",
    "ChatReply": ".openai",
    "ToolCall": ".openai",
    "LLMError": ".errors",
    "MarkupFilter": ".markup",
    "OpenAIChat": ".openai",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
