"""What the LangChain bridge adds to LangChain's own ``.stream()``, per chunk, measured in one run.

Every case streams the same GenericFakeChatModel answer (``--tokens`` chunks):

* ``langchain``: LangChain's own ``model.stream()``, no streamtap at all (the floor);
* ``langchain + no-op handler``: LangChain dispatching each token to a handler
  that does nothing (what any callback handler costs: LangChain's share);
* ``langchain + ignore_llm handler``: a handler whose ``ignore_llm`` is true:
  LangChain still enters its dispatch per token to check it;
* ``bridge via LangChain dispatch``: :class:`StreamtapCallbackHandler` with its
  tokens going through LangChain's per-handler dispatch (the callback route
  the bridge took before its short path; the short path is switched off for
  this case only);
* ``bridge, nobody listening``: the bridge as it ships (the short path), outside
  any streamtap run, nobody subscribed;
* ``bridge, read by module.stream()``: the same inside a streamtap module whose
  ``module.stream()`` the caller reads: every token becomes a ``Chunk``
  delivered to the reading thread (the case the bridge exists for);
* ``streamtap alone, module.stream()``: no LangChain: a streamtap module
  yielding as many chunks, read the same way; what delivering a chunk to a
  ``module.stream()`` reader costs in streamtap itself, bridge or not.

The machine is shared and its speed drifts, so every round runs each case
once, in a shuffled order, and each case's ratio to the floor is taken within
the round; the median over the rounds is reported, with the middle half of the
rounds' ratios (quartiles) as its spread, and beside it the ratio of the best
(lowest) times over all rounds, which noise from other processes (it only ever
adds time) disturbs least. Time is the process's CPU
time (``--clock wall`` for wall time), which other processes disturb less; for
the ``module.stream()`` cases it includes the reading thread.

``--instructions`` counts instructions instead of time: the cases run once
each (after a warm-up) in one process under valgrind's callgrind, which dumps
its counters between cases. The counts do not move with the machine's load
(about 2 minutes; needs ``valgrind``); they leave out what time adds beyond
instructions (cache misses, waits for the reading thread to wake).

Run:  .venv/bin/python bench/bench_langchain_bridge.py [--tokens N] [--rounds R] [--clock cpu|wall]
      .venv/bin/python bench/bench_langchain_bridge.py --instructions [--tokens N]

Not part of the test suite's pass/fail (tests/bridges/test_langchain*.py check behaviour).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import pathlib
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks import manager as lc_manager
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from streamtap import ModuleBase
from streamtap.bridges.langchain import StreamtapCallbackHandler

HANDLER = StreamtapCallbackHandler()


def make_model(tokens: int) -> GenericFakeChatModel:
    words = " ".join("x" for _ in range((tokens + 1) // 2))  # "x", " ", "x"...: one chunk each
    return GenericFakeChatModel(messages=iter([AIMessage(content=words)]))


def floor(tokens: int) -> int:
    return sum(1 for _ in make_model(tokens).stream("q"))


class Noop(BaseCallbackHandler):
    """A LangChain handler that does nothing, configured like the bridge's."""

    raise_error = True
    run_inline = True


NOOP = Noop()


def noop(tokens: int) -> int:
    return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [NOOP]}))


class Ignoring(Noop):
    """A LangChain handler that ignores LLM events (``ignore_llm``): LangChain still checks it per token."""

    @property
    def ignore_llm(self) -> bool:
        """Always: LangChain skips this handler's LLM callbacks."""
        return True


IGNORING = Ignoring()


def ignoring(tokens: int) -> int:
    return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [IGNORING]}))


def unobserved(tokens: int) -> int:
    return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [HANDLER]}))


@contextlib.contextmanager
def langchain_dispatch() -> t.Iterator[None]:
    """LangChain's own ``on_llm_new_token`` back in place (the bridge's short path off) inside the block."""
    classes = (lc_manager.CallbackManagerForLLMRun, lc_manager.AsyncCallbackManagerForLLMRun)
    short = [c.__dict__["on_llm_new_token"] for c in classes]
    originals = [getattr(m, "__streamtap_original__", m) for m in short]  # recorded by the short path's install
    for cls, m in zip(classes, originals, strict=True):
        setattr(cls, "on_llm_new_token", m)  # noqa: B010 - the class attribute, as install() set it
    try:
        yield
    finally:
        for cls, m in zip(classes, short, strict=True):
            setattr(cls, "on_llm_new_token", m)  # noqa: B010


def via_dispatch(tokens: int) -> int:
    with langchain_dispatch():
        return unobserved(tokens)


class Streaming(ModuleBase):
    """A streamtap module streaming a LangChain model's answer through the bridge."""

    def forward(self, tokens: int) -> int:
        return unobserved(tokens)


def streamed(tokens: int) -> int:
    n = 0
    for ev in Streaming().buffered(1 << 20).stream(tokens):
        if ev.kind == "chunk":
            n += 1
    return n


class Alone(ModuleBase):
    """A streamtap module yielding ``tokens`` chunks, no LangChain."""

    def forward(self, tokens: int) -> t.Iterator[str]:
        for i in range(tokens):
            yield "x" if i % 2 == 0 else " "


def alone(tokens: int) -> int:
    n = 0
    for ev in Alone().buffered(1 << 20).stream(tokens):
        if ev.kind == "chunk":
            n += 1
    return n


CASES: dict[str, t.Callable[[int], int]] = {
    "langchain + no-op handler": noop,
    "langchain + ignore_llm handler": ignoring,
    "bridge via LangChain dispatch": via_dispatch,
    "bridge, nobody listening": unobserved,
    "bridge, read by module.stream()": streamed,
    "streamtap alone, module.stream()": alone,
}


def timed(fn: t.Callable[[int], int], tokens: int, clock: t.Callable[[], float]) -> tuple[float, int]:
    gc.collect()
    t0 = clock()
    n = fn(tokens)
    return clock() - t0, n


def _child(tokens: int) -> None:
    """Under callgrind: warm up, then each case once, with a counter dump (asked of the parent) after each."""
    every = {"langchain": floor, **CASES}
    for fn in every.values():
        fn(200)

    def mark(name: str) -> None:
        gc.collect()
        print("MARK", name, flush=True)
        sys.stdin.readline()  # the parent has dumped the counters

    mark("warm-up")
    for name, fn in every.items():
        fn(tokens)
        mark(name)


def instructions(tokens: int) -> dict[str, float]:
    """Count each case's instructions under callgrind; print them per chunk and as ratios to the floor."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
        env = dict(os.environ, PYTHONHASHSEED="0")
        child = subprocess.Popen(
            [*cmd, "--child", "--tokens", str(tokens)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert child.stdin is not None and child.stdout is not None
        names = []
        for line in child.stdout:
            if line.startswith("MARK "):
                names.append(line[5:].strip())
                subprocess.run(["callgrind_control", "-d", str(child.pid)], capture_output=True, check=True)
                child.stdin.write("\n")
                child.stdin.flush()
        if child.wait() != 0:
            msg = f"the callgrind child failed (exit {child.returncode})"
            raise RuntimeError(msg)
        counts = []
        for i in range(1, len(names) + 1):
            text = pathlib.Path(f"{out}.{i}").read_text(encoding="utf-8")
            counts.append(int(re.search(r"^summary: (\d+)", text, re.M).group(1)))  # type: ignore[union-attr]
    every = dict(zip(names[1:], counts[1:], strict=True))  # the first dump is the warm-up
    base = every["langchain"]
    print(f"LangChain .stream() of GenericFakeChatModel, {tokens} chunks, instructions counted by callgrind")
    print(f"{'case':<34} {'instr/chunk':>12} {'vs langchain':>15}")
    for name, n in every.items():
        print(f"{name:<34} {n / tokens:12,.0f} {n / base:7.3f}x {(n / base - 1) * 100:+6.1f}%")
    return {name: n / base for name, n in every.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print the per-chunk cost of each case and its median ratio to the floor; return the ratios."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tokens", type=int, default=2000, help="chunks per run")
    p.add_argument("--rounds", type=int, default=41)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled case order")
    p.add_argument("--instructions", action="store_true", help="count instructions under callgrind instead")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a.tokens)
        return {}
    if a.instructions:
        return instructions(a.tokens)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    every = {"langchain": floor, **CASES}
    for fn in every.values():
        timed(fn, 200, clock)  # warm up
    us: dict[str, list[float]] = {k: [] for k in every}
    ratios: dict[str, list[float]] = {k: [] for k in every}
    vs_noop: dict[str, list[float]] = {k: [] for k in every}
    order = list(every)
    rng = random.Random(a.seed)
    for _ in range(a.rounds):
        rng.shuffle(order)
        took: dict[str, float] = {}
        for name in order:
            took[name], n = timed(every[name], a.tokens, clock)
            assert n >= a.tokens - 1, f"{name}: {n} chunks, expected {a.tokens}"
            us[name].append(took[name] / a.tokens * 1e6)
        for name in every:
            ratios[name].append(took[name] / took["langchain"])
            vs_noop[name].append(took[name] / took["langchain + no-op handler"])
    print(
        f"LangChain .stream() of GenericFakeChatModel, {a.tokens} chunks per run, {a.rounds} rounds, "
        f"{'process CPU' if a.clock == 'cpu' else 'wall'} time (medians of per-round ratios)"
    )
    print(
        f"{'case':<34} {'us/chunk':>9} {'vs langchain':>15} {'(middle half)':>17} "
        f"{'best vs best':>13} {'vs no-op handler':>17}"
    )
    best_floor = min(us["langchain"])
    out = {}
    for name in every:
        r, q = statistics.median(ratios[name]), statistics.median(vs_noop[name])
        lo, _, hi = statistics.quantiles(ratios[name], n=4) if len(ratios[name]) > 1 else (r, r, r)
        best = min(us[name]) / best_floor
        out[name] = r
        out[name + " vs no-op"] = q
        out[name + " best"] = best
        print(
            f"{name:<34} {statistics.median(us[name]):9.2f} {r:7.2f}x {(r - 1) * 100:+6.1f}% "
            f"{(lo - 1) * 100:+7.1f}..{(hi - 1) * 100:+.1f}% {(best - 1) * 100:+12.1f}% {q:8.2f}x {(q - 1) * 100:+6.1f}%"
        )

    def pct(name: str) -> str:
        return f"{(out[name] - 1) * 100:+.1f}% (best times {(out[name + ' best'] - 1) * 100:+.1f}%)"

    print(
        f"\nThe bridge adds {pct('bridge, nobody listening')} per chunk to LangChain's own .stream() "
        f"(target: at most +10%);\nthrough LangChain's dispatch it added {pct('bridge via LangChain dispatch')}, "
        f"a handler doing nothing adds {pct('langchain + no-op handler')};\n"
        f"read by module.stream(): {pct('bridge, read by module.stream()')}."
    )
    return out


if __name__ == "__main__":
    main()
