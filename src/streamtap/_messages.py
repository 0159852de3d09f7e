"""Chat message lists: the one place that turns a prompt into the messages of a request."""

from __future__ import annotations

import typing as t

__all__ = ["build_messages"]


def build_messages(
    prompt: t.Any, system: str | None, history: t.Callable[[], t.Iterable[dict[str, t.Any]]]
) -> list[dict[str, t.Any]] | None:
    """The request messages for ``prompt``, or ``None`` when it is neither a string nor a list of message dicts.

    Args:
        prompt: a user message (``str``), or a full list of message dicts (copied as they are).
        system: the system message put first for a string prompt (none when empty).
        history: called (only for a string prompt) for the messages to put between
            the system message and the user message.
    """
    if isinstance(prompt, str):
        msgs: list[dict[str, t.Any]] = []
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.extend(history())
        msgs.append({"role": "user", "content": prompt})
        return msgs
    if isinstance(prompt, t.Sequence) and all(isinstance(m, dict) for m in prompt):
        return [dict(m) for m in prompt]
    return None
