"""Core streaming costs, as ratios to a bare generator measured in the same run.

This machine's speed drifts by 2x within seconds, so every measurement is
interleaved with its baseline: each round times the bare generator and then
the case, and the ratio is taken per round; the median ratio over the rounds
is reported with the absolute figure for scale.

Run:  .venv/bin/python bench/bench_core.py [--chunks N] [--rounds R]

Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
import typing as t

import blinker

import streamtap
from streamtap import ModuleBase


def gen(n: int) -> t.Iterator[str]:
    for _ in range(n):
        yield "x"


class Gen(ModuleBase):
    """A module streaming n one-character chunks."""

    def forward(self, n: int) -> t.Iterator[str]:
        for _ in range(n):
            yield "x"


class Plain(ModuleBase):
    """A module returning at once (per-run cost)."""

    def forward(self, x: int) -> int:
        return x


def plain_function(x: int) -> int:
    return x


def bare(n: int) -> None:
    for _ in gen(n):
        pass


def blinker_one(n: int) -> None:
    sig = blinker.Signal()

    def recv(sender: object, **kw: object) -> None:
        pass

    sig.connect(recv)
    for x in gen(n):
        sig.send(None, delta=x)


def module_call(n: int) -> None:
    Gen()(n)


def stream_with(subscribers: int) -> t.Callable[[int], None]:
    def run(n: int) -> None:
        subs = [streamtap.subscribe(lambda e: None, kinds=["chunk"]) for _ in range(subscribers)]
        try:
            for _ in Gen().stream(n):
                pass
        finally:
            for s in subs:
                s.unsubscribe()

    return run


def timed(fn: t.Callable[[int], None], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn(n)
    return time.perf_counter() - t0


def per_chunk(cases: dict[str, t.Callable[[int], None]], n: int, rounds: int) -> None:
    print(f"\nper chunk ({n} chunks, {rounds} interleaved rounds; ratio = case / bare generator in the same round)")
    print(f"{'case':<44}{'ns/chunk':>10}{'x bare':>10}")
    base_ns = []
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            b = timed(bare, n)
            c = timed(fn, n)
            results[name].append((c / n * 1e9, c / b))
            base_ns.append(b / n * 1e9)
    print(f"{'bare generator':<44}{statistics.median(base_ns):>10.1f}{1.0:>10.1f}")
    for name, rows in results.items():
        ns = statistics.median(r[0] for r in rows)
        ratio = statistics.median(r[1] for r in rows)
        print(f"{name:<44}{ns:>10.1f}{ratio:>10.1f}")


def per_run(runs: int, rounds: int) -> None:
    print(f"\nper run ({runs} calls of a module that returns at once; ratio = case / plain function call)")

    def base_loop(n: int) -> None:
        f = plain_function
        for i in range(n):
            f(i)

    def module_loop(n: int) -> None:
        m = Plain()
        for i in range(n):
            m(i)

    def module_loop_sub(n: int) -> None:
        m = Plain()
        with streamtap.subscribe(lambda e: None):
            for i in range(n):
                m(i)

    rows: dict[str, list[tuple[float, float]]] = {
        "ModuleBase call, no subscriber": [],
        "ModuleBase call, 1 subscriber": [],
    }
    for _ in range(rounds):
        for name, fn in (
            ("ModuleBase call, no subscriber", module_loop),
            ("ModuleBase call, 1 subscriber", module_loop_sub),
        ):
            b = timed(base_loop, runs)
            c = timed(fn, runs)
            rows[name].append((c / runs * 1e9, c / b))
    print(f"{'case':<44}{'ns/run':>10}{'x call':>10}")
    for name, r in rows.items():
        print(f"{name:<44}{statistics.median(x[0] for x in r):>10.0f}{statistics.median(x[1] for x in r):>10.1f}")


def memory(n: int) -> None:
    print(f"\nmemory over {n:,} chunks through stream() (tracemalloc, Python allocations)")

    class Endless(ModuleBase):
        join_output = False  # an endless stream: nothing is collected

        def forward(self, n: int) -> t.Iterator[str]:
            for _ in range(n):
                yield "x"

    for label, module in (("join_output=False", Endless()), ("default (output text kept)", Gen())):
        gc.collect()
        tracemalloc.start()
        peaks = []
        s = module.stream(n)
        for i, _ in enumerate(s):
            if i % (n // 10) == 0:
                peaks.append(tracemalloc.get_traced_memory()[0])
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"  {label:<28} allocated at 10%: {peaks[1] / 1e6:6.2f} MB, at 90%: {peaks[-1] / 1e6:6.2f} MB, "
            f"peak {peak / 1e6:6.2f} MB"
        )


def main(argv: t.Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--memory-chunks", type=int, default=1_000_000)
    a = p.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, streamtap {streamtap.__version__}")
    per_chunk(
        {
            "blinker Signal.send, 1 receiver": blinker_one,
            "module(x), no subscriber": module_call,
            "stream(), 0 subscribers": stream_with(0),
            "stream(), 1 subscriber": stream_with(1),
            "stream(), 3 subscribers": stream_with(3),
        },
        a.chunks,
        a.rounds,
    )
    per_run(50_000, a.rounds)
    memory(a.memory_chunks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
