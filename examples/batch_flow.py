"""A batch node summarising many documents with a model, with the progress events batch nodes send.

``SummariseAll`` is a :class:`~streamtap.flows.ParallelBatchNode`: ``prep``
returns the documents, ``exec`` summarises one (a model call on the embedded
OpenAI-compatible server, so this runs offline), up to four at a time, and
``post`` stores the summaries. The node itself sends ``progress`` events
(``{"done": n, "total": 24}``) as items finish -- nothing to write for it;
the loop below prints them from the same event stream as everything else
(the terminal view of ``streamtap-console`` and the web page draw them as bars).

Run: python examples/batch_flow.py
"""

from __future__ import annotations

import contextlib
import typing as t

from streamtap.exporting import traces_from_env
from streamtap.flows import Flow, Node, ParallelBatchNode
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI

TOPICS = ["invoices", "contracts", "meeting notes", "bug reports", "release notes", "support tickets"]
DOCUMENTS = [f"Document {i}: {TOPICS[i % len(TOPICS)]} for week {i // len(TOPICS) + 1}." for i in range(24)]


class Load(Node):
    def post(self, shared: dict[str, t.Any], p: t.Any, r: t.Any) -> None:
        shared["documents"] = DOCUMENTS


class SummariseAll(ParallelBatchNode):
    max_workers = 4

    def __init__(self, llm: OpenAIChat) -> None:
        super().__init__()
        self.llm = llm

    def prep(self, shared: dict[str, t.Any]) -> list[str]:
        return shared["documents"]

    def exec(self, document: str) -> str:
        return str(self.llm(f"Summarise in one line: {document}"))

    def post(self, shared: dict[str, t.Any], documents: t.Any, summaries: list[str]) -> None:
        shared["summaries"] = summaries


class Report(Node):
    def prep(self, shared: dict[str, t.Any]) -> list[str]:
        return shared["summaries"]

    def exec(self, summaries: list[str]) -> str:
        return f"{len(summaries)} summaries; first: {summaries[0]!r}"


def main() -> int:
    with contextlib.ExitStack() as stack:
        stack.enter_context(traces_from_env())
        server = stack.enter_context(FakeOpenAI(token_delay=0.002))
        llm = OpenAIChat(model="fake-gpt", base_url=server.base_url, api_key="offline")
        load = Load()
        load >> SummariseAll(llm) >> Report()
        shared: dict[str, t.Any] = {}
        stream = Flow(load, name="Summaries").stream(shared)
        for ev in stream.filter(kinds="custom", names="SummariseAll"):
            if ev.name == "progress":
                p = ev.data
                bar = "#" * (20 * p["done"] // p["total"])
                print(f"[{bar:<20}] {p['done']:>2}/{p['total']}")
        print(stream.handle.result())
        assert len(shared["summaries"]) == len(DOCUMENTS)
        assert all(s.startswith("You said: Summarise in one line: Document") for s in shared["summaries"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
