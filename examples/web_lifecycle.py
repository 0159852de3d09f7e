"""Serving an agent for real: one shared model client, runs nobody reads, and a graceful shutdown.

The weather agent is served with a new agent per conversation, all sharing
one model (so one ``openai`` client and its connection pool: an idle
conversation costs a few KB and no socket). Then, as a browser would:

1. a question is asked and the tab aborts its fetch mid-answer (``useChat``'s
   ``stop()``): the run goes on, nobody reads it;
2. a new message in that chat supersedes the unread run (no 409): it ends
   ``cancelled``, reason ``superseded by a new message``;
3. another answer is left unread: ``detach_timeout`` cancels it (``client gone``);
4. the server stops with a grace period while an answer streams: the
   answer's stream ends properly (``abort`` with reason ``shutdown``, then
   ``[DONE]``).

Runs offline against the embedded model server. ``python examples/web_lifecycle.py --serve``
instead serves the page until SIGTERM or Ctrl-C (then shuts down gracefully).

Run: python examples/web_lifecycle.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import typing as t

import httpx

from streamtap.demo.weather import weather_agent
from streamtap.llm.openai import AsyncOpenAIChat
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app, serve
from streamtap.web.server import BackgroundServer


def factory_for(base_url: str) -> t.Callable[[], t.Any]:
    """A new agent per conversation, every one on the same model client."""
    llm = AsyncOpenAIChat("fake-gpt", base_url=base_url, name="chat")  # made once: its client is shared

    def factory() -> t.Any:
        return weather_agent(llm, asynchronous=True)

    return factory


def ask(text: str, chat_id: str) -> dict[str, t.Any]:
    return {"id": chat_id, "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}]}


async def first_text_then_leave(client: httpx.AsyncClient, url: str, chat_id: str) -> str:
    """Ask, read until the first text delta, abort the fetch; returns the run id."""
    async with client.stream("POST", url + "/api/chat", json=ask("weather in Paris?", chat_id)) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"start"' in line:
                run_id = str(json.loads(line[6:])["messageMetadata"]["runId"])
            if '"text-delta"' in line:
                break
    return run_id


async def how_it_ended(client: httpx.AsyncClient, url: str, run_id: str) -> str:
    """``status (reason)`` of a run's End, from its event stream (which waits for the end)."""
    text = (await client.get(f"{url}/api/runs/{run_id}/events")).text
    end = json.loads([x for x in text.splitlines() if x.startswith("data: ")][-1][6:])
    reason = (end.get("error") or {}).get("message", "")
    return f"{end['status']} ({reason})" if reason else end["status"]


async def scenario(srv: BackgroundServer) -> None:
    url = srv.url
    async with httpx.AsyncClient(timeout=30) as client:
        first = await first_text_then_leave(client, url, "tab-1")
        print("1. the tab aborted its fetch; the run goes on, unread")
        r = await client.post(url + "/api/chat", json=ask("and in Tokyo?", "tab-1"))
        print(f"2. a new message: HTTP {r.status_code}, its answer ends with {r.text.split('data: ')[-2].strip()}")
        print(f"   the first run: {await how_it_ended(client, url, first)}")
        unread = await first_text_then_leave(client, url, "tab-2")
        await asyncio.sleep(
            1.0
        )  # longer than detach_timeout, reading nothing (reading the events would count as reading)
        print(f"3. left unread for detach_timeout: {await how_it_ended(client, url, unread)}")
        async with client.stream("POST", url + "/api/chat", json=ask("weather in Paris?", "tab-3")) as r:
            lines = r.aiter_lines()
            async for line in lines:
                if '"text-delta"' in line:
                    break
            stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop, 0.1)  # SIGTERM does the same
            rest = [line async for line in lines if line.startswith("data: ")]
            await stopping
        print(f"4. server stopped mid-answer; the stream ends: {rest[-2][6:]} then {rest[-1][6:]}")


def main() -> int:
    # Slow tokens, so that there is an answer in flight to abort, supersede and stop.
    with FakeOpenAI(token_delay=0.05, reasoning=False) as model:
        app = create_app(factory_for(model.base_url), detach_timeout=0.5)
        if "--serve" in sys.argv:
            serve(app, port=8000, shutdown_grace=10)  # until SIGTERM / Ctrl-C; a second signal exits at once
            return 0
        srv = BackgroundServer(app).start()
        try:
            asyncio.run(scenario(srv))
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
