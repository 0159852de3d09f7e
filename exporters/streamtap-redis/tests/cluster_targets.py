"""TARGETs for the cluster tests' `streamtap serve` / `streamtap worker` processes (imported by name)."""

from __future__ import annotations

import os
import typing as t

from streamtap.flows import Flow, Node
from streamtap.interrupts import interrupt
from streamtap.llm import AsyncOpenAIChat


def chat() -> AsyncOpenAIChat:
    """A chat model on the test's embedded model server (``OPENAI_BASE_URL``)."""
    return AsyncOpenAIChat("fake-gpt", base_url=os.environ["OPENAI_BASE_URL"], api_key="test")


not_a_module = 42


class _Ask(Node):
    def prep(self, shared: t.Any) -> t.Any:
        return shared  # the chat's text

    def exec(self, question: t.Any) -> t.Iterator[str]:
        yield f"Checking Paris in process {os.getpid()}. "
        answer = interrupt({"question": "Allow the weather tool?"}, schema=_SCHEMA)
        yield f"Resumed in process {os.getpid()}: " + (
            "it is 22 degrees in Paris." if answer["approved"] else "not approved."
        )


_SCHEMA = {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}


def approval() -> Flow:
    """A flow that pauses for approval (interrupt), then streams its answer."""
    return Flow(_Ask(), name="ApprovalAgent")
