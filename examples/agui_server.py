"""The seeds' weather agent behind the AG-UI endpoint (``POST /api/agui``), read as an AG-UI client would.

Starts the embedded model server and the web app on a free port, sends one
``RunAgentInput`` and prints the AG-UI events as they stream
(``RUN_STARTED``, ``STEP_STARTED``, ``TOOL_CALL_*``, ``TEXT_MESSAGE_*``,
``RUN_FINISHED``). With ``--serve`` it keeps serving, for CopilotKit or any
``@ag-ui/client`` ``HttpAgent`` pointed at the printed URL.

Run: python examples/agui_server.py [--serve]
"""

from __future__ import annotations

import json
import sys
import threading

import httpx

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import model_endpoint
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer


def main() -> None:
    with (
        model_endpoint(token_delay=0.01) as base_url,
        BackgroundServer(create_app(weather_agent(base_url=base_url))) as srv,
    ):
        url = srv.url + "/api/agui"
        print(f"AG-UI endpoint: {url}")
        body = {"threadId": "demo", "runId": "run-1", "messages": [{"id": "u1", "role": "user", "content": QUERY}]}
        with httpx.stream("POST", url, json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    detail = (
                        event.get("delta")
                        or event.get("toolCallName")
                        or event.get("stepName")
                        or event.get("outcome", "")
                    )
                    print(f"{event['type']:<24} {detail}")
        if "--serve" in sys.argv:
            print("Serving; Ctrl-C to stop.")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
