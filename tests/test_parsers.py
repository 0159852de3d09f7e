"""The streaming JSON parser: successively more complete objects from text chunks."""

from __future__ import annotations

import itertools
import json
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap.llm.errors import LLMError
from streamtap.llm.openai import OpenAIChat
from streamtap.parsers import JsonOutputParser, PartialJSON
from streamtap.testing import FakeOpenAI, capture_events

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
containers = st.one_of(st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=5), json_values, max_size=4))


def refines(before: t.Any, after: t.Any) -> bool:
    """``after`` extends ``before``: keys and items only appear, strings only grow, scalars stay."""
    if isinstance(before, dict):
        return isinstance(after, dict) and all(k in after and refines(v, after[k]) for k, v in before.items())
    if isinstance(before, list):
        if not isinstance(after, list) or len(after) < len(before):
            return False
        return all(refines(b, a) for b, a in zip(before[:-1], after)) and (
            not before or refines(before[-1], after[len(before) - 1])
        )
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    return before == after


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@settings(deadline=None, max_examples=200)
@given(
    containers,
    st.lists(st.integers(0, 10_000), max_size=40),
    st.booleans(),
    st.sampled_from(["", "Sure:\n```json\n", "Here you go "]),
)
def test_partial_values_refine_to_the_whole(value: t.Any, cuts: list[int], indent: bool, preamble: str) -> None:
    text = json.dumps(value, indent=2 if indent else None)
    parser = PartialJSON()
    seen = []
    for piece in split_at(preamble + text + "\n```", cuts):
        v = parser.feed(piece)
        if v is not None and (not seen or v != seen[-1]):
            seen.append(v)
    assert parser.done
    assert seen[-1] == value
    for before, after in itertools.pairwise(seen):
        assert refines(before, after), (before, after)


def test_the_seed_story_shape() -> None:
    out = list(
        JsonOutputParser().stream(['{"con', 'tent": "', "掩", "耳", '盗铃"}']).filter(kinds="chunk", channels="data")
    )
    assert [e.delta for e in out] == [
        {},
        {"content": ""},
        {"content": "掩"},
        {"content": "掩耳"},
        {"content": "掩耳盗铃"},
    ]


def test_numbers_and_literals_wait_until_complete() -> None:
    p = PartialJSON()
    assert p.feed('{"n": 2') == {}
    assert p.feed("5") == {}
    assert p.feed(', "ok": tr') == {"n": 25}
    assert p.feed("ue}") == {"n": 25, "ok": True}


@pytest.fixture(scope="module")
def server() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def test_parser_over_a_streaming_model(server: FakeOpenAI) -> None:
    llm = OpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    chain = JsonOutputParser(llm, name="story_parser")
    with capture_events() as events:
        final = chain("Output JSON. Tell the story of covering one's ears to steal a bell; one key, `content`.")
    partials = [e.delta for e in events.of("chunk") if e.channel == "data"]
    assert len(partials) > 10 and partials[0] == {}
    assert all(refines(a, b) for a, b in itertools.pairwise(partials))
    assert final == partials[-1] and final["content"].startswith("Covering one's ears")
    # The model's own text still streamed, under the model's run, nested in the parser's.
    text = "".join(e.delta for e in events.of("chunk") if e.channel == "text")
    assert json.loads(text) == final
    runs = events.runs()
    parser_run = next(r for r in runs.values() if r.name == "story_parser")
    assert next(r for r in runs.values() if r.kind == "llm").parent_id == parser_run.run_id


def test_upstream_failure_fails_the_parser(server: FakeOpenAI) -> None:
    llm = OpenAIChat("fake-gpt", base_url=server.base_url, max_retries=0)
    with pytest.raises(LLMError, match="HTTP 500"):
        JsonOutputParser(llm)("json [fault=500]")


def test_json_story_example(run_example: t.Callable[..., str]) -> None:
    lines = run_example("json_story.py").splitlines()
    assert lines[0] == "{}" and lines[6] == "......"
    final = lines[7]
    pieces = lines[8].rstrip("|").split("|")
    assert "".join(pieces) in final and len(pieces) > 20


def test_a_bracket_in_the_preamble_is_not_taken_for_the_json() -> None:
    """Text like "[as JSON]" before the JSON is skipped; no junk partial is yielded (review finding)."""
    from streamtap.parsers import PartialJSON

    p = PartialJSON()
    seen = [p.feed(c) for c in 'Here is the result [as JSON]:\n```json\n{"content": "hi"}```']
    partials = [v for v in seen if v is not None]
    assert partials[-1] == {"content": "hi"} and p.done
    assert all(isinstance(v, dict) for v in partials)
