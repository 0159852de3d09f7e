"""The time budget of a model call, on a simulated clock: retries never take the call past its deadline."""

from __future__ import annotations

import email.utils
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtap.exceptions import UsageError
from streamtap.llm.budget import Budget, is_retryable_status, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(
    timeout=st.floats(0.01, 120),
    max_retries=st.integers(0, 10),
    failures=st.lists(
        st.tuples(st.floats(0, 1), st.one_of(st.none(), st.floats(0, 100))),  # (share of the attempt used, Retry-After)
        min_size=1,
        max_size=20,
    ),
)
def test_attempts_and_waits_fit_in_the_timeout(
    timeout: float, max_retries: int, failures: list[tuple[float, float | None]]
) -> None:
    """Whatever fails how, the attempts (each at most its timeout) and the waits end by the deadline."""
    clock = Clock()
    budget = Budget(timeout, max_retries, clock=clock)
    for used, server_wait in failures:
        attempt_timeout = budget.start_attempt()
        assert 0 < attempt_timeout <= timeout
        clock.now += used * attempt_timeout  # the attempt fails after this long
        delay = budget.retry_delay(retryable=True, server_wait=server_wait)
        if delay is None:
            break
        if server_wait is not None:
            assert delay == server_wait  # the server's word, not the back-off
        clock.now += delay
        assert budget.elapsed() < timeout  # a retry always starts before the deadline
    assert budget.attempts <= max_retries + 1
    assert budget.elapsed() <= timeout + 1e-9


def test_no_retry_for_what_is_not_retryable() -> None:
    budget = Budget(10, 5)
    budget.start_attempt()
    assert budget.retry_delay(retryable=False) is None


def test_a_retry_after_past_the_deadline_is_declined_and_remembered() -> None:
    clock = Clock()
    budget = Budget(2, 3, clock=clock)
    budget.start_attempt()
    assert budget.retry_delay(retryable=True, server_wait=30) is None
    assert budget.declined_wait == 30
    assert budget.summary() == "1 attempt, 0.00 s in all"


def test_back_off_grows_like_the_openai_clients() -> None:
    clock = Clock()
    budget = Budget(1000, 5, clock=clock)
    delays = []
    for _ in range(5):
        budget.start_attempt()
        delay = budget.retry_delay(retryable=True)
        assert delay is not None
        delays.append(delay)
    for n, d in enumerate(delays):
        full = min(0.5 * 2**n, 8.0)
        assert 0.75 * full <= d <= full


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None and retry_after(None) is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after({"retry-after": when}) or 0) <= 30
    assert retry_after({"retry-after": "-5"}) == 0.0


def test_retryable_statuses() -> None:
    assert [s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503) if is_retryable_status(s)] == [
        408, 409, 429, 500, 502, 503,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("timeout", "retries"), [(0, 1), (-2, 1), (float("inf"), 1), ("5", 1), (5, -1), (5, 1.5), (5, True)]
)
def test_bad_values_are_refused_by_name(timeout: object, retries: object) -> None:
    with pytest.raises(UsageError, match="timeout|max_retries"):
        Budget(timeout, retries)  # type: ignore[arg-type]
