"""Cancelling a run whose model stream is close-delimited (HTTP/1.0 style) ends it ``cancelled``.

Closing such a stream from the cancelling thread looks to the client like the
end of the body, so the stream ends "normally"; the run must still report the
cancel, not ``ok`` with the partial text.
"""

from __future__ import annotations

import asyncio
import time
import typing as t

import pytest

from streamtap.agents import AsyncFunctionCallAgent, FunctionCallAgent
from streamtap.exceptions import RunCancelled
from streamtap.testing import capture_events, check_invariants

from .helpers import chat_for, ends
from .misbehaving import Misbehaving, Request

WORDS = " ".join(f"w{i}" for i in range(200))
SLOW = {"x-delay": "0.02"}


def two_chunks_sent(req: Request) -> bool:
    return req.chunks_sent >= 2


@pytest.mark.parametrize("fault", ["close", "ok"])
@pytest.mark.parametrize("through", ["chat", "agent"])
def test_sync_cancel_ends_cancelled(misbehaving: Misbehaving, fault: str, through: str) -> None:
    llm = chat_for(misbehaving, fault, headers=SLOW)
    module: t.Any = llm if through == "chat" else FunctionCallAgent(llm, [])
    with capture_events() as events:
        handle = module.start(WORDS)
        req = misbehaving.wait_for(two_chunks_sent)
        cancelled = time.monotonic()
        handle.cancel("user pressed stop")
        with pytest.raises(RunCancelled, match="user pressed stop"):
            handle.result(timeout=5)
    closed = misbehaving.wait_for(lambda r: r is req and r.finished_at is not None)
    assert closed.client_closed and closed.finished_at is not None
    assert closed.finished_at - cancelled < 0.2  # the model stream was closed at once
    assert closed.chunks_sent < 100
    check_invariants(events)
    assert {kind: end.status for kind, end in ends(events).items()} == (
        {"llm": "cancelled"} if through == "chat" else {"llm": "cancelled", "agent": "cancelled"}
    )


@pytest.mark.parametrize("fault", ["close", "ok"])
@pytest.mark.parametrize("through", ["chat", "agent"])
async def test_async_cancel_ends_cancelled(misbehaving: Misbehaving, fault: str, through: str) -> None:
    llm = chat_for(misbehaving, fault, kind="async", headers=SLOW)
    module: t.Any = llm if through == "chat" else AsyncFunctionCallAgent(llm, [])
    with capture_events() as events:
        handle = module.astart(WORDS)
        req = await asyncio.to_thread(misbehaving.wait_for, two_chunks_sent)
        cancelled = time.monotonic()
        handle.cancel("user pressed stop")
        with pytest.raises((RunCancelled, asyncio.CancelledError)):
            await handle
    closed = await asyncio.to_thread(misbehaving.wait_for, lambda r: r is req and r.finished_at is not None)
    assert closed.client_closed and closed.finished_at is not None
    assert closed.finished_at - cancelled < 0.2
    check_invariants(events)
    assert {e.status for e in ends(events).values()} == {"cancelled"}


def test_cancel_after_the_stream_ended_still_ends_cancelled(misbehaving: Misbehaving) -> None:
    """However the model stream ended (here: completely), a run cancelled meanwhile ends ``cancelled``."""
    llm = chat_for(misbehaving, "close")
    with capture_events() as events:
        stream = llm.stream("one two three")
        for event in stream:
            if event.kind == "chunk" and event.delta == " three":
                misbehaving.wait_for(lambda r: r.finished_at is not None)  # the server has sent everything
                stream.handle.cancel("too late, but asked")
        with pytest.raises(RunCancelled):
            stream.handle.result(timeout=5)
    assert ends(events)["llm"].status == "cancelled"
