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
from streamtap.bus import subscribe
from streamtap.context import current
from streamtap.exceptions import RunCancelled
from streamtap.testing import capture_events, check_invariants

from .helpers import chat_for, ends
from .misbehaving import Misbehaving

WORDS = " ".join(f"w{i}" for i in range(20))
SLOW = {"x-delay": "0.3"}  # the client sits blocked in a read when the cancel comes


def statuses(events: t.Any) -> dict[str, str]:
    return {kind: end.status for kind, end in ends(events).items()}


@pytest.mark.parametrize("fault", ["close", "ok"])
@pytest.mark.parametrize("through", ["chat", "agent"])
def test_sync_cancel_ends_cancelled(misbehaving: Misbehaving, fault: str, through: str) -> None:
    llm = chat_for(misbehaving, fault, headers=SLOW)
    module: t.Any = llm if through == "chat" else FunctionCallAgent(llm, [])
    with capture_events() as events:
        stream = module.stream(WORDS)
        seen = 0
        for event in stream:
            seen += event.kind == "chunk"
            if seen == 2:
                break  # the model's second chunk has reached us; the client now waits 0.3 s for the third
        cancelled = time.monotonic()
        stream.handle.cancel("user pressed stop")
        with pytest.raises(RunCancelled, match="user pressed stop"):
            stream.handle.result(timeout=5)
    req = misbehaving.wait_for(lambda r: r.finished_at is not None)
    assert req.client_closed and req.finished_at is not None
    assert req.finished_at - cancelled < 0.3  # the model stream was closed at once
    assert req.chunks_sent < 5
    check_invariants(events)
    assert statuses(events) == (
        {"llm": "cancelled"} if through == "chat" else {"llm": "cancelled", "agent": "cancelled"}
    )


@pytest.mark.parametrize("fault", ["close", "ok"])
@pytest.mark.parametrize("through", ["chat", "agent"])
async def test_async_cancel_ends_cancelled(misbehaving: Misbehaving, fault: str, through: str) -> None:
    llm = chat_for(misbehaving, fault, kind="async", headers=SLOW)
    module: t.Any = llm if through == "chat" else AsyncFunctionCallAgent(llm, [])
    with capture_events() as events:
        stream = module.astream(WORDS)
        seen = 0
        async for event in stream:
            seen += event.kind == "chunk"
            if seen == 2:
                break
        cancelled = time.monotonic()
        stream.handle.cancel("user pressed stop")
        with pytest.raises((RunCancelled, asyncio.CancelledError)):
            await stream.handle
    req = await asyncio.to_thread(misbehaving.wait_for, lambda r: r.finished_at is not None)
    assert req.client_closed and req.finished_at is not None
    assert req.finished_at - cancelled < 0.3
    check_invariants(events)
    assert set(statuses(events).values()) == {"cancelled"}


def test_cancel_at_the_last_chunk_still_ends_cancelled(misbehaving: Misbehaving) -> None:
    """However the model stream ended after a cancel (cut, or complete), the run ends ``cancelled``.

    The cancel comes from a subscriber, in the producing thread, while the last
    content chunk is emitted: no chunk follows that could notice it.
    """

    def cancel_at_three(event: t.Any) -> None:
        if event.delta == " three":
            ctx = current()
            assert ctx is not None
            ctx.token.cancel("too late, but asked")

    llm = chat_for(misbehaving, "close")
    with (
        capture_events() as events,
        subscribe(cancel_at_three, kinds=["chunk"]),
        pytest.raises(RunCancelled, match="too late, but asked"),
    ):
        llm.start("one two three").result(timeout=5)
    assert [c.delta for c in events.of("chunk")] == ["one", " two", " three"]
    assert ends(events)["llm"].status == "cancelled"
