"""TARGETs for the cluster tests' `streamtap serve` / `streamtap worker` processes (imported by name)."""

from __future__ import annotations

import os

from streamtap.llm import AsyncOpenAIChat


def chat() -> AsyncOpenAIChat:
    """A chat model on the test's embedded model server (``OPENAI_BASE_URL``)."""
    return AsyncOpenAIChat("fake-gpt", base_url=os.environ["OPENAI_BASE_URL"], api_key="test")


not_a_module = 42
