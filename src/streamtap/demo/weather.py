"""The seeds' weather agent: two weather tools and :func:`weather_agent`, shared by examples and the demo.

The tools are the LazyLLM seed's ``get_current_weather`` and
``get_n_day_weather_forecast``, unchanged apart from ``@tool``.

::

    from streamtap.testing import model_endpoint
    from streamtap.demo.weather import weather_agent

    with model_endpoint() as base_url:        # the embedded server, or OPENAI_BASE_URL
        agent = weather_agent(base_url=base_url)
        print(agent("What's the weather like today in celsius in Tokyo and Paris."))
"""

from __future__ import annotations

import json
import typing as t

from ..agents import AsyncFunctionCallAgent, FunctionCallAgent
from ..tools import ToolRegistry, tool

__all__ = ["QUERY", "get_current_weather", "get_n_day_weather_forecast", "weather_agent", "weather_tools"]

QUERY = "What's the weather like today in celsius in Tokyo and Paris."
"""The seed's question."""


@tool
def get_current_weather(location: str, unit: t.Literal["fahrenheit", "celsius"] = "fahrenheit") -> str:
    """Get the current weather in a given location.

    Args:
        location (str): The city and state, e.g. San Francisco, CA.
        unit (str): The temperature unit to use. Infer this from the users location.
    """
    if "tokyo" in location.lower():
        return json.dumps({"location": "Tokyo", "temperature": "10", "unit": "celsius"})
    if "san francisco" in location.lower():
        return json.dumps({"location": "San Francisco", "temperature": "72", "unit": "fahrenheit"})
    if "paris" in location.lower():
        return json.dumps({"location": "Paris", "temperature": "22", "unit": "celsius"})
    if "beijing" in location.lower():
        return json.dumps({"location": "Beijing", "temperature": "90", "unit": "fahrenheit"})
    return json.dumps({"location": location, "temperature": "unknown"})


@tool
def get_n_day_weather_forecast(
    location: str, num_days: int, unit: t.Literal["celsius", "fahrenheit"] = "fahrenheit"
) -> str:
    """Get an N-day weather forecast.

    Args:
        location (str): The city and state, e.g. San Francisco, CA.
        num_days (int): The number of days to forecast.
        unit (Literal['celsius', 'fahrenheit']): The temperature unit to use. Infer this from the users location.
    """
    if "tokyo" in location.lower():
        return json.dumps({"location": "Tokyo", "temperature": "10", "unit": "celsius", "num_days": num_days})
    if "san francisco" in location.lower():
        return json.dumps(
            {"location": "San Francisco", "temperature": "75", "unit": "fahrenheit", "num_days": num_days}
        )
    if "paris" in location.lower():
        return json.dumps({"location": "Paris", "temperature": "25", "unit": "celsius", "num_days": num_days})
    if "beijing" in location.lower():
        return json.dumps({"location": "Beijing", "temperature": "85", "unit": "fahrenheit", "num_days": num_days})
    return json.dumps({"location": location, "temperature": "unknown"})


def weather_tools() -> ToolRegistry:
    """A registry with the two weather tools."""
    return ToolRegistry([get_current_weather, get_n_day_weather_forecast])


def weather_agent(
    llm: t.Any = None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    max_steps: int = 5,
    name: str = "weather_agent",
    asynchronous: bool = False,
    **llm_options: t.Any,
) -> FunctionCallAgent:
    """The seeds' weather agent: a :class:`FunctionCallAgent` over the two weather tools.

    Args:
        llm: a chat module; by default an :class:`~streamtap.llm.openai.OpenAIChat`
            made from ``base_url`` / ``model`` / ``api_key`` (or the ``OPENAI_*`` variables).
        base_url: the OpenAI-compatible endpoint (e.g. ``FakeOpenAI().base_url``).
        model: the model id (default ``OPENAI_MODEL``, else ``fake-gpt`` on a local endpoint).
        api_key: the key, when the endpoint needs one.
        max_steps: model turns at most.
        name: the agent's run name.
        asynchronous: build the async agent on the async ``openai`` client
            (:class:`~streamtap.agents.AsyncFunctionCallAgent`): runs are tasks, not
            threads, which is what a web server with many concurrent chats wants.
        **llm_options: more :class:`~streamtap.llm.openai.OpenAIChat` options (``stream=False``...).
    """
    if llm is None:
        import os

        from ..llm.openai import AsyncOpenAIChat, OpenAIChat

        if model is None and not os.environ.get("OPENAI_MODEL") and (base_url or "").startswith("http://127.0.0.1"):
            model = "fake-gpt"
        chat = AsyncOpenAIChat if asynchronous else OpenAIChat
        llm = chat(model, base_url=base_url, api_key=api_key, name="chat", **llm_options)
    agent = AsyncFunctionCallAgent if asynchronous else FunctionCallAgent
    return agent(llm, weather_tools(), max_steps=max_steps, name=name)
