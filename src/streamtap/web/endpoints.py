"""The app's HTTP endpoints: one object holding what they share, one method per endpoint.

:func:`streamtap.web.create_app` builds the pieces (the security policy, the
chat service, what clients are told of errors) and mounts
:meth:`Endpoints.routes`; this module holds the request handling itself. It
imports Starlette and sse-starlette at import, so only ``create_app`` imports
it, once it has checked that the ``web`` extra is installed.
"""

from __future__ import annotations

import contextlib
import json
import typing as t
from importlib import resources

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import propagation
from ..tracing import conversation
from .chat import BadRequest, ChatRequest, parse_chat_request, valid_id
from .client_errors import ClientErrors
from .openapi import openapi_document
from .service import ActiveRun, ChatService, resolved, stop_answer
from .store import EXPIRED, follow
from .ui_stream import UI_STREAM_HEADERS, UIMessageMapper, encode_json, encode_part

if t.TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

__all__ = ["Endpoints", "SpanSource"]

_EVENT_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = b"data: [DONE]\n\n"
_RUN_ID_RULE = "1-128 characters of letters, digits, '_', '-', '.', ':'"


class SpanSource(t.Protocol):
    """What the app needs of a tracing subscriber: a run's span context (``None`` when not traced)."""

    def span_context(self, run_id: str) -> t.Any:
        """The span context of a live or recently ended run."""


class Endpoints:
    """The web app's endpoints over one :class:`~streamtap.web.service.ChatService`.

    Each ``async`` method taking a ``Request`` is one endpoint (see
    :mod:`streamtap.web.app` for the list); the others are what they share:
    error answers, SSE responses, the size-limited JSON body, the UI stream of
    one run. Arguments are those of :func:`~streamtap.web.create_app`,
    already checked.
    """

    def __init__(
        self,
        service: ChatService,
        errors: ClientErrors,
        *,
        tracing: SpanSource | None,
        trace_url: str | None,
        max_body_bytes: int,
        max_messages: int,
        keepalive: float,
        send_timeout: float | None,
        page: bool,
        title: str,
        token_required: bool,
    ) -> None:
        self.service = service
        self.store = service.store
        self.errors = errors
        self.tracing = tracing
        self.trace_url = trace_url
        self.max_body_bytes = max_body_bytes
        self.max_messages = max_messages
        self.keepalive = keepalive
        self.send_timeout = send_timeout
        self.page = page
        self.title = title
        self.token_required = token_required

    def routes(self, agui_path: str | None) -> list[BaseRoute]:
        """The app's routes: the API, the AG-UI endpoint at ``agui_path`` (unless ``None``), the page."""
        routes: list[BaseRoute] = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/chat", self.chat, methods=["POST"]),
            Route("/api/chat/{chat_id}/stream", self.chat_stream, methods=["GET"]),
            Route("/api/chat/{chat_id}/stop", self.chat_stop, methods=["POST"]),
            Route("/api/runs/{run_id}/events", self.run_events, methods=["GET"]),
            Route("/api/runs/{run_id}/ui", self.run_ui, methods=["GET"]),
        ]
        if agui_path is not None:
            from .agui import AGUIOptions, agui_routes

            routes += agui_routes(
                self.service,
                self.errors,
                options=AGUIOptions(path=agui_path),
                read_json=self.read_json,
                sse=self.sse,
                max_messages=self.max_messages,
                trace_id=self.trace_id,
            )
        if self.page:
            static_dir = str(resources.files("streamtap.web").joinpath("static"))
            routes += [
                Route("/", self.index, methods=["GET"]),
                Mount("/static", StaticFiles(directory=static_dir), name="static"),
            ]
        return routes

    # -- what the endpoints share ---------------------------------------------------

    def error(self, status: int, message: str) -> Response:
        """A JSON error answer, ``{"error": message}``, the message redacted."""
        return JSONResponse({"error": self.errors.message(message)}, status_code=status)

    def sse(self, content: t.AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
        """An SSE response of already framed bytes, with keep-alive comments and the send timeout."""
        return EventSourceResponse(
            content,
            headers=headers,
            ping=self.keepalive,
            ping_message_factory=_ping,
            sep="\n",
            send_timeout=self.send_timeout,
        )

    def trace_id(self, run_id: str) -> str | None:
        """The trace id of a run the tracing subscriber traces (``None`` when none does)."""
        return _trace_id(self.tracing.span_context(run_id)) if self.tracing is not None else None

    async def read_json(self, request: Request) -> t.Any:
        """The request's JSON body, read within ``max_body_bytes``.

        Raises:
            BadRequest: 413 for a body over the limit, 400 for an empty body or one that is not JSON.
        """
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BadRequest(413, f"The request body is {length} bytes; the limit is max_body_bytes={limit}.")
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise BadRequest(413, f"The request body is over max_body_bytes={limit} bytes.")
        if not body:
            raise BadRequest(400, "The request body is empty; send a JSON object with 'id', 'messages' and 'trigger'.")
        try:
            return json.loads(body)
        except ValueError as exc:
            msg = f"The request body is not valid JSON ({exc}). Send the AI SDK chat body as JSON."
            raise BadRequest(400, msg) from None
        except RecursionError:
            msg = "The request body is JSON nested too deeply to read; send the AI SDK chat body."
            raise BadRequest(400, msg) from None

    def mapper_for(self, run: t.Any, trace_id: str | None = None) -> UIMessageMapper:
        """The UI message mapper of a chat run; ``trace_id``: the caller's, when the run is not traced here."""

        def metadata() -> dict[str, t.Any]:
            out = {"runId": run.run_id, "chatId": run.chat_id}
            traced = self.trace_id(run.run_id)
            if traced or trace_id:
                out["traceId"] = traced or trace_id
            return out

        return UIMessageMapper(
            run.run_id,
            message_id=run.message_id,
            verbose=run.verbose,
            stream_text=run.stream_text,
            metadata=metadata,
            cancel_reason=lambda: run.cancel_reason,
            describe_error=self.errors.describe,
        )

    async def ui_frames(self, run_id: str, mapper: UIMessageMapper, live: ActiveRun | None) -> t.AsyncIterator[bytes]:
        """A run as UI message stream frames: the whole answer so far, then the live rest, ``[DONE]`` last.

        ``live``: the run still going that this client now reads (counted as
        its reader: see :meth:`ChatService.reader_joined`).
        """
        complete = False
        begun = False
        if live is not None:
            self.service.reader_joined(live)

        def frames(parts: list[t.Any]) -> bytes:
            # ``start`` goes out with the first event, when the run's span (its trace id) exists.
            nonlocal begun
            if not begun:
                begun = True
                parts = mapper.begin() + parts
            return b"".join(map(encode_part, parts))

        try:
            yield b": stream-open\n\n"
            async with contextlib.aclosing(follow(self.store, run_id)) as batches:
                async for batch in batches:
                    if batch is None:
                        yield frames(mapper.close(EXPIRED))
                        break
                    out = [p for ev in batch for p in mapper.feed(ev)]
                    if out or not begun:
                        yield frames(out)
                    if mapper.done:
                        break
                else:
                    yield frames(mapper.close())
            yield _DONE
            complete = True
        finally:
            if live is not None:
                self.service.reader_left(live, complete)

    async def event_frames(
        self, run_id: str, after: int, keep: t.Callable[[t.Mapping[str, t.Any]], bool]
    ) -> t.AsyncIterator[bytes]:
        """A run's events after seq ``after`` as SSE frames (``id:`` = seq), those ``keep`` accepts."""
        reading = self.service.runs.get(run_id)  # a run still going counts this client as its reader
        if reading is not None:
            self.service.reader_joined(reading)
        complete = False
        try:
            yield b"retry: 1000\n\n"
            last = after
            async for batch in follow(self.store, run_id, after):
                if batch is None:
                    break
                if batch and batch[0]["seq"] > last + 1:
                    # The store dropped these (max_events_per_run): say so, never skip them silently.
                    yield b"data: %s\n\n" % encode_json(_gap(run_id, last + 1, batch[0]["seq"] - 1))
                if batch:
                    last = batch[-1]["seq"]
                out = [
                    b"id: %d\ndata: %s\n\n" % (ev["seq"], encode_json(self.errors.event(ev, run_id)))
                    for ev in batch
                    if keep(ev)
                ]
                if out:
                    yield b"".join(out)
            complete = True
        finally:
            if reading is not None:
                self.service.reader_left(reading, complete)

    # -- endpoints ----------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        """``POST /api/chat``: start (or answer the interrupt of) a chat's run; its UI message stream."""
        service = self.service
        try:
            req: ChatRequest = parse_chat_request(await self.read_json(request), max_messages=self.max_messages)
            pending = bool(await resolved(service.has_pending(req.chat_id)))
            if "resume" in req.body and not pending:
                raise BadRequest(
                    409, f"Chat {req.chat_id!r} has no pending interrupt to answer; send the message without 'resume'."
                )
            answering = "resume" in req.body or pending
            if not answering and not req.last_user_text:
                msg = "The last user message has no text; put the question in a {'type': 'text', 'text': ...} part."
                raise BadRequest(422, msg)
            carrier = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
            with propagation.continue_trace(carrier) as caller, conversation(req.chat_id):
                # The run's task copies this context: its root span continues the caller's trace.
                run = await service.start(req)
        except BadRequest as exc:
            return self.error(exc.status, exc.message)
        return self.sse(self.ui_frames(run.run_id, self.mapper_for(run, _trace_id(caller)), run), UI_STREAM_HEADERS)

    async def chat_stream(self, request: Request) -> Response:
        """``GET /api/chat/{id}/stream``: the chat's run going (or ``?run=``), replayed then live; 204 when none."""
        chat_id = request.path_params["chat_id"]
        if not valid_id(chat_id):
            return self.error(422, f"Invalid chat id {chat_id!r}.")
        wanted = request.query_params.get("run")
        if wanted is not None and not valid_id(wanted):
            return self.error(422, f"Invalid run id {wanted!r}: {_RUN_ID_RULE}.")
        if wanted is not None:  # a given run of this chat, finished or not, while its events are kept
            run = await resolved(self.service.run_of(chat_id, wanted))
            if run is None or await self.store.read(run.run_id, limit=0) is None:
                return self.error(
                    404, f"Chat {chat_id!r} has no run {wanted!r} any more (unknown, or its events expired)."
                )
        else:
            run = await resolved(self.service.active(chat_id))
            if run is None:
                return Response(status_code=204)
        live = run if isinstance(run, ActiveRun) else None  # a finished run has no readers to count
        return self.sse(self.ui_frames(run.run_id, self.mapper_for(run), live), UI_STREAM_HEADERS)

    async def chat_stop(self, request: Request) -> Response:
        """``POST /api/chat/{id}/stop``: cancel the chat's run (or dismiss its pending interrupt)."""
        chat_id = request.path_params["chat_id"]
        if not valid_id(chat_id):
            return self.error(422, f"Invalid chat id {chat_id!r}.")
        dismissed = await resolved(self.service.dismiss_pending(chat_id))
        if dismissed is not None:
            return JSONResponse({"stopped": True, "dismissed": dismissed})
        run = await self.service.stop(chat_id)
        if run is None:
            return JSONResponse({"stopped": False, "reason": "no run is going in this chat"})
        body = stop_answer(run)
        return JSONResponse(body, status_code=200 if body["stopped"] else 202)

    async def run_events(self, request: Request) -> Response:
        """``GET /api/runs/{run_id}/events``: the run's events as SSE, resumable from ``Last-Event-ID``."""
        run_id = request.path_params["run_id"]
        if not valid_id(run_id):
            return self.error(422, f"Invalid run id {run_id!r}: {_RUN_ID_RULE}.")
        view = request.query_params.get("view", "verbose")
        if view not in ("verbose", "user"):
            return self.error(422, f"view must be 'verbose' or 'user', got {view!r}.")
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        after = -1
        if raw is not None and raw != "":
            try:
                after = int(raw)
            except ValueError:
                return self.error(400, f"Last-Event-ID / after must be an event seq (a whole number), got {raw!r}.")
        res = await self.store.read(run_id, after, limit=1)
        if res is None:
            return self.error(404, f"No run {run_id!r} here (unknown, or its events expired).")
        if res.finished and not res.events:
            return Response(status_code=204)  # nothing more will come: stops EventSource reconnecting
        keep = _user_view(run_id) if view == "user" else _everything
        return self.sse(self.event_frames(run_id, after, keep), _EVENT_HEADERS)

    async def run_ui(self, request: Request) -> Response:
        """``GET /api/runs/{run_id}/ui``: any run as a verbose UI message stream (the page's read-only view)."""
        run_id = request.path_params["run_id"]
        if not valid_id(run_id):
            return self.error(422, f"Invalid run id {run_id!r}: {_RUN_ID_RULE}.")
        first = await self.store.read(run_id, -1, limit=1)
        if first is None:
            return self.error(404, f"No run {run_id!r} here (unknown, or its events expired).")
        meta: dict[str, t.Any] = {"runId": run_id, "readOnly": True}
        if first.events and first.events[0].get("kind") == "start":
            shown = _input_text(first.events[0].get("inputs"))
            if shown is not None:
                meta["input"] = self.errors.message(shown)
        traced = self.trace_id(run_id)
        if traced:
            meta["traceId"] = traced
        mapper = UIMessageMapper(
            run_id,
            message_id=run_id,
            verbose=True,
            stream_text=True,
            metadata=lambda: meta,
            describe_error=self.errors.describe,
        )
        return self.sse(self.ui_frames(run_id, mapper, None), UI_STREAM_HEADERS)

    async def index(self, request: Request) -> Response:
        """``GET /``: the built-in page."""
        html = resources.files("streamtap.web").joinpath("static/index.html").read_text("utf-8")
        html = html.replace("{{trace_url}}", _escape(self.trace_url or ""))
        return HTMLResponse(html.replace("{{title}}", _escape(self.title)))

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: the OpenAPI 3.1 description of these endpoints."""
        return JSONResponse(openapi_document(page=self.page, token=self.token_required))

    async def not_routed(self, request: Request, exc: Exception) -> Response:
        """The router's own 404/405 answers, in the app's JSON error shape."""
        status = int(getattr(exc, "status_code", 500))
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see GET /openapi.json."
        else:
            message = f"No endpoint at {request.url.path}; the endpoints are listed at GET /openapi.json."
        return self.error(status, message)


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep="\n")


def _trace_id(span_context: t.Any) -> str | None:
    if span_context is None or not getattr(span_context, "is_valid", False):
        return None
    return format(span_context.trace_id, "032x")


def _everything(ev: t.Mapping[str, t.Any]) -> bool:
    return True


def _user_view(run_id: str) -> t.Callable[[t.Mapping[str, t.Any]], bool]:
    """``?view=user``: the root's start and end, text chunks, custom events."""

    def keep(ev: t.Mapping[str, t.Any]) -> bool:
        kind = ev["kind"]
        if kind == "chunk":
            return bool(ev.get("channel") == "text")
        if kind in ("start", "end"):
            return bool(ev["run"]["run_id"] == run_id)
        return bool(kind == "custom")

    return keep


def _input_text(inputs: t.Any) -> str | None:
    """What a root run was asked, as text for the read-only view (a string, or a dict's one string value)."""
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, dict):
        texts = [v for v in inputs.values() if isinstance(v, str)]
        if len(texts) == 1:
            return texts[0]
    if (
        isinstance(inputs, list)
        and inputs
        and isinstance(inputs[-1], dict)
        and isinstance(inputs[-1].get("content"), str)
    ):
        return str(inputs[-1]["content"])
    return None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _gap(run_id: str, first: int, last: int) -> dict[str, t.Any]:
    """The marker the events endpoint sends where the store no longer holds events ``first`` .. ``last``."""
    return {
        "kind": "gap",
        "run_id": run_id,
        "from_seq": first,
        "to_seq": last,
        "reason": "these events are no longer kept (the store's max_events_per_run); the stream goes on after them",
    }
