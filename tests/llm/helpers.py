"""Helpers of the model-fault tests: chat modules pointed at the misbehaving server, run outcomes."""

from __future__ import annotations

import typing as t

from streamtap.events import End
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat

from .misbehaving import Misbehaving

KEY = "sk-proj-misbehaving0123456789abcdef"
"""The API key the tests send (the ``401`` fault echoes it)."""

PROMPT = "alpha beta gamma delta"
"""The prompt; the misbehaving server streams its words back."""


def chat_for(
    srv: Misbehaving,
    fault: str,
    *,
    kind: t.Literal["sync", "async"] = "sync",
    headers: dict[str, str] | None = None,
    **options: t.Any,
) -> OpenAIChat:
    """A chat module (sync or async client) whose requests ask ``srv`` for ``fault``."""
    cls = AsyncOpenAIChat if kind == "async" else OpenAIChat
    options.setdefault("max_retries", 0)
    options.setdefault("api_key", KEY)
    extra = {"extra_headers": headers} if headers else {}
    return cls(f"fault-{fault}", base_url=srv.base_url, **options, **extra)


def ends(events: t.Iterable[t.Any]) -> dict[str, End]:
    """The End of each run kind (``llm``, ``agent``...); fails if a kind has more than one."""
    found: dict[str, End] = {}
    for ev in events:
        if isinstance(ev, End):
            assert ev.run.kind not in found, f"two Ends for {ev.run.kind}: {found[ev.run.kind]} and {ev}"
            found[ev.run.kind] = ev
    return found
