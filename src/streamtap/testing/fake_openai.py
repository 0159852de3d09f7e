"""An embedded, deterministic OpenAI-compatible model server (real HTTP, real SSE).

Tests, examples and the demo talk to it with the real ``openai`` client::

    from streamtap.testing import FakeOpenAI

    with FakeOpenAI() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        for chunk in client.chat.completions.create(model="fake", messages=[...], stream=True):
            ...
        srv.wait_for_closed()          # when the test closed a stream early

or from a shell: ``streamtap fake-openai --port 8000``.

It serves ``POST /v1/chat/completions`` (streaming as ``data: {...}`` SSE
frames ending with ``data: [DONE]``, and non-streaming) and ``GET /v1/models``
on 127.0.0.1, from an asyncio loop in its own thread, so hundreds of streams
run at once. Only the standard library is used.

**What the scripted model says**

* The last user message asks about the weather in known cities (Tokyo, Paris,
  San Francisco, Beijing, London, New York) and the request offers a weather
  tool: one tool call per city, all in one turn (parallel calls), arguments
  split over several chunks. ``forecast`` / ``N days`` picks
  ``get_n_day_weather_forecast`` when offered; ``celsius`` / ``fahrenheit``
  sets ``unit``.
* The conversation ends with tool results: an answer built from them, e.g.
  "The current weather in Tokyo is 10 degrees Celsius, and in Paris, it is 22
  degrees Celsius." A result that is not weather JSON (an error message) is
  quoted back: "I could not get that: ...".
* The message has a ``context: ... Question: ...`` prompt: an answer that
  quotes the context lines (for retrieval examples).
* The message mentions JSON (or ``response_format`` asks for it): a JSON
  object ``{"content": "<a short story>"}`` (the LangChain seed's story).
* Anything else: an echo, ``You said: <message>``.

**Choosing behaviour per request** (later sources win):

1. server defaults: ``FakeOpenAI(token_delay=, reasoning=, tool_mode=)``;
2. the model name: contains ``reasoning`` -> reasoning deltas; contains
   ``inline`` -> tool calls as ``<tool_call>{...}</tool_call>`` text; contains
   ``internlm`` -> tool calls as InternLM ``<|action_start|><|plugin|>...<|action_end|>``
   text; ``fault-500`` / ``fault-429`` / ``fault-malformed`` / ``fault-drop``
   / ``fault-hang`` -> that fault;
3. headers (``extra_headers=`` in the ``openai`` client): ``x-fake-fault``,
   ``x-fake-delay`` (seconds per token), ``x-fake-reasoning`` (``1``/``0``),
   ``x-fake-tool-mode`` (``native`` | ``inline`` | ``internlm``);
4. directives in the last user message (removed before answering):
   ``[fault=500]``, ``[delay=0.05]``, ``[reasoning]``, ``[tools=inline]``,
   ``[bad-args]`` (tool calls with invalid JSON and with a missing and a
   wrong-typed argument), ``[unknown-tool]`` (a call to ``get_stock_price``).

**Faults**: an HTTP status (``500``, ``429``, ``401``, ``404``, any 4xx/5xx)
with an OpenAI-style error body; ``malformed`` (a chunk that is not JSON after
two good ones); ``drop`` (the connection is cut after two chunks, without the
end of the chunked body); ``hang`` (two chunks, then nothing until the client
gives up). A server made with ``api_key=`` answers 401 to any other key.

**Records**: every request gets a :class:`RequestRecord` (``srv.records``),
with monotonic timestamps; ``outcome`` is ``"client_closed"`` when the client
closed the connection before the response was complete. Wait for one with
:meth:`FakeOpenAI.wait_for_closed`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
import typing as t

from ._fake_http import _ClientGone, _Conn, _HTTPWire
from ._fake_model import Behaviour, RequestRecord, ToolMode
from ._fake_script import _ScriptedModel
from ._fake_turns import (
    _CREATED,
    _DIRECTIVE,
    _last_user_text,
)

__all__ = ["Behaviour", "FakeOpenAI", "RequestRecord", "main", "model_endpoint"]

_log = logging.getLogger(__name__)


class FakeOpenAI(_HTTPWire, _ScriptedModel):
    """The embedded OpenAI-compatible server; a context manager that runs it in a background thread.

    Args:
        host: interface to listen on.
        port: TCP port; 0 picks a free one (see :attr:`base_url`).
        token_delay: default seconds before each streamed chunk.
        reasoning: default for streaming ``reasoning_content`` deltas.
        tool_mode: default tool-call style: ``native``, ``inline`` or ``internlm``.
        api_key: when set, requests with another bearer key get HTTP 401.
        models: model ids listed by ``GET /v1/models``.
        keep_records: how many request records (:attr:`records`) are kept, newest
            last; older ones are dropped so a long-running server stays bounded.

    Example::

        with FakeOpenAI(token_delay=0.01) as srv:
            print(srv.base_url)    # http://127.0.0.1:PORT/v1
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_delay: float = 0.0,
        reasoning: bool = False,
        tool_mode: ToolMode = "native",
        api_key: str | None = None,
        models: t.Sequence[str] = ("fake-gpt", "fake-reasoning", "fake-inline", "internlm2-chat-20b"),
        keep_records: int = 1000,
    ) -> None:
        if tool_mode not in ("native", "inline", "internlm"):
            msg = f"tool_mode must be 'native', 'inline' or 'internlm', not {tool_mode!r}."
            raise ValueError(msg)
        if not isinstance(keep_records, int) or keep_records < 1:
            msg = f"keep_records must be a positive number of request records, not {keep_records!r}."
            raise ValueError(msg)
        if token_delay < 0:
            msg = f"token_delay must be >= 0 seconds, not {token_delay!r}."
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.defaults = Behaviour(token_delay=token_delay, reasoning=reasoning, tool_mode=tool_mode)
        self.api_key = api_key
        self.models = tuple(models)
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=keep_records)
        self._received = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[t.Any]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._completion_ids = 0
        self._call_ids = 0

    # -- lifecycle ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The ``base_url`` for an OpenAI client, e.g. ``http://127.0.0.1:54321/v1``."""
        if not self._ready.is_set():
            msg = "The server is not running; use 'with FakeOpenAI() as srv:' or call srv.start() first."
            raise RuntimeError(msg)
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Start serving in a background thread; returns ``self`` once the port is bound."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            err = self._startup_error
            self._thread.join()
            self._thread = None
            msg = f"FakeOpenAI could not listen on {self.host}:{self.port}: {err}. Choose another port (0 = any free one)."
            raise OSError(msg) from err
        return self

    def stop(self) -> None:
        """Stop serving: open streams and hanging requests are cut. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._ready.clear()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, self.host, self.port, backlog=4096, limit=1 << 22)
                )
            except OSError as exc:
                self._startup_error = exc
                self._ready.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    # -- records --------------------------------------------------------------

    @property
    def records(self) -> list[RequestRecord]:
        """A snapshot of the request records, in arrival order."""
        with self._cond:
            return list(self._records)

    def chat_records(self) -> list[RequestRecord]:
        """The records of ``/chat/completions`` requests only."""
        return [r for r in self.records if r.path.endswith("/chat/completions")]

    def wait_for(self, predicate: t.Callable[[RequestRecord], bool], timeout: float = 5.0) -> RequestRecord:
        """Wait until some record satisfies ``predicate`` and return the first that does.

        Raises:
            TimeoutError: none did within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for rec in self._records:
                    if predicate(rec):
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    states = [(r.index, r.path, r.outcome) for r in self._records]
                    msg = f"No request record matched within {timeout} s; records (index, path, outcome): {states}"
                    raise TimeoutError(msg)
                self._cond.wait(left)

    def wait_for_closed(self, timeout: float = 5.0, *, after: float | None = None) -> RequestRecord:
        """Wait for a response that the client closed early and return its record.

        Args:
            timeout: seconds to wait.
            after: only records of requests started at or after this ``time.monotonic()`` value.

        Returns:
            The record; ``record.finished_at`` is when the server noticed the close.
        """
        return self.wait_for(lambda r: r.closed_early and (after is None or r.started_at >= after), timeout)

    def _update(self, rec: RequestRecord, **changes: t.Any) -> None:
        with self._cond:
            for k, v in changes.items():
                setattr(rec, k, v)
            self._cond.notify_all()

    # -- HTTP -----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(reader, writer)
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    return
                keep_alive = await self._dispatch(conn, *request)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _ClientGone):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug here must not kill the server; the client sees the connection close
            _log.exception("FakeOpenAI: error while serving a connection")
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, conn: _Conn, method: str, path: str, headers: dict[str, str], raw: bytes) -> bool:
        body: t.Any = None
        parse_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                parse_error = str(exc)
        chat = path.rstrip("/").endswith("/chat/completions")
        model = body.get("model") if chat and isinstance(body, dict) else None
        stream = bool(body.get("stream")) if chat and isinstance(body, dict) else False
        behaviour = self._behaviour(model, headers, body) if chat else dataclasses.replace(self.defaults)
        with self._cond:
            rec = RequestRecord(self._received, method, path, model, stream, body, headers, behaviour, time.monotonic())
            self._received += 1
            self._records.append(rec)
            self._cond.notify_all()
        keep_alive = headers.get("connection", "").lower() != "close"

        if self.api_key is not None and headers.get("authorization", "") != f"Bearer {self.api_key}":
            await self._error(conn, rec, 401, "Incorrect API key provided.", "invalid_api_key", keep_alive)
            return keep_alive
        if method == "GET" and path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": _CREATED, "owned_by": "streamtap"} for m in self.models]
            await self._json(conn, rec, 200, {"object": "list", "data": data}, keep_alive)
            return keep_alive
        if not chat or method != "POST":
            await self._error(conn, rec, 404, f"Unknown endpoint {method} {path}.", "not_found", keep_alive)
            return keep_alive
        if parse_error is not None or not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            msg = f"The request body must be JSON with a 'messages' list ({parse_error or 'it was not'})."
            await self._error(conn, rec, 400, msg, "invalid_request_error", keep_alive)
            return keep_alive
        if not model:
            await self._error(conn, rec, 400, "The request must name a 'model'.", "invalid_request_error", keep_alive)
            return keep_alive

        fault = behaviour.fault
        if fault is not None and fault.isdigit():
            code = int(fault)
            message = f"Injected fault: HTTP {code}."
            if code == 429:
                message = "Rate limit reached (injected fault). Retry after 0 s."
            await self._error(conn, rec, code, message, "injected_fault", keep_alive, fault=True)
            return keep_alive
        turn = self._script(body, behaviour)
        if stream:
            return await self._stream(conn, rec, body, behaviour, turn, keep_alive)
        if fault == "hang":
            await self._hang(conn, rec)
            return False
        if fault in ("drop", "malformed"):
            payload = b'{"id": "chatcmpl-broken", "choices": [' if fault == "malformed" else b""
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload) + 100}\r\n\r\n"
            self._update(rec, outcome="fault", finished_at=time.monotonic())
            conn.writer.write(head.encode() + payload)
            await conn.writer.drain()
            conn.writer.transport.abort()
            return False
        await self._json(conn, rec, 200, self._completion(body, turn), keep_alive)
        return keep_alive

    def _behaviour(self, model: t.Any, headers: dict[str, str], body: t.Any) -> Behaviour:
        b = dataclasses.replace(self.defaults)
        name = str(model or "").lower()
        if "reasoning" in name:
            b.reasoning = True
        if "inline" in name:
            b.tool_mode = "inline"
        if "internlm" in name:
            b.tool_mode = "internlm"
        m = re.search(r"fault-(\w+)", name)
        if m:
            b.fault = m.group(1)
        if "x-fake-fault" in headers:
            b.fault = headers["x-fake-fault"] or None
        if "x-fake-delay" in headers:
            with contextlib.suppress(ValueError):
                b.token_delay = max(0.0, float(headers["x-fake-delay"]))
        if "x-fake-reasoning" in headers:
            b.reasoning = headers["x-fake-reasoning"].lower() in ("1", "true", "yes", "on")
        if headers.get("x-fake-tool-mode") in ("native", "inline", "internlm"):
            b.tool_mode = t.cast(ToolMode, headers["x-fake-tool-mode"])
        for key, value, flag in _DIRECTIVE.findall(_last_user_text(body)):
            if key == "fault":
                b.fault = value
            elif key == "delay":
                with contextlib.suppress(ValueError):
                    b.token_delay = max(0.0, float(value))
            elif key == "tools" and value in ("native", "inline", "internlm"):
                b.tool_mode = t.cast(ToolMode, value)
            elif flag == "reasoning":
                b.reasoning = True
            elif flag == "bad-args":
                b.bad_args = True
            elif flag == "unknown-tool":
                b.unknown_tool = True
        return b

    # -- the scripted model -------------------------------------------------------


@contextlib.contextmanager
def model_endpoint(**server_options: t.Any) -> t.Iterator[str]:
    """Yield a ``base_url``: ``OPENAI_BASE_URL`` when it is set, else an embedded :class:`FakeOpenAI`'s.

    This is how the examples run offline by default and against any
    OpenAI-compatible endpoint when the environment names one.

    Args:
        **server_options: options for the embedded server (``token_delay=0.02``...).
    """
    import os

    url = os.environ.get("OPENAI_BASE_URL")
    if url:
        yield url
        return
    with FakeOpenAI(**server_options) as srv:
        yield srv.base_url


# -- command line ------------------------------------------------------------------


def main(argv: t.Sequence[str] | None = None) -> int:
    """``streamtap fake-openai``: serve the fake model until interrupted (Ctrl-C)."""
    parser = argparse.ArgumentParser(prog="streamtap fake-openai", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port)")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds before each streamed chunk")
    parser.add_argument("--reasoning", action="store_true", help="stream reasoning_content deltas")
    parser.add_argument("--tool-mode", choices=("native", "inline", "internlm"), default="native")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    ns = parser.parse_args(list(argv) if argv is not None else None)
    srv = FakeOpenAI(
        ns.host, ns.port, token_delay=ns.delay, reasoning=ns.reasoning, tool_mode=ns.tool_mode, api_key=ns.api_key
    )
    srv.start()
    print(f"fake OpenAI server on {srv.base_url}  (OPENAI_BASE_URL={srv.base_url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0
