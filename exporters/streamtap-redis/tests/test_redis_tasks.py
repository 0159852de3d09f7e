"""Waiting for a cancelled helper task never swallows the caller's own cancellation (streamtap_redis.tasks)."""

from __future__ import annotations

import asyncio
import typing as t

import pytest

from streamtap_redis.tasks import cancel_and_wait, settle


async def _slow_to_stop(stopping: asyncio.Event, release: asyncio.Event) -> None:
    """A helper whose cleanup, once cancelled, takes a while (as a PubSub closing its connection does)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopping.set()
        await release.wait()
        raise


async def test_the_callers_cancellation_propagates_while_it_waits_for_a_cancelled_helper() -> None:
    """The outer task is cancelled while it waits for its helper's cleanup: it ends cancelled, not 'done'."""
    stopping, release = asyncio.Event(), asyncio.Event()
    helper = asyncio.ensure_future(_slow_to_stop(stopping, release))
    await asyncio.sleep(0)  # the helper starts waiting
    went_on = asyncio.Event()

    async def owner() -> None:
        await cancel_and_wait(helper)
        went_on.set()  # what a swallowed cancellation leads to: the owner carries on (e.g. acknowledges a request)

    task = asyncio.ensure_future(owner())
    await stopping.wait()  # the owner now waits for the helper's cleanup
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and not went_on.is_set()
    release.set()
    done = await settle(helper)
    assert done.cancelled()


async def test_a_helpers_own_cancellation_or_failure_is_not_raised() -> None:
    helper = asyncio.ensure_future(asyncio.Event().wait())
    await asyncio.sleep(0)
    assert (await cancel_and_wait(helper)).cancelled()

    async def fails() -> None:
        raise RuntimeError("boom")

    failed = await settle(fails())
    assert isinstance(failed.exception(), RuntimeError)


async def test_settle_gives_up_after_its_timeout_and_leaves_no_pending_wrapper() -> None:
    never = asyncio.Event()

    class Waits:
        def __await__(self) -> t.Generator[t.Any, None, bool]:
            return never.wait().__await__()

    fut = await settle(Waits(), timeout=0.05)
    await asyncio.sleep(0)
    assert fut.cancelled()
