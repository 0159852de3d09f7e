"""The same-run method: every timed run carries its own baseline.

This machine's speed drifts by 2x within seconds, so a baseline measured
before or after a run says little about the run. Instead the baseline is
*probed inside* every timed run: the producer of a scenario is split into
segments (about 20), and before each segment it calls :class:`Probe`, which
times a few thousand chunks through the bare generator loop. The scenario's
own time is the run's wall time minus the probes' time; its cost per chunk
divided by the probes' cost per chunk is the ratio reported. Ratios are taken
per run and the median over repeats is reported; scenario order is shuffled in
every repeat so that no scenario always runs after the same one.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import time
import typing as t

__all__ = ["Probe", "Result", "Scenario", "bare", "bare_loop", "measure", "segments"]


def bare(n: int) -> t.Iterator[str]:
    """The floor: a generator yielding ``n`` one-character chunks."""
    for _ in range(n):
        yield "x"


def bare_loop(n: int) -> None:
    """``n`` chunks through the bare generator, consumed by ``for``."""
    for _ in bare(n):
        pass


class Probe:
    """Times ``size`` units of the floor (``work(size)``) each time it is called; keeps the totals.

    The default floor is the bare generator loop; per-run scenarios probe a
    plain function call, tracing scenarios a bare OpenTelemetry span.
    """

    __slots__ = ("calls", "chunks", "ns", "size", "work")

    def __init__(self, size: int = 2000, work: t.Callable[[int], None] = bare_loop) -> None:
        self.size = size
        self.work = work
        self.ns = 0
        self.chunks = 0
        self.calls = 0

    def __call__(self) -> None:
        work, size = self.work, self.size
        t0 = time.perf_counter_ns()
        work(size)
        self.ns += time.perf_counter_ns() - t0
        self.chunks += size
        self.calls += 1

    @property
    def per_unit(self) -> float:
        """The probed floor, ns per chunk."""
        return self.ns / self.chunks if self.chunks else float("nan")


def segments(n: int, probe: Probe, count: int = 20) -> t.Iterator[int]:
    """Split ``n`` chunks into ``count`` segments; calls ``probe`` before each and yields its length.

    A producer written as ``for size in segments(n, probe): for _ in range(size): yield "x"``
    has the shape of the bare loop plus one probe per segment.
    """
    size, rest = divmod(n, count)
    for i in range(count):
        probe()
        yield size + (1 if i < rest else 0)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One measured case.

    ``run(n, probe)`` does ``n`` units of work (chunks, runs) and calls
    ``probe()`` before each of its segments, so the floor is measured in the
    middle of the run. ``unit`` names what ``n`` counts; ``floor`` what the
    probe times (the ratio's denominator).
    """

    group: str
    name: str
    run: t.Callable[[int, Probe], None]
    library: str = "streamtap"
    unit: str = "chunk"
    floor: str = "bare generator"
    n_scale: float = 1.0
    probe: t.Callable[[], Probe] = Probe


@dataclasses.dataclass
class Result:
    """The repeats of one scenario: ns per unit and ratio to the probed floor."""

    scenario: Scenario
    ns: list[float] = dataclasses.field(default_factory=list)
    ratio: list[float] = dataclasses.field(default_factory=list)
    floor_ns: list[float] = dataclasses.field(default_factory=list)

    @property
    def median_ns(self) -> float:
        """Median ns per unit over the repeats."""
        return statistics.median(self.ns)

    @property
    def median_ratio(self) -> float:
        """Median ratio to the floor over the repeats."""
        return statistics.median(self.ratio)

    @property
    def median_floor(self) -> float:
        """Median probed floor, ns per unit."""
        return statistics.median(self.floor_ns)


def _once(sc: Scenario, n: int) -> tuple[float, float, float]:
    probe = sc.probe()
    gc.collect()
    t0 = time.perf_counter_ns()
    sc.run(n, probe)
    total = time.perf_counter_ns() - t0
    if not probe.calls:
        msg = f"scenario {sc.name!r} never called its probe: its producer must use bench.harness.segments()"
        raise RuntimeError(msg)
    own = (total - probe.ns) / n
    floor = probe.per_unit
    return own, own / floor, floor


def measure(
    scenarios: t.Sequence[Scenario],
    *,
    n: int,
    repeats: int,
    seed: int = 0,
    progress: t.Callable[[str], None] | None = None,
) -> list[Result]:
    """Run every scenario ``repeats`` times in a shuffled order; one warm-up run each first."""
    rng = random.Random(seed)
    results = {sc.name: Result(sc) for sc in scenarios}
    order = list(scenarios)
    for sc in order:  # warm-up: imports, caches, first-use state
        _once(sc, max(1000, int(n * sc.n_scale) // 10))
    for r in range(repeats):
        rng.shuffle(order)
        for sc in order:
            own, ratio, floor = _once(sc, max(100, int(n * sc.n_scale)))
            res = results[sc.name]
            res.ns.append(own)
            res.ratio.append(ratio)
            res.floor_ns.append(floor)
        if progress is not None:
            progress(f"repeat {r + 1}/{repeats} done")
    return [results[sc.name] for sc in scenarios]
