"""Every model fault of the reliability table, with the real ``openai`` client against a misbehaving server.

Each fault gives exactly one End per run, with the right status, a clear error
(``LLMError.reason`` and a message that says what failed), the partial output
kept on the End of a stream that broke, and -- through an agent -- a
user-facing text stream that ends.
"""

from __future__ import annotations

import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.agents import AsyncFunctionCallAgent, FunctionCallAgent
from streamtap.llm.errors import LLMError
from streamtap.testing import capture_events, check_invariants

from .helpers import PROMPT, chat_for, ends
from .misbehaving import Misbehaving

HUGE = 4 * 1024 * 1024


class Row(t.NamedTuple):
    status: str
    reason: str | None  # LLMError.reason
    output: str | None  # End.output: the answer, or the partial answer of a broken stream
    hint: str | None  # a phrase of the error message


ROWS = {
    "ok": Row("ok", None, PROMPT, None),
    "close": Row("ok", None, PROMPT, None),
    "500": Row("error", "server", None, "HTTP 500"),
    "429": Row("error", "rate_limit", None, "HTTP 429"),
    "401": Row("error", "auth", None, "rejected the API key"),
    "malformed": Row("error", "malformed_stream", "alpha beta", "malformed stream chunk"),
    "cut-chunked": Row("error", "stream_cut", "alpha beta", "answer is incomplete"),
    "cut-close": Row("error", "stream_cut", "alpha beta", "answer is incomplete"),
    "no-finish": Row("error", "stream_cut", PROMPT, "without a finish reason"),
    "cut-after-finish": Row("ok", None, PROMPT, None),  # the model had finished: only the stream's tail was lost
    "hang-first": Row("error", "timeout", None, "did not start answering within the 0.5 s timeout"),
    "hang-mid": Row("error", "timeout", "alpha beta", "stopped sending after 2 chunks"),
    "huge-delta": Row("ok", None, "x" * HUGE, None),
}
"""Fault -> what the run must report."""


def options(fault: str) -> dict[str, t.Any]:
    return {"timeout": 0.5 if fault.startswith("hang") else 5.0, "headers": {"x-retry-after": "0"}}


def check_row(fault: str, events: t.Any, error: BaseException | None, output: t.Any, kind: str = "llm") -> None:
    row = ROWS[fault]
    check_invariants(events)  # one End per Start, seq gap-free...
    end = ends(events)[kind]
    assert end.status == row.status, (end.status, end.error)
    if row.status == "ok":
        assert error is None and output == row.output and end.output == row.output
        return
    assert isinstance(error, LLMError), error
    assert error.reason == row.reason, (error.reason, str(error))
    assert row.hint is not None and row.hint in str(error)
    assert end.error is not None and end.error.message == str(error)
    assert end.output == row.output  # the partial answer of a broken stream stays on the End
    assert (error.partial or None) == row.output


def check_agent_row(fault: str, events: t.Any, error: BaseException | None, output: t.Any, text: str) -> None:
    """The agent reports what its model call reported; its user-facing text is what streamed."""
    row = ROWS[fault]
    assert text == (row.output or "")
    check_row(fault, events, error, output, kind="agent")
    assert ends(events)["llm"].status == row.status


@pytest.mark.parametrize("fault", list(ROWS))
def test_sync_chat(misbehaving: Misbehaving, fault: str) -> None:
    llm = chat_for(misbehaving, fault, **options(fault))
    error = output = None
    with capture_events() as events:
        try:
            output = llm(PROMPT)
        except Exception as exc:
            error = exc
    check_row(fault, events, error, output)


@pytest.mark.parametrize("fault", list(ROWS))
async def test_async_chat(misbehaving: Misbehaving, fault: str) -> None:
    llm = chat_for(misbehaving, fault, kind="async", **options(fault))
    error = output = None
    with capture_events() as events:
        try:
            output = await llm.acall(PROMPT)
        except Exception as exc:
            error = exc
    check_row(fault, events, error, output)


@pytest.mark.parametrize("fault", list(ROWS))
def test_agent_text_stream_ends(misbehaving: Misbehaving, fault: str) -> None:
    """Through an agent, the user-facing text stream ends (no hang, no exception mid-iteration); the result tells."""
    agent = FunctionCallAgent(chat_for(misbehaving, fault, **options(fault)), [])
    error = output = None
    with capture_events() as events:
        stream = agent.stream(PROMPT)
        text = "".join(stream.text())
        try:
            output = stream.handle.result(timeout=10)
        except Exception as exc:
            error = exc
    check_agent_row(fault, events, error, output, text)


@pytest.mark.parametrize("fault", list(ROWS))
async def test_async_agent_text_stream_ends(misbehaving: Misbehaving, fault: str) -> None:
    agent = AsyncFunctionCallAgent(chat_for(misbehaving, fault, kind="async", **options(fault)), [])
    error = output = None
    with capture_events() as events:
        stream = agent.astream(PROMPT)
        text = "".join([piece async for piece in stream.text()])
        try:
            output = await stream.handle
        except Exception as exc:
            error = exc
    check_agent_row(fault, events, error, output, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.integers(1, 6),
    cut=st.integers(0, 9),
    fault=st.sampled_from(["cut-close", "cut-chunked", "malformed"]),
)
def test_wherever_a_stream_breaks_the_end_tells_the_truth(
    misbehaving: Misbehaving, words: int, cut: int, fault: str
) -> None:
    """Cut (or corrupted) after any number of events: the run is ``ok`` exactly when the finish reason arrived,
    and its End carries exactly the text that streamed."""
    prompt = " ".join(f"w{i}" for i in range(words))
    llm = chat_for(misbehaving, fault, headers={"x-cut-after": str(cut)})
    with capture_events() as events:
        try:
            llm(prompt)
        except LLMError as exc:
            assert exc.reason == ("malformed_stream" if fault == "malformed" else "stream_cut")
    check_invariants(events)
    end = ends(events)["llm"]
    streamed = "".join(c.delta for c in events.of("chunk"))
    finished = cut > words  # events: one per word, then the finish reason, usage, [DONE]
    assert end.status == ("ok" if finished else "error")
    assert streamed == " ".join(prompt.split()[: min(cut, words)])
    assert (end.output or "") == streamed
