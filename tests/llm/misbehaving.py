"""A misbehaving OpenAI-compatible server: real HTTP on loopback, written on raw sockets.

The embedded :class:`~streamtap.testing.FakeOpenAI` is well behaved by
design; this one breaks the protocol in the ways real servers and proxies do,
byte for byte, so that the real ``openai`` client meets each fault as it would
in production. Raw sockets (not ``http.server``) because some faults are about
the framing itself: a chunked body cut before its last chunk, a body delimited
only by closing the connection (HTTP/1.0 style), a response that never starts.

A request picks its fault by model name (``model="fault-cut-close"``) or by the
``x-fault`` header (``extra_headers={"x-fault": "cut-close"}``); the model
``ok`` (or any other name) answers normally. The answer streams the words of
the last user message, one content delta per word. Faults (:data:`FAULTS`):

====================  ===========================================================
``ok``                a normal chunked stream: words, ``finish_reason="stop"``,
                      usage when asked, ``[DONE]``
``close``             the same, but close-delimited: HTTP/1.0 style, no
                      ``Content-Length``, no chunked encoding; the server closes
                      the connection after ``[DONE]``
``500``               HTTP 500 with a JSON error body
``429``               HTTP 429 with ``Retry-After`` (the ``x-retry-after`` header,
                      default ``1``)
``401``               HTTP 401 whose body echoes the API key (and the whole
                      ``Authorization`` header) and names an internal URL
``malformed``         two good chunks, then a chunk that is not JSON
``cut-chunked``       two good chunks, then the connection closes inside the
                      chunked body (no terminating chunk)
``cut-close``         close-delimited; two good chunks, then the connection closes
                      (the client sees a clean end of body)
``no-finish``         chunked; every word, then a clean end of body with no
                      ``finish_reason`` and no ``[DONE]``
``cut-after-finish``  chunked; the whole answer with its ``finish_reason``,
                      then the connection closes before ``[DONE]``
``hang-first``        reads the request and never sends a byte
``hang-mid``          two good chunks, then silence
``huge-delta``        one content delta of ``x-size`` bytes (default 4 MiB), then
                      a normal end
====================  ===========================================================

More request headers: ``x-delay`` (seconds before each chunk), ``x-cut-after``
(events sent before a mid-stream fault, default 2), ``x-fault-times``
(only the first N requests with this fault misbehave; later ones answer ``ok``,
for retry tests). Every request is recorded (:class:`Request`) with the times
the server sent its first byte and finished, and whether the client closed the
connection first.
"""

from __future__ import annotations

import dataclasses
import json
import select
import socket
import threading
import time
import typing as t

__all__ = ["FAULTS", "INTERNAL_URL", "Misbehaving", "Request"]

FAULTS = (
    "ok",
    "close",
    "500",
    "429",
    "401",
    "malformed",
    "cut-chunked",
    "cut-close",
    "no-finish",
    "cut-after-finish",
    "hang-first",
    "hang-mid",
    "huge-delta",
)
"""The faults a request can ask for."""

INTERNAL_URL = "http://10.20.30.40:8081/internal/auth/v1"
"""The internal URL the ``401`` body names (it must never reach a user)."""

_GOOD_CHUNKS = 2  # chunks sent before a mid-stream fault
_POLL = 0.01


@dataclasses.dataclass
class Request:
    """One request the server received, and what it did with it."""

    fault: str
    model: str
    headers: dict[str, str]
    body: dict[str, t.Any]
    started_at: float
    """``time.monotonic()`` when the request was read."""
    first_byte_at: float | None = None
    finished_at: float | None = None
    """When the server stopped: answered, cut, or saw the client go."""
    chunks_sent: int = 0
    client_closed: bool = False
    """The client closed the connection before the server was done."""


class _ClientGone(Exception):
    pass


class Misbehaving:
    """The server. Use it as a context manager, or ``start()`` / ``stop()``.

    Args:
        host: the loopback address to listen on.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(_POLL * 10)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._requests: list[Request] = []
        self._fault_counts: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the ``openai`` client (ends with ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    # -- life cycle ----------------------------------------------------------

    def start(self) -> t.Self:
        """Start accepting connections (in a thread); returns ``self``."""
        thread = threading.Thread(target=self._accept, name="misbehaving-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self) -> None:
        """Stop: hanging responses end, connections close, every thread is joined."""
        self._stopping.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> t.Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- records -------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """The requests so far (a copy of the list; the records update while they run)."""
        with self._lock:
            return list(self._requests)

    def wait_for(self, predicate: t.Callable[[Request], bool], timeout: float = 5.0) -> Request:
        """The first request for which ``predicate`` holds, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for req in self._requests:
                    if predicate(req):
                        return req
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"No request matched within {timeout} s; requests: {self._requests!r}"
                    raise TimeoutError(msg)
                self._lock.wait(left)

    def _update(self, req: Request, **changes: t.Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(req, key, value)
            self._lock.notify_all()

    # -- serving -------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="misbehaving-conn", daemon=True)
            with self._lock:
                self._conns.add(conn)
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        req: Request | None = None
        try:
            parsed = _read_request(conn)
            if parsed is None:
                return
            headers, body = parsed
            req = self._record(headers, body)
            self._answer(conn, req)
        except _ClientGone:
            if req is not None:
                self._update(req, client_closed=True)
        except OSError:
            if req is not None and not self._stopping.is_set():
                self._update(req, client_closed=True)
        finally:
            if req is not None:
                self._update(req, finished_at=time.monotonic())
            with self._lock:
                self._conns.discard(conn)
            _shutdown(conn)
            conn.close()

    def _record(self, headers: dict[str, str], body: dict[str, t.Any]) -> Request:
        model = str(body.get("model", ""))
        fault = headers.get("x-fault") or (model[len("fault-") :] if model.startswith("fault-") else "ok")
        times = headers.get("x-fault-times")
        with self._lock:
            if times is not None:
                seen = self._fault_counts.get(fault, 0)
                self._fault_counts[fault] = seen + 1
                if seen >= int(times):
                    fault = "ok"
            req = Request(fault, model, headers, body, time.monotonic())
            self._requests.append(req)
            self._lock.notify_all()
        return req

    def _answer(self, conn: socket.socket, req: Request) -> None:
        fault = req.fault
        if fault == "hang-first":
            self._idle(conn, None)
            return
        if fault in ("500", "429", "401"):
            self._status(conn, req)
            return
        if not req.body.get("stream"):
            self._send(
                conn, req, _head(200, {"Content-Type": "application/json"}, json.dumps(_completion(req)).encode())
            )
            return
        framed = fault not in ("close", "cut-close")
        extra = {"Transfer-Encoding": "chunked"} if framed else {}
        self._send(
            conn, req, _head(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **extra}, None)
        )
        delay = float(req.headers.get("x-delay", "0"))
        cut_at = int(req.headers.get("x-cut-after", str(_GOOD_CHUNKS)))
        write = (
            (lambda data: self._send(conn, req, _chunk(data))) if framed else (lambda data: self._send(conn, req, data))
        )
        for i, event in enumerate(_events(req)):
            if delay:
                self._idle(conn, delay)
            if i == cut_at and fault in ("malformed", "cut-chunked", "cut-close", "hang-mid"):
                if fault == "malformed":
                    write(b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n')
                    break
                if fault == "hang-mid":
                    self._idle(conn, None)
                return  # cut: close the connection inside the body
            if fault == "cut-after-finish" and event.startswith(b"data: [DONE]"):
                return  # cut: the answer is complete, only [DONE] and the chunked terminator are lost
            if fault == "no-finish" and (b'"finish_reason": "' in event or event.startswith(b"data: [DONE]")):
                continue
            if fault == "no-finish" and b'"usage": {' in event:
                continue
            write(event)
            self._update(req, chunks_sent=req.chunks_sent + 1)
        if framed:
            self._send(conn, req, b"0\r\n\r\n")

    def _status(self, conn: socket.socket, req: Request) -> None:
        code = int(req.fault)
        headers = {"Content-Type": "application/json"}
        if code == 500:
            error = {"message": "The server had an error while processing your request.", "type": "server_error"}
        elif code == 429:
            retry_after = req.headers.get("x-retry-after", "1")
            headers["Retry-After"] = retry_after
            error = {"message": f"Rate limit reached. Retry after {retry_after} s.", "type": "rate_limit_exceeded"}
        else:
            auth = req.headers.get("authorization", "")
            key = auth.removeprefix("Bearer ")
            error = {
                "message": f"Incorrect API key provided: {key}. Request had 'Authorization: {auth}'. "
                f"Keys are checked by {INTERNAL_URL}/keys.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        self._send(conn, req, _head(code, headers, json.dumps({"error": error}).encode()))

    def _send(self, conn: socket.socket, req: Request, data: bytes) -> None:
        if req.first_byte_at is None:
            self._update(req, first_byte_at=time.monotonic())
        try:
            conn.sendall(data)
        except OSError as exc:
            raise _ClientGone from exc

    def _idle(self, conn: socket.socket, seconds: float | None) -> None:
        """Wait ``seconds`` (``None``: until the server stops); raise :class:`_ClientGone` if the client closes."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stopping.is_set():
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if left <= 0:
                return
            readable, _, _ = select.select([conn], [], [], left)
            if readable:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    raise _ClientGone


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_request(conn: socket.socket) -> tuple[dict[str, str], dict[str, t.Any]] | None:
    """Read one request: its headers (lower-case names) and its JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = conn.recv(65536)
        if not more:
            return None
        rest += more
    try:
        body = json.loads(rest[:length] or b"{}")
    except ValueError:
        body = {}
    return headers, body if isinstance(body, dict) else {}


def _head(status: int, headers: dict[str, str], body: bytes | None) -> bytes:
    """A status line and headers; a ``Content-Length`` and the body when given, else nothing after the headers."""
    reason = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error"}[status]
    close_delimited = body is None and "Transfer-Encoding" not in headers
    version = "HTTP/1.0" if close_delimited else "HTTP/1.1"
    lines = [f"{version} {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _words(req: Request) -> list[str]:
    text = ""
    for msg in req.body.get("messages", []):
        if isinstance(msg, dict) and msg.get("role") == "user" and isinstance(msg.get("content"), str):
            text = msg["content"]
    return text.split() or ["ok"]


def _base(req: Request) -> dict[str, t.Any]:
    return {"id": "chatcmpl-misbehaving", "object": "chat.completion.chunk", "created": 0, "model": req.model}


def _events(req: Request) -> t.Iterator[bytes]:
    """The SSE events of a normal answer (the fault handling skips or replaces some)."""

    def event(delta: dict[str, t.Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({**_base(req), "choices": [choice]}).encode() + b"\n\n"

    if req.fault == "huge-delta":
        size = int(req.headers.get("x-size", str(4 * 1024 * 1024)))
        yield event({"role": "assistant", "content": "x" * size})
    else:
        for i, word in enumerate(_words(req)):
            yield event({"role": "assistant", "content": word if i == 0 else f" {word}"})
    yield event({}, "stop")
    if (req.body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 3, "completion_tokens": len(_words(req)), "total_tokens": 3 + len(_words(req))}
        yield b"data: " + json.dumps({**_base(req), "choices": [], "usage": usage}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _completion(req: Request) -> dict[str, t.Any]:
    text = " ".join(_words(req))
    return {
        "id": "chatcmpl-misbehaving",
        "object": "chat.completion",
        "created": 0,
        "model": req.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
