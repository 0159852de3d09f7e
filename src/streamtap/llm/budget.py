"""The time budget of one model call: one deadline for the answer to start, and the retries that fit in it.

``OpenAIChat(timeout=3, max_retries=2)`` means: the model has 3 seconds, in
all, to start answering -- connecting, sending, waiting for the first byte,
every retry and every wait between retries included. A retry is made only if
it can still start before the deadline: a back-off (or a server's
``Retry-After``) that would end past it fails the call at once, and says so.
The ``openai`` client's own retries are off (they would multiply the budget).

Standard library only; the chat modules feed it what the ``openai`` client saw.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import typing as t

from ..exceptions import UsageError

__all__ = ["Budget", "is_retryable_status", "retry_after"]

_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 8.0
_MIN_ATTEMPT_SHARE = 0.1  # a retry needs at least this share of the timeout left for itself


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 409, 429 and 5xx (the statuses the ``openai`` client retries)."""
    return status in (408, 409, 429) or status >= 500


def retry_after(headers: t.Mapping[str, str] | None) -> float | None:
    """The wait a server asked for, in seconds: ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP date).

    ``None`` when there is no such header or it cannot be read.
    """
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if divisor == 1.0 else None
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


class Budget:
    """The deadline of one model call and its attempts.

    Args:
        timeout: seconds, in all, for the answer to start (retries included).
        max_retries: retries at most (0: one attempt).
        clock: a monotonic clock (tests may pass their own).

    Raises:
        UsageError: a timeout that is not a positive number, or a negative ``max_retries``.
    """

    __slots__ = ("_clock", "attempt_timeout", "attempts", "declined_wait", "max_retries", "started", "timeout")

    def __init__(self, timeout: float, max_retries: int, *, clock: t.Callable[[], float] = time.monotonic) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not timeout > 0
            or not math.isfinite(timeout)
        ):
            msg = f"timeout must be a positive number of seconds (the whole call's budget), not {timeout!r}."
            raise UsageError(msg)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            msg = f"max_retries must be a whole number 0 or more, not {max_retries!r}."
            raise UsageError(msg)
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._clock = clock
        self.started = clock()
        self.attempts = 0
        self.attempt_timeout = self.timeout
        """The timeout of the latest attempt: what was left of the budget when it started."""
        self.declined_wait: float | None = None
        """A server's ``Retry-After`` that did not fit in the budget (the call failed instead of waiting)."""

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self._clock() - self.started

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(self.timeout - self.elapsed(), 0.0)

    def start_attempt(self) -> float:
        """Count an attempt; return its timeout: what is left of the budget."""
        self.attempts += 1
        self.attempt_timeout = max(self.remaining(), 1e-3)
        return self.attempt_timeout

    def retry_delay(self, *, retryable: bool, server_wait: float | None = None) -> float | None:
        """How long to wait before the next attempt, or ``None``: give up now.

        Args:
            retryable: whether the failure is worth retrying at all.
            server_wait: the server's ``Retry-After``, if it sent one (it replaces the back-off).
        """
        if not retryable or self.attempts > self.max_retries:
            return None
        if server_wait is not None:
            delay = server_wait
        else:  # the openai client's back-off: 0.5 s, 1 s, 2 s... at most 8 s, with up to 25 % jitter
            delay = min(_FIRST_BACKOFF * 2.0 ** (self.attempts - 1), _MAX_BACKOFF) * (1 - 0.25 * random.random())  # noqa: S311 - jitter for retry back-off, not cryptography
        if delay + self.timeout * _MIN_ATTEMPT_SHARE >= self.remaining():
            if server_wait is not None:
                self.declined_wait = server_wait
            return None
        return delay

    def summary(self) -> str:
        """``"2 attempts, 1.52 s in all"``: for error messages."""
        n = self.attempts
        return f"{n} attempt{'s' if n != 1 else ''}, {self.elapsed():.2f} s in all"
