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

__all__ = ["Behaviour", "FakeOpenAI", "RequestRecord", "main", "model_endpoint"]

_log = logging.getLogger(__name__)
ToolMode = t.Literal["native", "inline", "internlm"]
Outcome = t.Literal["pending", "completed", "client_closed", "fault", "error"]

_CREATED = 1_700_000_000
_FAULT_AFTER = 2
_CITIES: dict[str, str] = {
    "tokyo": "Tokyo, Japan",
    "paris": "Paris, France",
    "san francisco": "San Francisco, CA",
    "beijing": "Beijing, China",
    "london": "London, UK",
    "new york": "New York, NY",
}
_STORY = (
    "Covering one's ears to steal a bell is an old Chinese idiom. A thief wanted to steal a bell hanging on a "
    "gate, but knew its ringing would give him away. So he covered his own ears, thinking that if he could not "
    "hear it, nobody could. The bell rang, and he was caught. The story warns that fooling yourself does not "
    "make a problem go away."
)
_DIRECTIVE = re.compile(r"\[(fault|delay|tools)=([^\]\s]+)\]|\[(reasoning|bad-args|unknown-tool)\]")
_TOKEN = re.compile(r"\s*\S+|\s+")
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclasses.dataclass
class Behaviour:
    """How the server answers one request (see the module docstring for how it is chosen).

    Attributes:
        token_delay: seconds to wait before each streamed chunk.
        reasoning: stream ``reasoning_content`` deltas before the answer.
        tool_mode: ``native`` tool calls, or inline ``<tool_call>`` / InternLM markup in the text.
        fault: ``None``, an HTTP status as a string (``"500"``), ``"malformed"``, ``"drop"`` or ``"hang"``.
        bad_args: make tool calls with bad arguments.
        unknown_tool: call a tool that was not offered.
    """

    token_delay: float = 0.0
    reasoning: bool = False
    tool_mode: ToolMode = "native"
    fault: str | None = None
    bad_args: bool = False
    unknown_tool: bool = False


@dataclasses.dataclass
class RequestRecord:
    """What the server saw of one request. Times are ``time.monotonic()`` seconds.

    Attributes:
        index: 0-based arrival order.
        method: HTTP method.
        path: request path.
        model: the requested model (chat requests).
        stream: whether a stream was asked for.
        body: the parsed JSON body (``None`` when there was none).
        headers: request headers, lower-cased names.
        behaviour: the :class:`Behaviour` chosen for it.
        started_at: when the request was read.
        finished_at: when the response ended (completed, cut, or closed by the client).
        outcome: ``pending``, ``completed``, ``client_closed`` (closed by the client
            before the end), ``fault`` (an injected fault ran) or ``error``.
        status: the HTTP status sent.
        chunks_sent: SSE data frames written (``[DONE]`` excluded).
    """

    index: int
    method: str
    path: str
    model: str | None
    stream: bool
    body: t.Any
    headers: dict[str, str]
    behaviour: Behaviour
    started_at: float
    finished_at: float | None = None
    outcome: Outcome = "pending"
    status: int = 200
    chunks_sent: int = 0

    @property
    def closed_early(self) -> bool:
        """Whether the client closed the connection before the response was complete."""
        return self.outcome == "client_closed"

    @property
    def messages(self) -> list[dict[str, t.Any]]:
        """The chat messages of the request (empty for other requests)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return t.cast("list[dict[str, t.Any]]", self.body["messages"])
        return []


class _ClientGone(Exception):
    """The client closed the connection."""


class _Conn:
    """One HTTP/1.1 connection: its streams, a byte pushed back by the close watcher, the close event."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pushback = b""
        self.closed = asyncio.Event()
        self.closed_at: float | None = None


class FakeOpenAI:
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

    async def _read_request(self, conn: _Conn) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = conn.pushback + await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        conn.pushback = b""
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await conn.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await conn.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        return method, target.split("?", 1)[0], headers, body

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

    async def _send_head(self, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def _json(self, conn: _Conn, rec: RequestRecord, status: int, payload: t.Any, keep_alive: bool) -> None:
        data = json.dumps(payload).encode()
        headers = {"content-type": "application/json", "content-length": str(len(data))}
        if not keep_alive:
            headers["connection"] = "close"
        # Recorded before the bytes go out, so that a client that has its answer sees the final record.
        outcome: Outcome = "completed" if rec.outcome == "pending" else rec.outcome
        self._update(rec, status=status, outcome=outcome, finished_at=time.monotonic())
        await self._send_head(conn, status, headers)
        conn.writer.write(data)
        await conn.writer.drain()

    async def _error(
        self,
        conn: _Conn,
        rec: RequestRecord,
        status: int,
        message: str,
        code: str,
        keep_alive: bool,
        *,
        fault: bool = False,
    ) -> None:
        outcome: Outcome = "fault" if fault else "error" if status >= 400 else rec.outcome
        self._update(rec, status=status, outcome=outcome, finished_at=time.monotonic())
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 429:
            kind = "rate_limit_error"
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        data = json.dumps(payload).encode()
        headers = {"content-type": "application/json", "content-length": str(len(data))}
        if status == 429:
            headers["retry-after"] = "0"
        if not keep_alive:
            headers["connection"] = "close"
        await self._send_head(conn, status, headers)
        conn.writer.write(data)
        await conn.writer.drain()

    def _watch(self, conn: _Conn, rec: RequestRecord) -> asyncio.Task[bytes]:
        """Watch the connection for the client closing it while a response is being written."""

        async def watch() -> bytes:
            data = await conn.reader.read(1)
            if not data:
                conn.closed_at = time.monotonic()
                conn.closed.set()
                if rec.outcome == "pending":
                    self._update(rec, outcome="client_closed", finished_at=conn.closed_at)
            return data

        return asyncio.ensure_future(watch())

    async def _unwatch(self, conn: _Conn, watcher: asyncio.Task[bytes]) -> None:
        if watcher.done():
            if not watcher.cancelled() and watcher.exception() is None:
                conn.pushback = watcher.result()
            return
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async def _hang(self, conn: _Conn, rec: RequestRecord) -> None:
        watcher = self._watch(conn, rec)
        try:
            await conn.closed.wait()
        finally:
            await self._unwatch(conn, watcher)
        raise _ClientGone

    async def _stream(
        self,
        conn: _Conn,
        rec: RequestRecord,
        body: dict[str, t.Any],
        behaviour: Behaviour,
        turn: _Turn,
        keep_alive: bool,
    ) -> bool:
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked"}
        if not keep_alive:
            headers["connection"] = "close"
        watcher = self._watch(conn, rec)
        writer = conn.writer
        sent = 0
        try:
            await self._send_head(conn, 200, headers)
            await writer.drain()
            chunks = self._chunks(body, turn)
            delay = behaviour.token_delay
            for payload in chunks:
                if conn.closed.is_set():
                    raise _ClientGone
                if behaviour.fault in ("malformed", "drop", "hang") and sent == _FAULT_AFTER:
                    if behaviour.fault == "malformed":
                        self._update(rec, outcome="fault", finished_at=time.monotonic(), chunks_sent=sent)
                        self._frame(writer, 'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n')
                        self._frame(writer, "data: [DONE]\n\n")
                        writer.write(b"0\r\n\r\n")
                        await writer.drain()
                        return keep_alive
                    if behaviour.fault == "drop":
                        self._update(rec, outcome="fault", finished_at=time.monotonic(), chunks_sent=sent)
                        await writer.drain()
                        writer.transport.abort()
                        return False
                    await conn.closed.wait()  # hang until the client gives up
                    raise _ClientGone
                if delay > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(conn.closed.wait(), delay)
                    if conn.closed.is_set():
                        raise _ClientGone
                sent += 1
                self._update(rec, chunks_sent=sent)
                self._frame(writer, "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n")
                await writer.drain()
            self._update(rec, outcome="completed", finished_at=time.monotonic(), chunks_sent=sent)
            self._frame(writer, "data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep_alive
        except (ConnectionError, _ClientGone):
            if rec.outcome == "pending":
                self._update(rec, outcome="client_closed", finished_at=conn.closed_at or time.monotonic())
            raise _ClientGone from None
        finally:
            await self._unwatch(conn, watcher)

    @staticmethod
    def _frame(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    # -- the scripted model -------------------------------------------------------

    def _next_completion_id(self) -> str:
        self._completion_ids += 1
        return f"chatcmpl-fake{self._completion_ids:06d}"

    def _next_call_id(self) -> str:
        self._call_ids += 1
        return f"call_fake{self._call_ids:06d}"

    def _script(self, body: dict[str, t.Any], b: Behaviour) -> _Turn:
        messages = body.get("messages") or []
        offered = {
            (tool.get("function") or {}).get("name") for tool in body.get("tools") or [] if isinstance(tool, dict)
        }
        user = _DIRECTIVE.sub("", _last_user_text(body)).strip()
        turn = _Turn(id=self._next_completion_id(), model=_response_model(body.get("model")))
        tail: list[dict[str, t.Any]] = []
        for msg in reversed(messages):
            if not isinstance(msg, dict) or msg.get("role") == "user":
                break
            tail.append(msg)
        results = [m for m in reversed(tail) if m.get("role") == "tool"]
        if results:
            contents = [str(m.get("content", "")) for m in results]
            turn.text = _answer_from(contents)
            if b.reasoning:
                turn.reasoning = "I have the tool results; now I summarise them for the user."
            return turn
        calls = self._plan_calls(user, offered, b)
        if calls:
            if b.reasoning:
                names = ", ".join(sorted({c[1] for c in calls}))
                turn.reasoning = f"The user asks about the weather. I should call {names} once per city."
            if b.tool_mode == "native":
                turn.calls = calls
            else:
                turn.text = _inline_markup(calls, b.tool_mode)
            return turn
        ctx_match = re.search(r"context:\s*(.*?)\s*Question:", user, re.S | re.I)
        if ctx_match:
            facts = [line.strip() for line in ctx_match.group(1).splitlines() if line.strip()]
            turn.text = "According to the context: " + "; ".join(facts) + "." if facts else "The context is empty."
            return turn
        wants_json = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        if wants_json or "json" in user.lower():
            if b.reasoning:
                turn.reasoning = "The user wants JSON with one key, content."
            turn.text = json.dumps({"content": _STORY}, ensure_ascii=False)
            return turn
        if b.reasoning:
            turn.reasoning = "The user said something; I will repeat it back."
        turn.text = f"You said: {user}" if user else "Hello! How can I help you today?"
        return turn

    def _plan_calls(self, user: str, offered: set[t.Any], b: Behaviour) -> list[tuple[str, str, str]]:
        lower = user.lower()
        if b.unknown_tool and offered:
            return [(self._next_call_id(), "get_stock_price", json.dumps({"symbol": "ACME"}))]
        if b.bad_args and offered:
            calls = []
            name = "get_current_weather" if "get_current_weather" in offered else sorted(offered)[0]
            calls.append((self._next_call_id(), name, '{"location": "Tokyo'))
            other = "get_n_day_weather_forecast" if "get_n_day_weather_forecast" in offered else name
            calls.append((self._next_call_id(), other, json.dumps({"num_days": "three"})))
            return calls
        found = [(lower.find(key), loc) for key, loc in _CITIES.items() if key in lower]
        if not found or ("weather" not in lower and "forecast" not in lower and "temperature" not in lower):
            return []
        days = re.search(r"(\d+)[- ]day", lower)
        forecast = ("forecast" in lower or days is not None) and "get_n_day_weather_forecast" in offered
        name = "get_n_day_weather_forecast" if forecast else "get_current_weather"
        if name not in offered:
            return []
        unit = "celsius" if "celsius" in lower else "fahrenheit" if "fahrenheit" in lower else None
        calls = []
        for _, location in sorted(found):
            args: dict[str, t.Any] = {"location": location}
            if forecast:
                args["num_days"] = int(days.group(1)) if days else 3
            if unit:
                args["unit"] = unit
            calls.append((self._next_call_id(), name, json.dumps(args)))
        return calls

    @staticmethod
    def _base(turn: _Turn, include_usage: bool) -> dict[str, t.Any]:
        base: dict[str, t.Any] = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": turn.model,
            "system_fingerprint": "fp_streamtap_fake",
        }
        if include_usage:
            base["usage"] = None
        return base

    def _chunks(self, body: dict[str, t.Any], turn: _Turn) -> t.Iterator[dict[str, t.Any]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, t.Any], finish: str | None = None) -> dict[str, t.Any]:
            c = self._base(turn, include_usage)
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            return c

        yield chunk({"role": "assistant", "content": ""})
        reasoning_tokens = 0
        completion_tokens = 0
        for piece in _tokens(turn.reasoning):
            reasoning_tokens += 1
            yield chunk({"reasoning_content": piece})
        pieces = _small_pieces(turn.text) if _has_markup(turn.text) else _tokens(turn.text)
        for piece in pieces:
            completion_tokens += 1
            yield chunk({"content": piece})
        for index, (call_id, name, arguments) in enumerate(turn.calls):
            completion_tokens += 1
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            for part in _split_args(arguments):
                completion_tokens += 1
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls" if turn.calls else "stop")
        if include_usage:
            c = self._base(turn, False)
            c["choices"] = []
            c["usage"] = _usage(body, completion_tokens + reasoning_tokens, reasoning_tokens)
            yield c

    def _completion(self, body: dict[str, t.Any], turn: _Turn) -> dict[str, t.Any]:
        message: dict[str, t.Any] = {"role": "assistant", "content": turn.text if not turn.calls else None}
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if turn.calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in turn.calls
            ]
        completion = len(_tokens(turn.text)) + sum(len(_split_args(a)) + 1 for _, _, a in turn.calls)
        reasoning = len(_tokens(turn.reasoning))
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": _CREATED,
            "model": turn.model,
            "system_fingerprint": "fp_streamtap_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if turn.calls else "stop",
                }
            ],
            "usage": _usage(body, completion + reasoning, reasoning),
        }


@dataclasses.dataclass
class _Turn:
    id: str
    model: str
    text: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


def _response_model(model: t.Any) -> str:
    return f"{model}-fake-0001"


def _last_user_text(body: t.Any) -> str:
    if not isinstance(body, dict):
        return ""
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _tokens(text: str) -> list[str]:
    """Split text the way a tokenizer streams it: words with their leading whitespace."""
    return _TOKEN.findall(text) if text else []


def _small_pieces(text: str, size: int = 4) -> list[str]:
    """Split text (with markup) into short pieces so that markers straddle chunk boundaries."""
    out: list[str] = []
    for token in _tokens(text):
        out.extend(token[i : i + size] for i in range(0, len(token), size))
    return out


def _split_args(arguments: str) -> list[str]:
    """Split a tool call's JSON arguments over several chunks (at least 3 when long enough)."""
    if not arguments:
        return []
    size = max(1, min(8, len(arguments) // 3 or 1))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _has_markup(text: str) -> bool:
    return "<tool_call>" in text or "<|action_start|>" in text


def _inline_markup(calls: list[tuple[str, str, str]], mode: ToolMode) -> str:
    parts = ["Let me look that up."]
    for _cid, name, args in calls:
        if mode == "internlm":
            payload = json.dumps({"name": name, "parameters": json.loads(args)})
            parts.append(f"<|action_start|><|plugin|>\n{payload}<|action_end|>")
        else:
            payload = json.dumps({"name": name, "arguments": json.loads(args)})
            parts.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(parts)


def _usage(body: dict[str, t.Any], completion: int, reasoning: int) -> dict[str, t.Any]:
    prompt = 0
    for msg in body.get("messages") or []:
        if isinstance(msg, dict):
            prompt += 4 + len(re.findall(r"\S+", str(msg.get("content") or "")))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _answer_from(contents: list[str]) -> str:
    """Compose the final answer from tool results, like the LazyLLM seed's model does."""
    current: list[dict[str, t.Any]] = []
    forecast: list[dict[str, t.Any]] = []
    problems: list[str] = []
    for content in contents:
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if isinstance(data, dict) and "location" in data and "temperature" in data:
            (forecast if "num_days" in data else current).append(data)
        else:
            problems.append(content)
    sentences = []
    for items, first in ((current, "The current weather in"), (forecast, "The {n}-day forecast for")):
        clauses = []
        for i, d in enumerate(items):
            loc = d["location"]
            temp = d["temperature"]
            unit = str(d.get("unit", "")).capitalize()
            value = "unknown" if temp == "unknown" else f"{temp} degrees {unit}".rstrip()
            if i == 0:
                head = first.format(n=d.get("num_days", ""))
                clauses.append(f"{head} {loc} is {value}")
            else:
                clauses.append(f"in {loc}, it is {value}" if items is current else f"for {loc}, it is {value}")
        if clauses:
            text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + ", and " + clauses[-1]
            sentences.append(text + ".")
    if problems:
        sentences.append("I could not get that: " + " ".join(problems))
    return " ".join(sentences) if sentences else "The tools returned nothing."


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
