"""``python -m bench``: streamtap beside its peers, every figure a ratio to a floor probed in the same run.

Usage (from the repository root)::

    python -m bench --quick                  # under 2 minutes
    python -m bench                          # the full run, under 10 minutes
    python -m bench --write docs/benchmarks.md   # also regenerate the page and its plot

Peers are pinned in ``bench/requirements.txt``; one not installed is skipped
with a line saying so. Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from bench.harness import measure
from bench.latency import time_to_first_chunk
from bench.report import machine, render_markdown, render_table, versions, write_plot
from bench.scenarios import all_scenarios


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the tables; write the page when asked."""
    p = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer chunks and repeats (under 2 minutes)")
    p.add_argument("--chunks", type=int, help="chunks per timed run (default 200,000; 40,000 with --quick)")
    p.add_argument("--repeats", type=int, help="repeats per scenario (default 7; 3 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled scenario order")
    p.add_argument("--write", metavar="PAGE", help="write the Markdown page (and PAGE's .png plot beside it)")
    a = p.parse_args(argv)
    n = a.chunks or (40_000 if a.quick else 200_000)
    repeats = a.repeats or (3 if a.quick else 7)
    trials = 300 if a.quick else 1500
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])

    skipped: list[str] = []
    scenarios = all_scenarios(skipped.append)
    for line in skipped:
        print(f"skipped: {line}")
    t0 = time.monotonic()
    results = measure(scenarios, n=n, repeats=repeats, seed=a.seed, progress=lambda m: print(m, flush=True))
    latencies = time_to_first_chunk(trials)
    elapsed = time.monotonic() - t0
    info = machine()
    libs = versions()
    print()
    print(render_table(results, latencies))
    print(f"\n{info}; {elapsed:.0f} s; {n:,} chunks per run, {repeats} repeats")
    if a.write:
        page = pathlib.Path(a.write)
        plot = page.with_suffix(".png")
        write_plot(results, plot)
        page.write_text(
            render_markdown(
                results, latencies, info=info, libs=libs, command=command.strip(), plot=plot.name, skipped=skipped
            ),
            encoding="utf-8",
        )
        print(f"wrote {page} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
