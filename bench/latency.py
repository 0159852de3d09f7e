"""Time to first chunk with a zero-latency producer, against a bare async generator, interleaved.

Each trial times one call from "ask" to "first chunk in the consumer's hand";
bare and streamtap trials alternate, so drift hits both alike. Reported: the
median of each and the ratio of the medians.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
import typing as t

__all__ = ["Latency", "time_to_first_chunk"]


@dataclasses.dataclass(frozen=True)
class Latency:
    """One latency comparison: the case and its floor, medians in µs."""

    name: str
    floor: str
    case_us: float
    floor_us: float

    @property
    def ratio(self) -> float:
        """Case median over floor median."""
        return self.case_us / self.floor_us


async def _agen() -> t.AsyncIterator[str]:
    yield "x"
    yield "y"


def time_to_first_chunk(trials: int) -> list[Latency]:
    """``stream()`` and ``astream()`` of a zero-latency module against a bare async generator's first item."""
    from streamtap import ModuleBase

    class First(ModuleBase):
        """Yields at once."""

        def forward(self) -> t.Iterator[str]:
            yield "x"
            yield "y"

    class AFirst(ModuleBase):
        """Yields at once (async)."""

        async def forward(self) -> t.AsyncIterator[str]:
            yield "x"
            yield "y"

    def sync_stream() -> float:
        t0 = time.perf_counter_ns()
        s = First().stream()
        for ev in s:
            if ev.kind == "chunk":
                break
        dt = time.perf_counter_ns() - t0
        s.close()
        return dt / 1000

    async def bare() -> float:
        t0 = time.perf_counter_ns()
        g = _agen()
        await g.__anext__()
        dt = time.perf_counter_ns() - t0
        await g.aclose()
        return dt / 1000

    async def astream() -> float:
        t0 = time.perf_counter_ns()
        s = AFirst().astream()
        async for ev in s:
            if ev.kind == "chunk":
                break
        dt = time.perf_counter_ns() - t0
        s.close()
        return dt / 1000

    async def run() -> tuple[list[float], list[float], list[float]]:
        b, a, s = [], [], []
        for _ in range(trials):
            b.append(await bare())
            a.append(await astream())
            s.append(sync_stream())
        return b, a, s

    b, a, s = asyncio.run(run())
    floor = statistics.median(b)
    return [
        Latency("module.stream(): first chunk", "bare async generator", statistics.median(s), floor),
        Latency("module.astream(): first chunk", "bare async generator", statistics.median(a), floor),
    ]
