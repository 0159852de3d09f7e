"""The seed's streaming chatbot: the answer streams token by token, with chat history, sync and async.

``llm.stream(query)`` iterates this call's events from the calling thread: no
thread pool to set up, no queue to poll. The same module streams from
``async for`` with the async client.

Runs offline against the embedded model server, or against any
OpenAI-compatible endpoint when ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``,
``OPENAI_MODEL``) are set.

Run: python examples/streaming_bot.py
"""

from __future__ import annotations

import asyncio
import os

from streamtap.exporting import traces_from_env
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.testing import model_endpoint


def model_name(base_url: str) -> str | None:
    """The embedded server answers any model; a real endpoint uses OPENAI_MODEL."""
    return os.environ.get("OPENAI_MODEL") or ("fake-gpt" if base_url.startswith("http://127.0.0.1") else None)


async def async_turn(base_url: str, query: str) -> None:
    llm = AsyncOpenAIChat(model_name(base_url), base_url=base_url)
    pieces = []
    async for piece in llm.astream(query).text():
        pieces.append(piece)
        print(f"output: {piece}")
    print(f"ret: {''.join(pieces)}")


def main() -> None:
    with traces_from_env(), model_endpoint(token_delay=0.02) as base_url:
        llm = OpenAIChat(
            model_name(base_url), base_url=base_url, keep_history=True, system="You are a helpful assistant."
        )
        for query in ("What skills do you have?", "And what did I just ask you?"):
            stream = llm.stream(query)
            for piece in stream.text():
                print(f"output: {piece}")
            print(f"ret: {stream.handle.result()}")
        print(f"history: {len(llm.history)} messages")
        asyncio.run(async_turn(base_url, "Streaming from async code too?"))


if __name__ == "__main__":
    main()
