"""Jobs run in child processes by tests/test_relay.py (a module of its own, so that ``spawn`` children import it)."""

from __future__ import annotations

import os
import typing as t

from streamtap import ModuleBase, propagation

_state: dict[str, t.Any] = {}  # per child process: its gate event and its span export


def init_child(endpoint: str | None, gate: t.Any) -> None:
    """Pool initializer: export spans to ``endpoint`` (OTLP/HTTP) and keep ``gate`` (an Event shared with the test)."""
    _state["gate"] = gate
    if endpoint:
        import streamtap_otlp

        _state["export"] = streamtap_otlp.configure(
            endpoint=endpoint, protocol="http/protobuf", metrics=False, service_name="child"
        )


class Summarise(ModuleBase):
    """Streams its words; after the first it waits for the test's gate (set once the parent saw that chunk)."""

    def forward(self, text: str) -> t.Iterator[str]:
        words = text.split()
        yield words[0]
        gate = _state.get("gate")
        if gate is not None and not gate.wait(20):
            msg = "the parent never saw the first chunk"
            raise TimeoutError(msg)
        for word in words[1:]:
            yield " " + word


class Dies(ModuleBase):
    """Streams one chunk, then the process dies without a word (as under the OOM killer)."""

    def forward(self, text: str) -> t.Iterator[str]:
        yield text
        gate = _state.get("gate")
        if gate is not None:
            gate.wait(20)
        os._exit(3)


def summarise_job(carried: dict[str, t.Any], text: str) -> str:
    """The child's job: run :class:`Summarise` under the carried context."""
    with propagation.attach(carried):
        return t.cast(str, Summarise()(text))


def dying_job(carried: dict[str, t.Any], text: str) -> str:
    """The child's job whose process dies mid-run."""
    with propagation.attach(carried):
        return t.cast(str, Dies()(text))


def late_job(carried: dict[str, t.Any], text: str) -> int:
    """Streams one chunk, waits for the gate (set after the parent's run ended), then streams the rest; returns what it sent."""
    with propagation.attach(carried) as attached:
        Summarise()(text)
    return attached.sent


def chat_job(base_url: str, carried: dict[str, t.Any], text: str) -> str:
    """The child's job: a real OpenAI chat module (HTTP streaming from ``base_url``) under the carried context."""
    from streamtap.llm import OpenAIChat

    with propagation.attach(carried):
        return t.cast(str, OpenAIChat("fake-gpt", base_url=base_url, api_key="k", max_retries=0)(text))
