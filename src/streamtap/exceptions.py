"""The exceptions streamtap raises.

::

    StreamtapError              base of everything below
     +-- UsageError             the caller used the API wrongly; the message says how to fix it
     +-- StreamOverflowError    a stream's consumer fell behind under the "error" policy
     +-- MissingDependencyError an optional part was used without its extra installed
     +-- RunCancelled           a run was cancelled (raised inside it, and to its waiters)

A module's own exceptions are never wrapped: they reach the caller unchanged.
"""

from __future__ import annotations

__all__ = [
    "MissingDependencyError",
    "RunCancelled",
    "StreamOverflowError",
    "StreamtapError",
    "UsageError",
]


class StreamtapError(Exception):
    """Base class of every exception streamtap raises itself."""


class UsageError(StreamtapError, ValueError):
    """The API was used wrongly. The message names the value and says what to do instead."""


class StreamOverflowError(StreamtapError):
    """A stream with ``policy="error"`` received more events than its ``maxsize`` while its consumer lagged.

    The run that produced the events is not affected; only this stream stops.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        super().__init__(
            f"The stream's consumer fell more than maxsize={maxsize} events behind and policy='error' was chosen. "
            "Read faster, raise maxsize, or use policy='block' (back-pressure) or policy='drop_oldest'."
        )


class MissingDependencyError(StreamtapError, ImportError):
    """An optional feature was used but the packages it needs are not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(f"{feature} needs optional packages. Install them with: pip install 'streamtap[{extra}]'")


class RunCancelled(StreamtapError):
    """The run was cancelled, by :meth:`RunHandle.cancel` or by closing its stream.

    Raised inside the run at its next chunk boundary (or by
    :meth:`RunContext.raise_if_cancelled`), so that synchronous code stops;
    the run then ends with status ``cancelled``.
    """

    __streamtap_status__ = "cancelled"
