"""``timeout`` is a total deadline for the model to start answering, retries included.

Elapsed times are measured, not slept: each test bounds the real duration of
the call from below and above.
"""

from __future__ import annotations

import re
import time

import pytest

from streamtap.exceptions import RunCancelled
from streamtap.llm.errors import LLMError
from streamtap.testing import capture_events

from .helpers import PROMPT, chat_for, ends
from .misbehaving import Misbehaving

SLACK = 0.75  # seconds a loaded 2-core machine may add to a deadline (the bugs were off by seconds)


def timed(fn: object) -> tuple[float, BaseException | None, object]:
    """``fn()``'s duration, exception and result (the ``openai`` package is imported before the clock starts)."""
    import openai  # noqa: F401 - a first import takes a second on this machine; it is not the model's time

    t0 = time.monotonic()
    try:
        out = fn()  # type: ignore[operator]
    except Exception as exc:
        return time.monotonic() - t0, exc, None
    return time.monotonic() - t0, None, out


def attempts_in(message: str) -> int:
    found = re.search(r"(\d+) attempts?", message)
    assert found, message
    return int(found.group(1))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_hang_before_the_first_byte_fails_at_the_timeout_not_a_multiple(misbehaving: Misbehaving, kind: str) -> None:
    """With retries left (max_retries=2), a hanging server still fails after ``timeout``, not 3 x timeout."""
    llm = chat_for(misbehaving, "hang-first", kind=kind, timeout=1.0, max_retries=2)  # type: ignore[arg-type]
    elapsed, error, _ = timed(lambda: llm(PROMPT))
    assert isinstance(error, LLMError) and error.reason == "timeout"
    assert 1.0 <= elapsed < 1.0 + SLACK, elapsed
    message = str(error)
    assert "did not start answering within the 1.0 s timeout" in message
    assert attempts_in(message) == 1 == len(misbehaving.requests)
    spent = float(re.search(r"([\d.]+) s in all", message).group(1))  # type: ignore[union-attr]
    assert 1.0 <= spent <= elapsed + 0.01  # printed to 0.01 s


def test_retries_fit_inside_the_timeout(misbehaving: Misbehaving) -> None:
    """A server failing with 500: the client retries with back-off, and gives up when the budget is spent."""
    llm = chat_for(misbehaving, "500", timeout=1.2, max_retries=10)
    elapsed, error, _ = timed(lambda: llm(PROMPT))
    assert isinstance(error, LLMError) and error.reason == "server"
    assert elapsed < 1.2 + SLACK, elapsed
    assert attempts_in(str(error)) == len(misbehaving.requests) >= 2  # 0 s, ~0.5 s (next back-off ~1 s: too late)
    assert error.detail["attempts"] == len(misbehaving.requests)


def test_retries_succeed_inside_the_timeout(misbehaving: Misbehaving) -> None:
    llm = chat_for(misbehaving, "500", timeout=10, max_retries=2, headers={"x-fault-times": "1"})
    with capture_events() as events:
        assert llm(PROMPT) == PROMPT
    assert [r.fault for r in misbehaving.requests] == ["500", "ok"]
    assert ends(events)["llm"].status == "ok"


def test_retry_after_is_honoured_within_the_deadline(misbehaving: Misbehaving) -> None:
    llm = chat_for(misbehaving, "429", timeout=5, max_retries=1, headers={"x-retry-after": "0.6", "x-fault-times": "1"})
    elapsed, error, out = timed(lambda: llm(PROMPT))
    assert error is None and out == PROMPT
    first, second = misbehaving.requests
    assert second.started_at - first.started_at >= 0.6  # the server's Retry-After, not the client's own back-off
    assert elapsed < 0.6 + SLACK


def test_retry_after_beyond_the_deadline_fails_at_once(misbehaving: Misbehaving) -> None:
    llm = chat_for(misbehaving, "429", timeout=2, max_retries=2, headers={"x-retry-after": "30"})
    elapsed, error, _ = timed(lambda: llm(PROMPT))
    assert isinstance(error, LLMError) and error.reason == "rate_limit"
    assert elapsed < SLACK, elapsed  # no point waiting 30 s on a 2 s budget
    assert "retry after 30.0 s" in str(error) and "2.0 s timeout" in str(error)
    assert len(misbehaving.requests) == 1


def test_hang_mid_stream_fails_after_timeout_of_silence(misbehaving: Misbehaving) -> None:
    llm = chat_for(misbehaving, "hang-mid", timeout=0.6)
    with capture_events() as events:
        elapsed, error, _ = timed(lambda: llm(PROMPT))
    assert isinstance(error, LLMError) and error.reason == "timeout"
    assert 0.6 <= elapsed < 0.6 + SLACK, elapsed
    assert "stopped sending after 2 chunks" in str(error) and "0.6 s" in str(error)
    assert ends(events)["llm"].output == "alpha beta"


def test_cancel_during_a_retry_back_off(misbehaving: Misbehaving) -> None:
    """The wait between attempts is cancellable: a stop lands at once, not after the back-off."""
    llm = chat_for(misbehaving, "429", timeout=30, max_retries=5, headers={"x-retry-after": "5"})
    with capture_events() as events:
        handle = llm.start(PROMPT)
        misbehaving.wait_for(lambda r: r.finished_at is not None)
        cancelled = time.monotonic()
        handle.cancel("stop")
        with pytest.raises(RunCancelled):
            handle.result(timeout=5)
        assert time.monotonic() - cancelled < 1.0  # not the 5 s the server asked to wait
    assert ends(events)["llm"].status == "cancelled"
    assert len(misbehaving.requests) == 1


def test_a_per_call_timeout_replaces_the_modules(misbehaving: Misbehaving) -> None:
    llm = chat_for(misbehaving, "hang-first", timeout=30)
    elapsed, error, _ = timed(lambda: llm(PROMPT, timeout=0.5))
    assert isinstance(error, LLMError) and "within the 0.5 s timeout" in str(error)
    assert 0.5 <= elapsed < 0.5 + SLACK


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "3", True])
def test_a_bad_timeout_is_refused_with_its_value(misbehaving: Misbehaving, bad: object) -> None:
    from streamtap.exceptions import UsageError

    with pytest.raises(UsageError, match=re.escape(repr(bad))):
        chat_for(misbehaving, "ok", timeout=bad)  # type: ignore[arg-type]
    assert not misbehaving.requests
