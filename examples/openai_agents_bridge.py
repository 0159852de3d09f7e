"""An OpenAI Agents SDK agent on the streamtap bus: its spans as runs, its deltas as chunks, live.

The agent's model is pointed at the embedded OpenAI-compatible server (real
HTTP, real SSE), so this runs offline; set ``OPENAI_BASE_URL`` (and
``OPENAI_API_KEY``, ``OPENAI_MODEL``) for a real endpoint. ``AgentModule``
makes the agent a streamtap module; the tracing processor turns the SDK's
spans (agent, model calls, function calls) into its child runs.

Needs ``pip install 'streamtap[openai-agents]'``.

Run: python examples/openai_agents_bridge.py
"""

from __future__ import annotations

import json
import os

from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_trace_processors
from openai import AsyncOpenAI

from streamtap.bridges.openai_agents import AgentModule, StreamtapTracingProcessor
from streamtap.demo.weather import QUERY
from streamtap.testing import model_endpoint


@function_tool
def get_current_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location."""
    temperature = {"Tokyo": "10", "Paris": "22"}.get(location.split(",", maxsplit=1)[0], "15")
    return json.dumps({"location": location, "temperature": temperature, "unit": unit})


def main() -> None:
    set_trace_processors([StreamtapTracingProcessor()])  # streamtap only: no upload to the OpenAI platform
    with model_endpoint(token_delay=0.01) as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "offline"))
        model = OpenAIChatCompletionsModel(model=os.environ.get("OPENAI_MODEL", "fake-model"), openai_client=client)
        agent = Agent(
            name="Weather",
            instructions="Answer weather questions with the tool.",
            tools=[get_current_weather],
            model=model,
        )
        stream = AgentModule(agent).stream(QUERY)
        for ev in stream:
            if ev.kind == "start" and ev.run.parent_id is not None:
                print(f"step: {ev.run.kind} {ev.run.name}")
            elif ev.kind == "chunk" and ev.channel == "text":
                print(f"output: {ev.delta!r}")
            elif ev.kind == "tool":
                print(f"trace: {ev.phase} {ev.name} {ev.arguments if ev.phase == 'requested' else ev.result}")
        print(f"ret: {stream.handle.result()}")


if __name__ == "__main__":
    main()
