"""A non-streaming step before streaming ones (the LangChain seed's retriever chain).

A toy retriever returns its documents all at once; the prompt is built from
them; the model then streams its answer. Streaming starts right after the
last non-streaming step, and the retriever's run (named ``Docs``, like the
seed's ``with_config(run_name="Docs")``) shows on the same event stream with
its output -- filter by name to get just that step.

Runs offline against the embedded model server, or against any
OpenAI-compatible endpoint when ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``,
``OPENAI_MODEL``) are set.

Run: python examples/retriever_then_stream.py
"""

from __future__ import annotations

import os
import typing as t

from streamtap import ModuleBase
from streamtap.exporting import traces_from_env
from streamtap.flows import Sequential
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import model_endpoint

TEMPLATE = """Answer the question based only on the following context:
{context}

Question: {question}
"""


class ToyRetriever(ModuleBase):
    """Find documents sharing words with the question (a stand-in for a vector store). Not streaming."""

    def __init__(self, texts: t.Sequence[str], k: int = 2) -> None:
        self.texts = list(texts)
        self.k = k

    def forward(self, question: str) -> dict[str, t.Any]:
        words = set(question.lower().replace("?", "").split())
        ranked = sorted(self.texts, key=lambda text: -len(words & set(text.lower().split())))
        return {"context": ranked[: self.k], "question": question}


def prompt(inputs: dict[str, t.Any]) -> str:
    """Fill the template (a plain function step: a run named ``prompt``)."""
    return TEMPLATE.format(context="\n".join(inputs["context"]), question=inputs["question"])


def main() -> None:
    with traces_from_env(), model_endpoint(token_delay=0.01) as base_url:
        model = os.environ.get("OPENAI_MODEL") or ("fake-gpt" if base_url.startswith("http://127.0.0.1") else None)
        # name= and tags= on the constructor, as the seed's retriever.with_config(run_name="Docs").
        retriever = ToyRetriever(
            ["harrison worked at kensho", "harrison likes spicy food", "bears like honey"],
            name="Docs",
            tags=["retriever"],
        )
        chain = Sequential(retriever, prompt, OpenAIChat(model, base_url=base_url), name="retrieval_chain")

        # The retriever alone: "streaming" it gives one final result, as in the seed.
        print([e.output["context"] for e in retriever.stream("where did harrison work?") if e.kind == "end"])

        stream = chain.stream("Where did harrison work? Write 3 made up sentences about this place.")
        for event in stream:
            if event.kind == "end" and event.run.name == "Docs":
                print(f"[Docs] {event.output['context']}")
            elif event.kind == "chunk" and event.channel == "text":
                print(event.delta, end="|", flush=True)
        print()
        print(f"ret: {str(stream.handle.result())!r}")


if __name__ == "__main__":
    main()
