"""A LangChain chain inside a streamtap agent: its tokens and steps stream live, nothing passed by hand.

``instrument()`` (once) reports every LangChain run to streamtap; the chain
called inside the agent's ``forward`` nests under the agent's run through
``contextvars``, so ``agent.stream()`` shows the chain's steps (``step:``),
its model's tokens (``output:``) and the tool it calls (``trace:``). The model is
LangChain's own ``GenericFakeChatModel``, so this runs offline; any
LangChain chat model works the same.

Needs ``pip install 'streamtap[langchain]'``.

Run: python examples/langchain_bridge.py
"""

from __future__ import annotations

import typing as t

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

from streamtap import ModuleBase
from streamtap.bridges.langchain import instrument


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"22 degrees Celsius in {city}"


class WeatherAgent(ModuleBase):
    """A streamtap agent: a LangChain model asks for the tool, the tool runs, a LangChain chain answers."""

    kind = "agent"

    def forward(self, city: str) -> t.Iterator[str]:
        call = {"name": "get_weather", "args": {"city": city}, "id": "call_1", "type": "tool_call"}
        asked = GenericFakeChatModel(messages=iter([AIMessage(content="", tool_calls=[call])])).invoke(
            f"Weather in {city}?"
        )
        observation = get_weather.invoke(asked.tool_calls[0]).content
        answer = GenericFakeChatModel(messages=iter([AIMessage(content=f"It is {observation}, a fine day.")]))
        chain = ChatPromptTemplate.from_messages([("human", "Summarise: {obs}")]) | answer
        for piece in chain.stream({"obs": observation}):
            yield str(piece.content)


def main() -> None:
    instrument()
    agent = WeatherAgent()
    stream = agent.stream("Paris")
    for ev in stream:
        if ev.kind == "start" and ev.run.parent_id is not None:
            print(f"step: {ev.run.kind} {ev.run.name}")
        elif ev.kind == "chunk" and ev.channel == "text" and ev.run.kind == "llm":
            print(f"output: {ev.delta!r}")
        elif ev.kind == "tool":
            print(f"trace: {ev.phase} {ev.name} {ev.arguments if ev.phase == 'requested' else ev.result}")
    print(f"ret: {stream.handle.result()}")


if __name__ == "__main__":
    main()
