"""The answer a user sees: one rule for stream.text() and the web page (written as a user writes the code)."""

from __future__ import annotations

import typing as t
from collections.abc import Iterator

import pytest

from streamtap import ModuleBase
from streamtap.agents import FunctionCallAgent
from streamtap.answer import TURN_SEPARATOR, AnswerText
from streamtap.flows import Sequential
from streamtap.llm.openai import OpenAIChat
from streamtap.parsers import JsonOutputParser
from streamtap.testing import FakeOpenAI
from streamtap.tools import tool
from streamtap.web.ui_stream import UIMessageMapper


@pytest.fixture(scope="module")
def srv() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI(token_delay=0) as server:
        yield server


def _page_text(events: list[t.Any]) -> list[str]:
    """The text parts the web page would show, from the same events."""
    mapper = UIMessageMapper(events[0].run.root_id)
    parts: list[t.Any] = []
    for ev in events:
        parts += mapper.feed(ev.to_dict())
    texts: dict[str, str] = {}
    for p in parts:
        if p["type"] == "text-delta":
            texts[p["id"]] = texts.get(p["id"], "") + p["delta"]
    return list(texts.values())


def test_turns_of_different_runs_are_separated(srv: FakeOpenAI) -> None:
    """Two model turns no longer run together: .text() puts a blank line between them, the page two parts."""
    llm = OpenAIChat("fake-gpt", base_url=srv.base_url)

    class TwoTurns(ModuleBase):
        def forward(self, q: str) -> str:
            llm("first")
            return str(llm(q))

    events = list(TwoTurns().stream("second"))
    everything = "".join(e.delta for e in events if e.kind == "chunk" and e.channel == "text")
    assert everything == "You said: firstYou said: second"  # the whole tree's text, as before
    assert "".join(TwoTurns().stream("second").text()) == "You said: first" + TURN_SEPARATOR + "You said: second"
    assert _page_text(events) == ["You said: first", "You said: second"]


def test_text_of_modules_inside_tools_is_not_the_answer(srv: FakeOpenAI) -> None:
    """A model called inside a tool streams (filter shows it), but .text() and the page leave it out."""
    llm = OpenAIChat("fake-gpt", base_url=srv.base_url)

    @tool
    def get_current_weather(location: str) -> str:
        """Get the current weather.

        Args:
            location: the city.
        """
        note = llm("inner thoughts")  # a module inside a tool: nests and streams with nothing passed
        return f'{{"location": "{location}", "temperature": "10", "unit": "celsius", "note": "{note}"}}'

    agent = FunctionCallAgent(llm, [get_current_weather])
    events = list(agent.stream("What's the weather in Tokyo?"))
    inner = [e for e in events if e.kind == "chunk" and e.channel == "text" and "get_current_weather" in e.run.path]
    assert "".join(e.delta for e in inner) == "You said: inner thoughts"
    answer = "".join(agent.stream("What's the weather in Tokyo?").text())
    assert answer == "The current weather in Tokyo, Japan is 10 degrees Celsius."
    assert _page_text(events) == [answer]


def test_a_relaying_parent_is_shown_once(srv: FakeOpenAI) -> None:
    """A module that re-yields its model's chunks does not double the answer."""
    llm = OpenAIChat("fake-gpt", base_url=srv.base_url)

    class Relay(ModuleBase):
        def forward(self, q: str) -> Iterator[str]:
            yield from llm.stream(q).text()

    assert "".join(Relay().stream("hello there").text()) == "You said: hello there"


def test_a_transforms_input_is_not_the_answer(srv: FakeOpenAI) -> None:
    """Sequential(model, JsonOutputParser(), extract): the answer is the story, not the model's raw JSON."""

    def extract_content(partials: Iterator[t.Any]) -> Iterator[str]:
        shown = 0
        for p in partials:
            content = p.get("content", "") if isinstance(p, dict) else ""
            yield content[shown:]
            shown = len(content)

    chain = Sequential(OpenAIChat("fake-gpt", base_url=srv.base_url), JsonOutputParser(), extract_content)
    events = list(chain.stream("Tell a story as JSON with the key content"))
    story = events[-1].output
    assert story.startswith("Covering")
    assert "".join(chain.stream("Tell a story as JSON with the key content").text()) == story
    assert _page_text(events) == [story]
    raw = "".join(e.delta for e in events if e.kind == "chunk" and e.channel == "text" and e.run.name == "OpenAIChat")
    assert raw.startswith('{"content"')  # still there for whoever filters for it


def test_a_module_that_returns_gives_its_output_as_the_answer() -> None:
    """No text streamed at all: the root's returned string is the answer (as on the page)."""

    class Quiet(ModuleBase):
        def forward(self, q: str) -> str:
            return q.upper()

    assert list(Quiet().stream("hi").text()) == ["HI"]


def test_rule_ignores_non_text() -> None:
    """Empty and non-string deltas are never part of the answer."""
    rule = AnswerText("r")
    rule.started("r", None, "module")
    assert rule.shows("r", None, "module", "") and not rule.shown
