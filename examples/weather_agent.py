"""The LazyLLM seed's streaming weather agent: ``output:`` and ``trace:`` lines from one iterator.

The final answer streams live (``output:``), each tool call shows on the
trace (``trace:``), and tool-call markup never reaches the user -- with no
special thread pool and no global queue: ``agent.stream(query)`` is an
iterator over this call's events, readable from any thread.

Runs offline against the embedded model server, or against any
OpenAI-compatible endpoint when ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``,
``OPENAI_MODEL``) are set. Set ``OTEL_EXPORTER_OTLP_ENDPOINT`` with
``streamtap-otlp`` installed to see the run tree in Jaeger.

Run: python examples/weather_agent.py
"""

from __future__ import annotations

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.exporting import traces_from_env
from streamtap.testing import model_endpoint


def main() -> None:
    with traces_from_env(), model_endpoint(token_delay=0.02) as base_url:
        agent = weather_agent(base_url=base_url)
        stream = agent.stream(QUERY)
        for event in stream:
            if event.kind == "chunk" and event.channel == "text":
                print(f"output: {event.delta}")
            elif event.kind == "tool" and event.phase == "requested":
                call = {
                    "id": event.call_id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": event.arguments},
                }
                print(f"trace: {[call]}")
            elif event.kind == "tool":
                print(f"trace: {event.result if event.phase == 'result' else event.error}")
            elif event.kind == "end" and event.run.kind == "llm" and event.output:
                print(f"trace: {event.output}")
        print(f"ret: {stream.handle.result()}")


if __name__ == "__main__":
    main()
