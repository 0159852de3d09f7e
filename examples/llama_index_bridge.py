"""A LlamaIndex query engine inside a streamtap agent: retrieval, synthesis and the model's tokens, live.

``instrument()`` (once) adds streamtap's span and event handlers to
LlamaIndex's root dispatcher; every LlamaIndex call made inside the agent
then nests under the agent's run, and ``agent.stream()`` shows its steps
(``step:``) and the tokens of the streaming answer (``output:``). The model
and the embeddings are llama-index-core's own ``MockLLM`` and
``MockEmbedding``, so this runs offline; any LlamaIndex LLM works the same.

Needs ``pip install 'streamtap[llama-index]'``.

Run: python examples/llama_index_bridge.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from streamtap import ModuleBase
from streamtap.bridges.llama_index import instrument


class DocsAgent(ModuleBase):
    """A streamtap agent answering from documents with a streaming LlamaIndex query engine."""

    kind = "agent"

    def __init__(self) -> None:
        Settings.embed_model = MockEmbedding(embed_dim=8)
        index = VectorStoreIndex.from_documents(
            [
                Document(text="streamtap makes every step of an LLM app observable while it runs."),
                Document(text="LlamaIndex retrieves nodes."),
            ]
        )
        self.engine = index.as_query_engine(llm=MockLLM(max_tokens=8), streaming=True, similarity_top_k=1)

    def forward(self, question: str) -> str:
        return "".join(self.engine.query(question).response_gen)


def main() -> None:
    instrument()
    stream = DocsAgent().stream("What does streamtap do?")
    for ev in stream:
        if ev.kind == "start" and ev.run.parent_id is not None and ev.run.kind != "module":
            print(f"step: {ev.run.kind} {ev.run.name}")
        elif ev.kind == "end" and ev.run.kind == "tool":
            print(f"trace: {ev.run.name} -> {ev.output}")
        elif ev.kind == "chunk" and ev.channel == "text":
            print(f"output: {ev.delta!r}")
    print(f"ret: {stream.handle.result()}")


if __name__ == "__main__":
    main()
