"""The conversation id that runs started in a block carry (``gen_ai.conversation.id``)."""

from __future__ import annotations

import contextlib
import typing as t
from contextvars import ContextVar

__all__ = ["conversation", "current_conversation"]

_conversation: ContextVar[str | None] = ContextVar("streamtap_conversation_id", default=None)


@contextlib.contextmanager
def conversation(conversation_id: str | None) -> t.Iterator[None]:
    """Runs started in the block -- and every run below them -- carry ``gen_ai.conversation.id``.

    The web app wraps each chat request in it with the chat id. A module's own
    ``metadata={"conversation_id": ...}`` takes precedence for its runs.
    """
    token = _conversation.set(conversation_id)
    try:
        yield
    finally:
        _conversation.reset(token)


def current_conversation() -> str | None:
    """The conversation id set by the innermost :func:`conversation` block here, or ``None``."""
    return _conversation.get()
