"""GenAI message conversion: OpenAI-style messages, prompts and replies in the conventions' shape (v1.41.1)."""

from __future__ import annotations

import json
import typing as t

import pytest
from genai_schema import validator
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtap import genai_messages as genai

text = st.text(max_size=40)
call_ids = st.text("abcdef0123456789_", min_size=1, max_size=12)
names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
arguments = st.one_of(
    st.dictionaries(names, st.one_of(st.integers(), text), max_size=3).map(json.dumps),
    text,  # arguments a model got wrong: not JSON
)
tool_calls = st.lists(
    st.builds(
        lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
        call_ids,
        names,
        arguments,
    ),
    max_size=3,
)
content_parts = st.lists(
    st.one_of(
        st.builds(lambda s: {"type": "text", "text": s}, text.filter(bool)),
        st.builds(
            lambda u: {"type": "image_url", "image_url": {"url": u}},
            st.sampled_from(["https://x.test/a.png", "data:image/png;base64,iVBO"]),
        ),
    ),
    min_size=1,
    max_size=3,
)
content = st.one_of(text.filter(bool), content_parts)
messages = st.lists(
    st.one_of(
        st.builds(lambda c: {"role": "system", "content": c}, text.filter(bool)),
        st.builds(lambda c: {"role": "user", "content": c}, content),
        st.builds(
            lambda c, calls: {"role": "assistant", "content": c, "tool_calls": calls},
            st.one_of(st.none(), st.just(""), text.filter(bool)),
            tool_calls,
        ),
        st.builds(lambda i, c: {"role": "tool", "tool_call_id": i, "content": c}, call_ids, text),
    ),
    max_size=6,
)


def _valid(attribute: str, value: t.Any) -> None:
    errors = list(validator(attribute).iter_errors(json.loads(json.dumps(value))))
    assert not errors, [e.message for e in errors[:3]]


@settings(max_examples=200, deadline=None)
@given(messages)
def test_any_openai_conversation_is_valid_input_messages(msgs: list[dict[str, t.Any]]) -> None:
    """Every OpenAI-style conversation converts to schema-valid messages, one per message, roles kept,
    no empty text part, one tool_call part per tool call."""
    out = genai.input_messages(msgs)
    _valid("gen_ai.input.messages", out)
    assert [m["role"] for m in out] == [m["role"] for m in msgs]
    for src, msg in zip(msgs, out):
        assert all(p["content"] for p in msg["parts"] if p["type"] == "text")
        assert [p["id"] for p in msg["parts"] if p["type"] == "tool_call"] == [
            c["id"] for c in src.get("tool_calls", ())
        ]
        if src["role"] == "tool":
            assert msg["parts"] == [
                {"type": "tool_call_response", "id": src["tool_call_id"], "response": src["content"]}
            ]
    assert genai.input_messages(out) == out  # already in shape: kept as it is


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(st.none(), st.just(""), text),
    tool_calls,
    st.sampled_from([None, "stop", "tool_calls", "length", "content_filter"]),
)
def test_any_reply_is_valid_output_messages(
    reply_text: str | None, calls: list[dict[str, t.Any]], reason: str | None
) -> None:
    """An assistant reply, with or without text and tool calls, is one valid output message with a known finish reason."""
    (out,) = genai.output_messages({"role": "assistant", "content": reply_text, "tool_calls": calls}, reason)
    _valid("gen_ai.output.messages", [out])
    assert out["finish_reason"] in genai.FINISH_REASONS
    if reason is None:
        assert out["finish_reason"] == ("tool_call" if calls else "stop")


@settings(max_examples=100, deadline=None)
@given(messages, st.integers(min_value=200, max_value=3_000))
def test_fit_keeps_valid_json_within_the_limit(msgs: list[dict[str, t.Any]], limit: int) -> None:
    """Cut to any limit that holds one message's skeleton, the text is still the conventions' JSON, never longer."""
    converted = genai.input_messages(msgs * 5)
    text = genai.fit(converted, limit, lambda v: json.dumps(v, separators=(",", ":")))
    if converted and len(json.dumps(genai._cap_strings(converted[-1:], 16), separators=(",", ":"))) <= limit:
        assert len(text) <= limit
        decoded = json.loads(text)
        _valid("gen_ai.input.messages", decoded)
        assert decoded[-1]["role"] == converted[-1]["role"]  # the latest message is the one kept


def test_prompt_shapes_and_call_arguments() -> None:
    """A string is one user message; {"args": [messages], "tools": [...], "history": [...]} is split up."""
    assert genai.request_content("hi").messages == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    req = genai.request_content(
        {"args": ["hi"], "tools": [tool], "history": [{"role": "assistant", "content": "earlier"}]}
    )
    assert [m["role"] for m in req.messages] == ["assistant", "user"]
    assert req.tool_definitions == [
        {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
    ]
    assert genai.request_content({"prompt": "kw"}).messages[0]["parts"][0]["content"] == "kw"
    odd = genai.request_content({"city": "Paris"}).messages  # not a prompt: one user message with its JSON
    assert odd == [{"role": "user", "parts": [{"type": "text", "content": '{"city":"Paris"}'}]}]


def test_tools_with_to_openai_and_media_parts() -> None:
    """Objects with to_openai() (like @tool) are tool definitions; images become uri / blob parts."""

    class Tool:
        def to_openai(self) -> dict[str, t.Any]:
            return {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

    assert genai.tool_definitions([Tool()]) == [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    ]
    parts = genai.parts_of(
        [
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        ]
    )
    assert parts == [
        {"type": "uri", "modality": "image", "uri": "https://x.test/a.png"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAA"},
    ]


def test_finish_reasons_map_to_the_conventions() -> None:
    """OpenAI's and other providers' reasons map to the five of the conventions; unknown ones are kept."""
    assert [genai.finish_reason(r) for r in ("tool_calls", "function_call", "end_turn", "max_tokens", "stop")] == [
        "tool_call", "tool_call", "stop", "length", "stop",
    ]  # fmt: skip
    assert genai.finish_reason(None) == "stop" and genai.finish_reason("weird") == "weird"


@pytest.mark.parametrize("arguments", ["Infinity", "-Infinity", "NaN", '{"x": NaN}', "[Infinity]"])
def test_tool_arguments_that_json_reads_as_non_finite_numbers_stay_text(arguments: str) -> None:
    """Python's json reads 'Infinity' and 'NaN', which no JSON backend takes: such arguments are kept as sent.

    Found by the property test above (arguments 'Infinity' became the float inf, then 'inf' on a second pass).
    """
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    out = genai.input_messages([{"role": "assistant", "content": None, "tool_calls": [call]}])
    [part] = [p for p in out[0]["parts"] if p["type"] == "tool_call"]
    assert part["arguments"] == arguments
    json.dumps(out, allow_nan=False)  # valid JSON for any backend
    assert genai.input_messages(out) == out
