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
from collections.abc import Iterator

from streamtap.exporting import traces_from_env
from streamtap.flows import Sequential
from streamtap.llm.openai import OpenAIChat
from streamtap.parsers import JsonOutputParser
from streamtap.testing import model_endpoint

PROMPT = (
    "Output the content as JSON. Tell the story of 'covering one's ears to steal a bell'. "
    "Use the key `content`, and only that key."
)


def extract_content(partials: Iterator[t.Any]) -> Iterator[str]:
    """A stream transform (its first parameter is an Iterator): only the new text of ``content``."""
    shown = 0
    for partial in partials:
        content = partial.get("content", "") if isinstance(partial, dict) else ""
        if len(content) > shown:
            yield content[shown:]
            shown = len(content)


def main() -> None:
    with traces_from_env(), model_endpoint(token_delay=0.005) as base_url:
        model = os.environ.get("OPENAI_MODEL") or ("fake-gpt" if base_url.startswith("http://127.0.0.1") else None)
        llm = OpenAIChat(model, base_url=base_url, response_format={"type": "json_object"})

        # 1. model | JsonOutputParser(): the partial objects, as the seed prints them (the first few and the last).
        chain = Sequential(llm, JsonOutputParser(name="story_parser"))
        partials = [e.delta for e in chain.stream(PROMPT).filter(names="story_parser", channels="data", kinds="chunk")]
        for obj in partials[:6]:
            print(obj)
        print("......")
        print(partials[-1])

        # 2. model | JsonOutputParser() | extract_content: streams end to end, each step reading the one before live.
        chain = Sequential(llm, JsonOutputParser(name="story_parser"), extract_content)
        for piece in chain.stream(PROMPT).filter(names="extract_content", kinds="chunk"):
            print(piece.delta, end="|", flush=True)
        print()


if __name__ == "__main__":
    main()
