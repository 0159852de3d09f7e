"""TARGETs for ``bench/bench_redis.py``'s worker and web processes."""

from __future__ import annotations

import asyncio
import os
import time
import typing as t

from streamtap import ModuleBase
from streamtap.llm import AsyncOpenAIChat


class Stamped(ModuleBase):
    """Streams ``BENCH_CHUNKS`` chunks, ``BENCH_INTERVAL`` s apart, each carrying its wall-clock emission time."""

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        n = int(os.environ.get("BENCH_CHUNKS", "20"))
        interval = float(os.environ.get("BENCH_INTERVAL", "0.02"))
        for _ in range(n):
            await asyncio.sleep(interval)
            yield f"{time.time():.6f};"


stamped = Stamped()


def chat() -> AsyncOpenAIChat:
    """A chat model on the embedded model server (``OPENAI_BASE_URL``)."""
    return AsyncOpenAIChat("fake-gpt", base_url=os.environ["OPENAI_BASE_URL"], api_key="bench")
