"""Runs that span processes: a tool hands two model calls to a process pool; they stream into the parent's run.

The agent's tool ``compare`` sends each question to a ``ProcessPoolExecutor``
(``spawn``) child. Each child runs an ``OpenAIChat`` under the carried run
context (``streamtap.propagation.attach``); the parent's relay re-emits the
children's events into its own run tree, so one ``agent.stream()`` in the
parent shows both children's tokens live, under the tool run, with one
gap-free ``seq``. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the children's
spans land in the parent's trace, under ``execute_tool compare``.

Run: python examples/process_pool.py   (offline: an embedded model server answers)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import typing as t

from streamtap import ModuleBase, propagation
from streamtap.events import Chunk, End, Start
from streamtap.exporting import traces_from_env
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import model_endpoint

_child_exports = contextlib.ExitStack()  # the child process's span export, open for its lifetime


def init_child() -> None:
    """Pool initializer: export the child's spans when the OTEL_* variables ask for it."""
    _child_exports.enter_context(traces_from_env())


def ask(carried: dict[str, t.Any], base_url: str, question: str) -> str:
    """The child's job: one streaming model call, as a child of the tool run that handed it out."""
    model = os.environ.get("OPENAI_MODEL") or "fake-gpt"
    with propagation.attach(carried):
        return t.cast(str, OpenAIChat(model, base_url=base_url, name="child_chat")(question))


class Compare(ModuleBase):
    """A tool that asks its questions in parallel, each in a process of its own."""

    kind = "tool"
    name = "compare"

    def __init__(self, pool: concurrent.futures.Executor, base_url: str) -> None:
        super().__init__()
        self.pool = pool
        self.base_url = base_url

    def forward(self, questions: list[str]) -> list[str]:
        with propagation.relay() as relay:
            carried = relay.carry().to_dict()  # JSON: could as well go into a job queue message
            futures = [self.pool.submit(ask, carried, self.base_url, q) for q in questions]
            return [f.result(timeout=60) for f in futures]


class Agent(ModuleBase):
    """The root run."""

    kind = "agent"
    name = "pool_agent"

    def __init__(self, tool: Compare) -> None:
        super().__init__()
        self.tool = tool

    def forward(self, questions: list[str]) -> str:
        answers = self.tool(questions)
        return " | ".join(a[:30] for a in answers)


def main() -> None:
    spawn = multiprocessing.get_context("spawn")
    with (
        traces_from_env(),
        model_endpoint(token_delay=0.01) as base_url,
        concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn, initializer=init_child) as pool,
    ):
        agent = Agent(Compare(pool, base_url))
        last_seq = -1
        for ev in agent.stream(["What is streamtap?", "Why stream intermediate steps?"]):
            assert ev.seq == last_seq + 1, "one gap-free seq across both processes"
            last_seq = ev.seq
            where = "/".join(ev.run.path)
            if isinstance(ev, Start):
                print(f"trace: start {where} run={ev.run.run_id[:6]} parent={(ev.run.parent_id or '-')[:6]}")
            elif isinstance(ev, Chunk) and ev.channel == "text":
                print(f"output[{ev.run.run_id[:6]}]: {ev.delta!r}")
            elif isinstance(ev, End):
                print(f"trace: end {where} {ev.status}")
                if ev.run.parent_id is None:
                    print(f"ret: {ev.output}")
        print(f"events: {last_seq + 1}, seq gap-free")


if __name__ == "__main__":
    main()
