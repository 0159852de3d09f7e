"""Scale out on Redis Streams: a chat started on one web process, read live on another, run by a worker process.

What it starts (all on loopback, offline):

* a ``redis-server`` on a free port (or the one in ``REDIS_URL``);
* the embedded OpenAI-compatible model server;
* a worker process: ``streamtap worker streamtap.demo:worker_agent --redis URL``;
* two web processes' apps (here: two uvicorn servers in this process, each with
  its own Redis client, as two ``streamtap serve TARGET --redis URL`` would be).

Then it asks web A about the weather, follows the same answer on web B while
it streams, and stops a second, long answer through web B: the worker cancels it.

Run: python examples/scale_out.py   (needs redis-server: apt-get install redis-server)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import typing as t

import httpx

from streamtap.testing import FakeOpenAI
from streamtap.web.server import BackgroundServer
from streamtap_redis.serve import create_redis_app
from streamtap_redis.testing import RedisServer


def ui_parts(response: httpx.Response) -> t.Iterator[dict[str, t.Any]]:
    """The UI message stream parts of a streaming response, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[6:])


def main() -> int:
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(RedisServer()).url
        model = stack.enter_context(FakeOpenAI(token_delay=0.01))
        env = {**os.environ, "OPENAI_BASE_URL": model.base_url}
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamtap.cli", "worker", "streamtap.demo:worker_agent", "--redis", url],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        stack.callback(worker.wait, 15)
        stack.callback(worker.terminate)
        assert worker.stdout is not None
        print(worker.stdout.readline().strip())  # "streamtap worker <name>: ready"

        def factory() -> t.Any:
            raise RuntimeError("the web processes never run the agent: the worker does")

        web_a = stack.enter_context(BackgroundServer(create_redis_app(factory, url)))
        web_b = stack.enter_context(BackgroundServer(create_redis_app(factory, url)))
        print(f"web A {web_a.url}, web B {web_b.url}, Redis {url}")

        with httpx.Client(timeout=30) as client:
            body = {
                "id": "paris",
                "messages": [
                    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "What is the weather in Paris?"}]}
                ],
            }
            on_b: list[str] = []

            def follow_on_b() -> None:
                with client.stream("GET", web_b.url + "/api/chat/paris/stream") as resp:
                    on_b.extend(p["delta"] for p in ui_parts(resp) if p["type"] == "text-delta")

            reader = None
            answer: list[str] = []
            with client.stream("POST", web_a.url + "/api/chat", json=body) as resp:
                for part in ui_parts(resp):
                    if part["type"] == "start":
                        print(f"web A: run {part['messageMetadata']['runId']} started")
                        reader = threading.Thread(target=follow_on_b)
                        reader.start()
                    elif part["type"] == "text-delta":
                        answer.append(part["delta"])
            assert reader is not None
            reader.join(30)
            print("web A answered:", "".join(answer))
            print("web B read the same answer:", "".join(on_b) == "".join(answer))

            long = {
                "id": "long",
                "messages": [
                    {
                        "id": "u1",
                        "role": "user",
                        "parts": [{"type": "text", "text": "[delay=0.05] " + "tell me more " * 40}],
                    }
                ],
            }
            with client.stream("POST", web_a.url + "/api/chat", json=long) as resp:
                for part in ui_parts(resp):
                    if part["type"] == "text-delta":
                        stopped = client.post(web_b.url + "/api/chat/long/stop").json()
                        print(f"stopped through web B: {stopped['stopped']}, status {stopped['status']}")
                        break
    return 0


if __name__ == "__main__":
    sys.exit(main())
