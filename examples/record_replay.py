"""Record a weather-agent run, then re-run it offline against the recorded model answers.

1. The seeds' weather agent runs once against the embedded model server, with a
   :class:`~streamtap.recording.Recorder` writing every event to a JSON-lines file.
2. The same agent re-runs with :class:`~streamtap.llm.replay.ReplayChat` in
   place of the model: no model server, the same events
   (:func:`~streamtap.testing.first_divergence` finds no difference).
3. It re-runs once more with a weather tool that now answers differently:
   ``first_divergence`` names the first event that departs from the recording.

Then ``streamtap replay FILE`` shows the recording on the page, and
``streamtap replay FILE --otlp`` sends it to a trace backend.

Run: python examples/record_replay.py [FILE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from streamtap.agents import FunctionCallAgent
from streamtap.demo.weather import QUERY, get_n_day_weather_forecast, weather_agent
from streamtap.llm.replay import ReplayChat
from streamtap.recording import Recorder
from streamtap.testing import capture_events, first_divergence, model_endpoint, replay
from streamtap.tools import tool


@tool
def get_current_weather(location: str, unit: str = "fahrenheit") -> str:
    """Get the current weather in a given location (a changed tool: Paris is warmer).

    Args:
        location (str): The city and state, e.g. San Francisco, CA.
        unit (str): The temperature unit to use.
    """
    temperature = "31" if "paris" in location.lower() else "10"
    return json.dumps({"location": location.split(",", maxsplit=1)[0], "temperature": temperature, "unit": "celsius"})


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "weather.jsonl"
    with model_endpoint() as base_url, Recorder(path) as recorder:
        answer = weather_agent(base_url=base_url)(QUERY)
    print(f"recorded {recorder.events} events to {path}")
    print(f"answer: {answer}")
    recorded = replay(path)

    with capture_events() as events:
        weather_agent(llm=ReplayChat(path))(QUERY)
    print(f"replayed offline: {first_divergence(recorded, events) or 'no divergence'}")

    changed = FunctionCallAgent(
        ReplayChat(path), [get_current_weather, get_n_day_weather_forecast], name="weather_agent"
    )
    with capture_events() as events:
        changed(QUERY)
    print(f"with a changed tool: {first_divergence(recorded, events)}")
    print(f"see it on the page: streamtap replay {path}")


if __name__ == "__main__":
    main()
