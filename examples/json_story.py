"""The LangChain seed's streaming JSON story: ``model | JsonOutputParser()`` yielding partial objects.

The parser consumes the model's text chunks as they arrive and yields each
successively more complete object on the ``data`` channel: ``{}``, then
``{'content': ''}``, ``{'content': 'Covering'}``... Then an extractor step
streams only the new part of ``content`` -- a generator step on top of a
streaming one, as in the seed's ``_extract_content_stream``.

Runs offline against the embedded model server, or against any
OpenAI-compatible endpoint when ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``,
``OPENAI_MODEL``) are set.

Run: python examples/json_story.py
"""

from __future__ import annotations

import os
import typing as t

from streamtap import ModuleBase
from streamtap.exporting import traces_from_env
from streamtap.llm.openai import OpenAIChat
from streamtap.llm.server import model_endpoint
from streamtap.parsers import JsonOutputParser

PROMPT = (
    "Output the content as JSON. Tell the story of 'covering one's ears to steal a bell'. "
    "Use the key `content`, and only that key."
)


class ExtractContent(ModuleBase):
    """Stream the growing ``content`` of the parser's partial objects as plain text deltas."""

    def __init__(self, parser: JsonOutputParser) -> None:
        self.parser = parser

    def forward(self, prompt: str) -> t.Iterator[str]:
        shown = 0
        for partial in self.parser.stream(prompt).filter(kinds="chunk", channels="data", names=self.parser.name):
            content = partial.delta.get("content", "") if isinstance(partial.delta, dict) else ""
            if len(content) > shown:
                yield content[shown:]
                shown = len(content)


def main() -> None:
    with traces_from_env(), model_endpoint(token_delay=0.005) as base_url:
        model = os.environ.get("OPENAI_MODEL") or ("fake-gpt" if base_url.startswith("http://127.0.0.1") else None)
        llm = OpenAIChat(model, base_url=base_url, response_format={"type": "json_object"})
        parser = JsonOutputParser(llm, name="story_parser")

        # 1. The partial objects, as the seed prints them (the first few and the last).
        partials = [e.delta for e in parser.stream(PROMPT).filter(kinds="chunk", channels="data")]
        for obj in partials[:6]:
            print(obj)
        print("......")
        print(partials[-1])

        # 2. Only the new text of `content`, from a generator step over the parser.
        extract = ExtractContent(parser)
        for event in extract.stream(PROMPT).filter(kinds="chunk", names="ExtractContent"):
            print(event.delta, end="|", flush=True)
        print()


if __name__ == "__main__":
    main()
