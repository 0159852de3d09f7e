"""What the bridges share: a stand-in module per foreign run, JSON-safe values."""

from __future__ import annotations

import typing as t

from ..events import RunKind
from ..module import ModuleBase

__all__ = ["ForeignRun", "jsonable"]


class ForeignRun(ModuleBase):
    """The module standing for one run of another framework (the sender of its events).

    Never called: bridges start its runs with :meth:`~streamtap.ModuleBase.begin`.
    """

    def __init__(
        self,
        name: str,
        kind: RunKind,
        framework: str,
        tags: tuple[str, ...] = (),
        *,
        model: str | None = None,
        provider: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.tags = tags
        self.metadata = {"framework": framework}
        self.model = model  # read by the tracing subscriber: the span is named "chat {model}"
        self.provider_name = provider


def jsonable(value: t.Any, depth: int = 0) -> t.Any:
    """A JSON-safe copy of ``value``: pydantic models dumped, other objects as ``str``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if depth > 20:
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if hasattr(value, "__next__") or hasattr(value, "__anext__"):
        return f"<{type(value).__name__}>"  # an iterator: str() could consume it
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(), depth + 1)
        except Exception:
            return str(value)
    return str(value)
