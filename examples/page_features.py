"""The built-in chat page with a trace link and a read-only view of a run.

Starts the embedded model server and the web app with the seeds' weather
agent, asks the weather question once through the app's chat endpoint (the
same request the page sends), and prints the read-only link of that run:
``/?run=<run id>`` shows its question, answer, tool calls and waterfall.
Every answer on the page links to its trace (``trace_url``, here Jaeger's).

Run: python examples/page_features.py            (one answer, its link, exit)
     python examples/page_features.py --serve    (keep serving; Ctrl-C to stop)
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

JAEGER = "http://localhost:16686/trace/{trace_id}"


def ask(url: str, question: str) -> str:
    """POST one question as the page does; return the answer's run id and print the answer."""
    body = {
        "id": "example-chat",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": question}]}],
        "trigger": "submit-message",
    }
    run_id, text = "", []
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            part = json.loads(line[6:])
            if part["type"] == "start":
                run_id = part["messageMetadata"]["runId"]
            elif part["type"] == "text-delta":
                text.append(part["delta"])
    print(f"answer: {''.join(text)}")
    return run_id


def main() -> None:
    with model_endpoint(token_delay=0.01) as base_url:
        app = create_app(lambda: weather_agent(base_url=base_url), title="streamtap page", trace_url=JAEGER)
        with BackgroundServer(app) as srv:
            run_id = ask(srv.url, QUERY)
            print(f"chat page: {srv.url}/")
            print(f"read-only view: {srv.url}/?run={run_id}")
            if "--serve" in sys.argv[1:]:
                print("serving; Ctrl-C to stop")
                try:
                    threading.Event().wait()  # until Ctrl-C
                except KeyboardInterrupt:
                    pass


if __name__ == "__main__":
    main()
