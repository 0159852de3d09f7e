"""The wire side of :class:`~streamtap.testing.FakeOpenAI`: HTTP/1.1 requests read, JSON and SSE responses written, client disconnects watched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import typing as t

from ._fake_model import Behaviour, Outcome, RequestRecord
from ._fake_turns import (
    _FAULT_AFTER,
    _REASONS,
    _Turn,
)


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


class _HTTPWire:
    """HTTP reading and writing, mixed into :class:`~streamtap.testing.FakeOpenAI`."""

    _update: t.Callable[..., None]
    _chunks: t.Callable[..., t.Iterator[dict[str, t.Any]]]

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
        # asyncio.wait, not suppress(CancelledError): a cancellation of this task while it waits must propagate.
        await asyncio.wait({watcher})
        if not watcher.cancelled():
            watcher.exception()  # retrieved

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
