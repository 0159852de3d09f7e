"""The seeds' weather agent as a Gradio chat: streamed answer, tool calls and reasoning as thoughts, Stop.

Starts the embedded model server and ``chat_interface(agent)`` on a free
port, asks one question through ``gradio_client`` (as a script would) and
prints the reply: the collapsible thoughts first, then the answer. With
``--serve`` it keeps serving: open the printed URL, try the Stop button and
the switches under "Additional inputs".

Needs ``pip install 'streamtap[gradio,openai]'``.

Run: python examples/gradio_chat.py [--serve]
"""

from __future__ import annotations

import os
import socket
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.integrations.gradio import chat_interface
from streamtap.testing import model_endpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    with model_endpoint(token_delay=0.01, reasoning=True) as base_url:
        demo = chat_interface(weather_agent(base_url=base_url, asynchronous=True), title="streamtap weather agent")
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            url = f"http://127.0.0.1:{port}/"
            print(f"Gradio app: {url}")
            client = Client(url, verbose=False)
            reply = client.predict(QUERY, True, True, api_name="/chat")
            client.close()
            for message in reply:
                meta = message.get("metadata")
                if meta:
                    print(f"[{meta['title']}] {message['content']}")
                else:
                    print(f"answer: {message['content']}")
            if "--serve" in sys.argv:
                print("Serving; Ctrl-C to stop.")
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()


if __name__ == "__main__":
    main()
