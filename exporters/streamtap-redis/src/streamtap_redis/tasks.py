"""Waiting for helper tasks without swallowing the caller's own cancellation.

The pattern ``task.cancel(); with suppress(CancelledError): await task``
has a hole: if the *calling* task is cancelled while it waits, the
``CancelledError`` it gets is its own, and the ``suppress`` throws it away, so
the caller carries on as if nothing happened (a teardown that cancels it then
waits for ever, or a request acknowledged that was never finished).
:func:`settle` waits with :func:`asyncio.wait`, which never raises the awaited
task's outcome and raises ``CancelledError`` only when the caller itself is
cancelled. It needs no ``Task.cancelling()`` (3.11+), so it works on 3.10 too.

:func:`raise_if_cancelling` is for the retry loops that catch ``Exception``:
redis-py runs its reads under its own timeout, and a cancellation that lands
as that timeout expires comes out as ``redis.exceptions.TimeoutError``; the
loop must not retry a task that is being cancelled. That check needs
``Task.cancelling()``: on 3.10 it does nothing (the loop retries, and the next
await sees the cancellation only if it is requested again).
"""

from __future__ import annotations

import asyncio
import typing as t

__all__ = ["cancel_and_wait", "raise_if_cancelling", "settle"]


async def settle(aw: t.Awaitable[t.Any], timeout: float | None = None) -> asyncio.Future[t.Any]:
    """Wait for ``aw`` to finish, whatever its outcome; return it as a (done, unless timed out) future.

    The awaited task's exception (``CancelledError`` included) is retrieved, never raised: look at the
    returned future. The caller's own cancellation is never swallowed: it propagates at once.

    Args:
        aw: a task, future or other awaitable (wrapped in a task).
        timeout: seconds to wait at most (``None``: until it finished).
    """
    fut = asyncio.ensure_future(aw)
    wrapped = fut is not aw  # a task of ours around an awaitable: not left pending after a timeout
    if not fut.done():
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if wrapped and not fut.done():
                fut.cancel()
    if fut.done() and not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" log
    return fut


async def cancel_and_wait(task: asyncio.Future[t.Any], timeout: float | None = None) -> asyncio.Future[t.Any]:
    """Cancel ``task`` and wait until it finished; returns it (its outcome retrieved, not raised).

    The caller's own cancellation, arriving meanwhile, propagates.
    """
    task.cancel()
    return await settle(task, timeout)


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` when the current task is being cancelled (Python 3.11+; a no-op on 3.10).

    Call it first in an ``except Exception`` of a retry loop, so that a cancellation another library turned into
    an ordinary exception still stops the loop.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError
