"""OpenAIChat refuses unknown keyword arguments at construction, naming them and the accepted ones."""

from __future__ import annotations

import pytest

from streamtap import UsageError
from streamtap.llm.openai import AsyncOpenAIChat, OpenAIChat
from streamtap.testing import FakeOpenAI


@pytest.mark.parametrize("cls", [OpenAIChat, AsyncOpenAIChat])
def test_unknown_keyword_is_refused_at_construction(cls: type[OpenAIChat]) -> None:
    """A typo fails now, with a suggestion and the list of what is accepted, not on the first request."""
    with pytest.raises(UsageError) as info:
        cls("fake-gpt", base_url="http://127.0.0.1:9/v1", temprature=0.2)
    text = str(info.value)
    assert "'temprature' (did you mean 'temperature'?)" in text
    assert f"{cls.__name__}()" in text and "base_url" in text and "tags" in text and "max_tokens" in text


def test_tags_and_metadata_are_run_options_not_request_parameters() -> None:
    """tags= and metadata= go on the runs; the request carries only real parameters (checked over HTTP)."""
    with FakeOpenAI(token_delay=0) as srv:
        llm = OpenAIChat("fake-gpt", base_url=srv.base_url, tags=["x"], metadata={"team": "a"}, temperature=0.3)
        assert llm("hi") == "You said: hi"
        body = srv.records[-1].body
    assert body is not None and body["temperature"] == 0.3
    assert "tags" not in body and "metadata" not in body


def test_request_parameters_are_accepted() -> None:
    """Every documented request parameter is still accepted."""
    llm = OpenAIChat("m", base_url="http://127.0.0.1:9/v1", max_tokens=5, top_p=0.5, extra_headers={"x": "1"}, seed=1)
    assert llm.params == {"max_tokens": 5, "top_p": 0.5, "extra_headers": {"x": "1"}, "seed": 1}
