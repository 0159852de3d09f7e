"""What the LangChain bridge adds to LangChain's own ``.stream()``, per chunk, measured in one run.

Three cases stream the same GenericFakeChatModel answer (``--tokens`` chunks):

* ``langchain``: LangChain's own ``model.stream()``, no streamtap at all (the floor);
* ``langchain + no-op handler``: LangChain dispatching each token to a handler
  that does nothing (what any callback handler costs, LangChain's share);
* ``bridge, unobserved``: the same with :class:`StreamtapCallbackHandler`,
  outside any streamtap run and with nobody listening;
* ``bridge, streamed``: the same inside a streamtap module whose
  ``module.stream()`` the caller reads: every token becomes a ``Chunk`` event
  delivered to the caller (the case the bridge exists for).

The machine's speed drifts, so each round times the floor and then each case,
and the ratio is taken per round; the median ratio over the rounds is reported.

Run:  .venv/bin/python bench/bench_langchain_bridge.py [--tokens N] [--rounds R]

Not part of the test suite's pass/fail (tests/bridges/test_langchain.py checks behaviour).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import typing as t

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from streamtap import ModuleBase
from streamtap.bridges.langchain import StreamtapCallbackHandler


def make_model(tokens: int) -> GenericFakeChatModel:
    words = " ".join("x" for _ in range((tokens + 1) // 2))  # "x", " ", "x"...: one chunk each
    return GenericFakeChatModel(messages=iter([AIMessage(content=words)] * 1))


def floor(tokens: int, _handler: StreamtapCallbackHandler) -> int:
    return sum(1 for _ in make_model(tokens).stream("q"))


class Noop(BaseCallbackHandler):
    """A LangChain handler that does nothing, configured like the bridge's."""

    raise_error = True
    run_inline = True


NOOP = Noop()


def noop(tokens: int, _handler: StreamtapCallbackHandler) -> int:
    return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [NOOP]}))


def unobserved(tokens: int, handler: StreamtapCallbackHandler) -> int:
    return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [handler]}))


class Streaming(ModuleBase):
    """A streamtap module streaming a LangChain model's answer through the bridge."""

    def forward(self, tokens: int, handler: StreamtapCallbackHandler) -> int:
        return sum(1 for _ in make_model(tokens).stream("q", config={"callbacks": [handler]}))


def streamed(tokens: int, handler: StreamtapCallbackHandler) -> int:
    n = 0
    for ev in Streaming().buffered(1 << 20).stream(tokens, handler):
        if ev.kind == "chunk":
            n += 1
    return n


CASES: dict[str, t.Callable[[int, StreamtapCallbackHandler], int]] = {
    "langchain + no-op handler": noop,
    "bridge, unobserved": unobserved,
    "bridge, streamed": streamed,
}


def timed(
    fn: t.Callable[[int, StreamtapCallbackHandler], int], tokens: int, handler: StreamtapCallbackHandler
) -> tuple[float, int]:
    gc.collect()
    t0 = time.perf_counter()
    n = fn(tokens, handler)
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print the per-chunk cost of each case and its median ratio to the floor; return the ratios."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tokens", type=int, default=4000, help="chunks per run")
    p.add_argument("--rounds", type=int, default=9)
    a = p.parse_args(argv)
    handler = StreamtapCallbackHandler()
    for fn in (floor, *CASES.values()):
        timed(fn, 200, handler)  # warm up
    ratios: dict[str, list[float]] = {k: [] for k in CASES}
    floor_us: list[float] = []
    case_us: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(a.rounds):
        base, n0 = timed(floor, a.tokens, handler)
        floor_us.append(base / n0 * 1e6)
        for name, fn in CASES.items():
            took, n = timed(fn, a.tokens, handler)
            assert n == n0, f"{name}: {n} chunks, expected {n0}"
            case_us[name].append(took / n * 1e6)
            ratios[name].append(took / base)
    print(f"LangChain .stream() of GenericFakeChatModel, {a.tokens} chunks per run, {a.rounds} rounds (median)")
    print(f"{'case':<27} {'us/chunk':>9} {'vs langchain':>13} {'vs no-op handler':>17}")
    print(f"{'langchain':<27} {statistics.median(floor_us):9.2f} {'1.00x':>13}")
    out = {}
    noop_r = ratios["langchain + no-op handler"]
    for name in CASES:
        r = statistics.median(ratios[name])
        vs_noop = statistics.median(x / y for x, y in zip(ratios[name], noop_r))
        out[name] = r
        out[name + " vs no-op"] = vs_noop
        print(
            f"{name:<27} {statistics.median(case_us[name]):9.2f} {r:7.2f}x {(r - 1) * 100:+5.1f}% {vs_noop:9.2f}x {(vs_noop - 1) * 100:+5.1f}%"
        )
    return out


if __name__ == "__main__":
    main()
