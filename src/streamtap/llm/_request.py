"""Building a chat-completions request: the client import, its known parameters, tool schemas."""

from __future__ import annotations

import functools
import inspect
import typing as t

from ..exceptions import MissingDependencyError, UsageError


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


def _tool_schema(tool: t.Any) -> dict[str, t.Any]:
    if isinstance(tool, dict):
        return tool
    to_openai = getattr(tool, "to_openai", None)
    if callable(to_openai):
        return t.cast("dict[str, t.Any]", to_openai())
    msg = f"A tool must be an OpenAI tool dict or have a to_openai() method (like a @tool); got {tool!r}."
    raise UsageError(msg)
