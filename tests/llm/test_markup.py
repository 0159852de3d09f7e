"""The inline tool-markup filter: markup never reaches text; text is never dropped, reordered or held back needlessly."""

from __future__ import annotations

import itertools
import json
import typing as t

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamtap.llm.markup import HERMES, INTERNLM, Markup, MarkupFilter, Text, markers_for
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI, capture_events

MARKERS = HERMES + INTERNLM
OPENERS = [a for a, _ in MARKERS]
# Ordinary text is built from near-misses of the markers, so that partial markers are common.
FRAGMENTS = [
    "<",
    "<t",
    "<tool",
    "<tool_c",
    "<|",
    "<|action",
    "<|action_start",
    "|>",
    ">",
    "</tool_call>",
    "<|action_end|>",
    "a",
    " ",
    "\n",
    "x<y",
    "{}",
]
ordinary = st.lists(st.sampled_from(FRAGMENTS) | st.text(alphabet="ab <>|_/\n", max_size=6), max_size=8).map("".join)
body = st.text(alphabet='ab"{}: <>|_', max_size=20)
segment = st.one_of(
    ordinary.map(lambda s: ("text", s, "")),
    st.tuples(st.sampled_from(MARKERS), body).map(lambda mb: ("markup", mb[1], mb[0][0])),
)


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def run_filter(pieces: list[str]) -> list[t.Any]:
    f = MarkupFilter(MARKERS)
    out: list[t.Any] = []
    for p in pieces:
        out.extend(f.feed(p))
    out.extend(f.close())
    return out


@settings(deadline=None, max_examples=300)
@given(st.lists(segment, max_size=8), st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_markup_never_leaks_and_text_is_kept(segments: list[tuple[str, str, str]], cuts: list[int]) -> None:
    closer_of = dict(MARKERS)
    full = "".join(s if kind == "text" else opener + s + closer_of[opener] for kind, s, opener in segments)
    expected_text = "".join(s for kind, s, _ in segments if kind == "text")
    expected_blocks = [(s, opener) for kind, s, opener in segments if kind == "markup"]
    # Only the markers we placed may be markers: generated text or bodies must not form others.
    whole = run_filter([full])
    assume([(p.body, p.opener) for p in whole if isinstance(p, Markup)] == expected_blocks)

    out = run_filter(split_at(full, cuts))
    text = "".join(p.text for p in out if isinstance(p, Text))
    blocks = [(p.body, p.opener) for p in out if isinstance(p, Markup)]
    assert text == expected_text  # no marker byte leaked, nothing dropped or reordered
    assert blocks == expected_blocks
    assert all(p.complete for p in out if isinstance(p, Markup))


@settings(deadline=None, max_examples=200)
@given(ordinary, st.lists(st.integers(min_value=0, max_value=1000), max_size=20))
def test_hold_back_is_minimal(text: str, cuts: list[int]) -> None:
    assume(not any(o in text for o in OPENERS))
    f = MarkupFilter(MARKERS)
    released = ""
    for piece in split_at(text, cuts):
        released += "".join(p.text for p in f.feed(piece) if isinstance(p, Text))
        held = f.held
        # Everything but the longest suffix that could still start a marker is out already.
        assert released + held == text[: len(released) + len(held)]
        if held:
            assert any(o.startswith(held) and o != held for o in OPENERS)
        consumed = released + held
        for n in range(len(held) + 1, min(len(consumed), 20) + 1):  # and no longer suffix could
            assert not any(o.startswith(consumed[-n:]) for o in OPENERS)
    released += "".join(p.text for p in f.close() if isinstance(p, Text))
    assert released == text


def test_unterminated_markup_is_not_shown() -> None:
    f = MarkupFilter()
    out = f.feed('ok <tool_call>{"name": "x"')
    out += f.close()
    assert out == [Text("ok "), Markup('{"name": "x"', "<tool_call>", complete=False)]


def test_styles() -> None:
    assert markers_for("qwen") == HERMES
    with pytest.raises(ValueError, match="Unknown tool markup style 'xml'"):
        markers_for("xml")
    with pytest.raises(ValueError, match="markers must be"):
        MarkupFilter([("", "x")])


@settings(deadline=None, max_examples=15)
@given(
    st.lists(st.sampled_from(["hello", " <b>", "<", " x|y ", "<tool", "done."]), min_size=1, max_size=6),
    st.integers(0, 5),
)
def test_chat_module_hides_markup_over_http(server: FakeOpenAI, words: list[str], where: int) -> None:
    """Through the real server and client: the echoed message carries a tool call at a random position."""
    call = '<tool_call>{"name": "get_current_weather", "arguments": {"location": "Oslo"}}</tool_call>'
    parts = list(words)
    parts.insert(where % (len(parts) + 1), call)
    message = "".join(parts)
    assume(message.count("<tool_call>") == 1)
    llm = OpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "object"}}}]
    with capture_events() as events:
        reply = llm(message, tools=tools)
    chunks = [e.delta for e in events.of("chunk") if e.channel == "text"]
    assert "".join(chunks) == "You said: " + message.strip().replace(call, "")
    assert not any(s in c for c in chunks for s in ("<tool_call", "</tool_call>", "get_current_weather"))
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("get_current_weather", {"location": "Oslo"})
    ]
