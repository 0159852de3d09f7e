"""The Starlette app: AI SDK chat endpoints, resumable event streams, stop, and the built-in page.

Endpoints (all JSON errors are ``{"error": "<what is wrong and what to do>"}``):

``POST /api/chat``
    AI SDK body (``id``, ``messages``, ``trigger``) in; a UI message stream
    v1 out (SSE ``data:`` frames, ``data: [DONE]`` last). A new
    ``submit-message`` in a chat whose run nobody reads any more (the
    client aborted its fetch) cancels that run and starts the new one; while
    a client reads it, ``409``.
``GET /api/chat/{id}/stream``
    ``204`` when the conversation has no run going; otherwise the whole
    answer so far (full replay), then the live rest. ``?run=<run id>``
    replays that run of the conversation even after it finished (while the
    store keeps its events): a page reopened later gets the whole answer.
``POST /api/chat/{id}/stop``
    Cancel the conversation's run server-side; the model call's HTTP stream closes.
``GET /api/runs/{run_id}/events``
    Plain SSE of streamtap events (``Event.to_dict()``), ``id:`` = ``seq``;
    ``Last-Event-ID`` (or ``?after=``) resumes with no gap and no duplicate;
    ``?view=user`` keeps only user-facing events (root start/end, text, custom).
``GET /api/runs/{run_id}/ui``
    The run as a UI message stream v1 (verbose; full replay, then live):
    the page's read-only ``/?run=<run id>`` view reads it, for chat runs
    and for runs published by ``streamtap replay``.
``POST /api/agui`` (``agui_path``), ``POST /api/agui/{threadId}/stop``
    AG-UI 1.0: ``RunAgentInput`` in, AG-UI events out (see :mod:`streamtap.web.agui`).
``GET /openapi.json``
    An OpenAPI 3.1 description of these endpoints.
``GET /``
    The built-in page (``/static/...`` its files).

Every request first passes :class:`~streamtap.web.security.RequestGuard`
(``Host``, token, cross-site ``Origin``, JSON content type); every error
message sent passes :class:`~streamtap.web.client_errors.ClientErrors`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import typing as t
from importlib import resources

from ..module import ModuleBase
from ..redaction import Redactor
from .chat import BadRequest, ChatRequest, parse_chat_request, valid_id
from .client_errors import ClientErrors, ErrorDetail, LoggingStore
from .security import RequestGuard, SecurityPolicy, is_loopback
from .service import ActiveRun, ChatService, InputBuilder, Resumer
from .store import EventStore, MemoryEventStore
from .ui_stream import UIMessageMapper, encode_json, encode_part

if t.TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["UI_STREAM_HEADERS", "create_app", "is_loopback"]

UI_STREAM_HEADERS = {
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
"""The headers of a UI message stream response (as the AI SDK's server helper sets them)."""

_DONE = b"data: [DONE]\n\n"


class SpanSource(t.Protocol):
    """What the app needs of a tracing subscriber: a run's span context (``None`` when not traced)."""

    def span_context(self, run_id: str) -> t.Any:
        """The span context of a live or recently ended run."""


def _trace_id(span_context: t.Any) -> str | None:
    if span_context is None or not getattr(span_context, "is_valid", False):
        return None
    return format(span_context.trace_id, "032x")


def create_app(
    module_or_factory: ModuleBase | t.Callable[[], ModuleBase],
    *,
    store: EventStore | None = None,
    to_input: InputBuilder | None = None,
    resume: Resumer | None = None,
    token: str | None = None,
    cancel_on_disconnect: bool = False,
    detach_timeout: float | None = None,
    max_body_bytes: int = 1_000_000,
    max_messages: int = 500,
    keepalive: float = 15.0,
    send_timeout: float | None = 30.0,
    page: bool = True,
    title: str = "streamtap",
    allowed_hosts: t.Iterable[str] | None = None,
    allowed_origins: t.Iterable[str] | None = None,
    error_detail: ErrorDetail = "short",
    redact: t.Iterable[str | t.Any] = (),
    tracing: SpanSource | None = None,
    trace_url: str | None = None,
    agui_path: str | None = "/api/agui",
    chat_service: t.Callable[..., ChatService] | None = None,
) -> Starlette:
    """Make the web app serving a module (an agent, a flow, any ``ModuleBase``) per conversation.

    Args:
        module_or_factory: a module shared by all conversations, or a
            function returning a new one per conversation.
        store: the per-run event buffer (default: :class:`MemoryEventStore`).
        to_input: builds the module's input from a
            :class:`~streamtap.web.chat.ChatRequest` (default: the last user
            message's text; ``lambda r: r.history()`` passes the whole chat).
        resume: resumes an interrupted run with the user's answer
            (default: :mod:`streamtap.interrupts`).
        token: when set, every ``/api`` request needs ``Authorization: Bearer <token>``.
            Without a token only loopback clients are served.
        cancel_on_disconnect: cancel a run (reason ``client gone``) when its last
            reader disconnects before the end (default: keep it going, buffered,
            so a reload resumes).
        detach_timeout: seconds a run may go on with nobody reading it before it is
            cancelled (reason ``client gone``); ``None`` (default): never. A new
            message in a chat whose run nobody reads cancels that run at once
            (reason ``superseded by a new message``) either way. Anything but a
            positive number of seconds is refused (``UsageError`` naming it).
        max_body_bytes: largest request body accepted (413 beyond).
        max_messages: most messages in one chat request (413 beyond).
        keepalive: seconds between ``: keep-alive`` comments on idle streams.
        send_timeout: seconds a client may stall one write before it is dropped.
        page: serve the built-in page at ``/``.
        title: the page's title.
        allowed_hosts: ``Host`` names served besides ``localhost``,
            ``127.0.0.1`` and ``[::1]`` (``*.example.com`` wildcards; ``*``
            turns the DNS-rebinding check off). Others get 400.
        allowed_origins: origins (``https://app.example.com``) whose pages may
            send state-changing requests besides the app's own; others get 403.
        error_detail: what clients are told of a failure: ``"short"`` (what
            failed, the run id, what to do) or ``"full"`` (``Type: message``).
            Both are redacted; the full detail always goes to the server log.
        redact: extra redaction patterns for messages sent to clients (default:
            the tracing subscriber's redactor when ``tracing`` is given, else the built-in patterns).
        tracing: the :class:`~streamtap.tracing.TracingSubscriber` tracing the runs;
            the UI stream's message metadata then carries each run's ``traceId``
            (without it, only a ``traceparent`` sent with the request gives one).
        trace_url: a URL template linking each answer on the page to its trace, with
            ``{trace_id}`` (and optionally ``{run_id}``) in it, e.g. Jaeger's
            ``http://localhost:16686/trace/{trace_id}`` (see the page's docs for Phoenix).
        agui_path: where the AG-UI endpoint is mounted (``None``: not at all);
            without the ``agui`` extra it answers 501 naming the extra.
        chat_service: makes the service behind the chat endpoints, called like
            ``ChatService(module_or_factory, store, to_input=..., resume=...)``
            (default :class:`~streamtap.web.service.ChatService`: runs in this
            process). ``streamtap_redis.RedisChatService.factory(client)`` shares
            chats through Redis and sends the runs to workers; its ``active``,
            ``run_of``, ``has_pending``, ``dismiss_pending`` and ``stop`` may be coroutines.

    Returns:
        A Starlette application; ``app.state.chat`` is its :class:`ChatService`,
        ``app.state.security`` its :class:`~streamtap.web.security.SecurityPolicy`.

    Raises:
        MissingDependencyError: when the ``web`` extra is not installed.
        UsageError: an allowed host or origin that is not one, an unknown ``error_detail``,
            or a ``trace_url`` that is not an http(s) URL with ``{trace_id}`` in it.
    """
    try:
        from sse_starlette import EventSourceResponse, ServerSentEvent
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.responses import HTMLResponse, JSONResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError("streamtap.web", "web") from exc

    from .. import propagation
    from ..tracing import conversation
    from .openapi import openapi_document

    trace_template = _check_trace_url(trace_url)
    policy = SecurityPolicy(token=token, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    redactor = Redactor(redact) if redact or tracing is None else getattr(tracing, "redact", None) or Redactor()
    errors = ClientErrors(error_detail, redactor)
    service = (chat_service or ChatService)(
        module_or_factory,
        LoggingStore(store if store is not None else MemoryEventStore(), errors),
        to_input=to_input,
        resume=resume,
        cancel_on_disconnect=cancel_on_disconnect,
        detach_timeout=detach_timeout,
    )
    store_ = service.store

    def _error(status: int, message: str) -> Response:
        return JSONResponse({"error": errors.message(message)}, status_code=status)

    def ping() -> ServerSentEvent:
        return ServerSentEvent(comment="keep-alive", sep="\n")

    def sse(content: t.AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
        return EventSourceResponse(
            content,
            headers=headers,
            ping=keepalive,
            ping_message_factory=ping,
            sep="\n",
            send_timeout=send_timeout,
        )

    # -- the UI message stream of one run ------------------------------------

    async def ui_frames(run_id: str, mapper: UIMessageMapper, live: ActiveRun | None) -> t.AsyncIterator[bytes]:
        # ``live``: the run still going that this client now reads (counted: see ChatService.reader_joined)
        complete = False
        begun = False
        if live is not None:
            service.reader_joined(live)

        def frames(parts: list[t.Any]) -> bytes:
            # ``start`` goes out with the first event, when the run's span (its trace id) exists.
            nonlocal begun
            if not begun:
                begun = True
                parts = mapper.begin() + parts
            return b"".join(map(encode_part, parts))

        try:
            yield b": stream-open\n\n"
            after = -1
            while True:
                res = await store_.read(run_id, after)
                if res is None:
                    yield frames(mapper.close("the run's events expired; it can no longer be replayed"))
                    break
                if res.events:
                    after = res.events[-1]["seq"]
                    out = [p for ev in res.events for p in mapper.feed(ev)]
                    if out or not begun:
                        yield frames(out)
                    if mapper.done:
                        break
                    continue
                if res.finished:
                    yield frames(mapper.close())
                    break
                await store_.wait(run_id, after, 3600.0)
            yield _DONE
            complete = True
        finally:
            if live is not None:
                service.reader_left(live, complete)

    def mapper_for(run: t.Any, trace_id: str | None = None) -> UIMessageMapper:
        def metadata() -> dict[str, t.Any]:
            out = {"runId": run.run_id, "chatId": run.chat_id}
            traced = _trace_id(tracing.span_context(run.run_id)) if tracing is not None else None
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
            describe_error=errors.describe,
        )

    # -- endpoints --------------------------------------------------------------

    async def read_json(request: Request) -> t.Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise BadRequest(413, f"The request body is {length} bytes; the limit is max_body_bytes={max_body_bytes}.")
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > max_body_bytes:
                raise BadRequest(413, f"The request body is over max_body_bytes={max_body_bytes} bytes.")
        if not body:
            raise BadRequest(400, "The request body is empty; send a JSON object with 'id', 'messages' and 'trigger'.")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(
                400, f"The request body is not valid JSON ({exc}). Send the AI SDK chat body as JSON."
            ) from None
        except RecursionError:
            raise BadRequest(
                400, "The request body is JSON nested too deeply to read; send the AI SDK chat body."
            ) from None

    async def chat(request: Request) -> Response:
        try:
            req: ChatRequest = parse_chat_request(await read_json(request), max_messages=max_messages)
            answering = "resume" in req.body or bool(await _resolved(service.has_pending(req.chat_id)))
            if not answering and not req.last_user_text:
                raise BadRequest(
                    422, "The last user message has no text; put the question in a {'type': 'text', 'text': ...} part."
                )
            carrier = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
            with propagation.continue_trace(carrier) as caller, conversation(req.chat_id):
                run = await service.start(
                    req
                )  # the run's task copies this context: its root span continues the caller's trace
        except BadRequest as exc:
            return _error(exc.status, exc.message)
        return sse(ui_frames(run.run_id, mapper_for(run, _trace_id(caller)), run), UI_STREAM_HEADERS)

    async def chat_stream(request: Request) -> Response:
        chat_id = request.path_params["chat_id"]
        if not valid_id(chat_id):
            return _error(422, f"Invalid chat id {chat_id!r}.")
        wanted = request.query_params.get("run")
        if wanted is not None and not valid_id(wanted):
            return _error(422, f"Invalid run id {wanted!r}: 1-128 characters of letters, digits, '_', '-', '.', ':'.")
        if wanted is not None:  # a given run of this chat, finished or not, while its events are kept
            run = await _resolved(service.run_of(chat_id, wanted))
            if run is None or await store_.read(run.run_id, limit=0) is None:
                return _error(404, f"Chat {chat_id!r} has no run {wanted!r} any more (unknown, or its events expired).")
        else:
            run = await _resolved(service.active(chat_id))
            if run is None:
                return Response(status_code=204)
        live = run if isinstance(run, ActiveRun) else None  # a finished run has no readers to count
        return sse(ui_frames(run.run_id, mapper_for(run), live), UI_STREAM_HEADERS)

    async def chat_stop(request: Request) -> Response:
        chat_id = request.path_params["chat_id"]
        if not valid_id(chat_id):
            return _error(422, f"Invalid chat id {chat_id!r}.")
        dismissed = await _resolved(service.dismiss_pending(chat_id))
        if dismissed is not None:
            return JSONResponse({"stopped": True, "dismissed": dismissed})
        run = await service.stop(chat_id)
        if run is None:
            return JSONResponse({"stopped": False, "reason": "no run is going in this chat"})
        return JSONResponse({"stopped": True, "runId": run.run_id, "status": run.status})

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not valid_id(run_id):
            return _error(422, f"Invalid run id {run_id!r}: 1-128 characters of letters, digits, '_', '-', '.', ':'.")
        view = request.query_params.get("view", "verbose")
        if view not in ("verbose", "user"):
            return _error(422, f"view must be 'verbose' or 'user', got {view!r}.")
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        after = -1
        if raw is not None and raw != "":
            try:
                after = int(raw)
            except ValueError:
                return _error(400, f"Last-Event-ID / after must be an event seq (a whole number), got {raw!r}.")
        res = await store_.read(run_id, after, limit=1)
        if res is None:
            return _error(404, f"No run {run_id!r} here (unknown, or its events expired).")
        if res.finished and not res.events:
            return Response(status_code=204)  # nothing more will come: stops EventSource reconnecting
        user = view == "user"

        def keep(ev: t.Mapping[str, t.Any]) -> bool:
            if not user:
                return True
            kind = ev["kind"]
            if kind == "chunk":
                return bool(ev.get("channel") == "text")
            if kind in ("start", "end"):
                return bool(ev["run"]["run_id"] == run_id)
            return bool(kind == "custom")

        async def frames(after: int) -> t.AsyncIterator[bytes]:
            reading = service.runs.get(run_id)  # a run still going counts this client as its reader
            if reading is not None:
                service.reader_joined(reading)
            complete = False
            try:
                async for frame in read_events(after):
                    yield frame
                complete = True
            finally:
                if reading is not None:
                    service.reader_left(reading, complete)

        async def read_events(after: int) -> t.AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            while True:
                res = await store_.read(run_id, after)
                if res is None:
                    return
                if res.events:
                    out = []
                    for ev in res.events:
                        if keep(ev):
                            data = encode_json(errors.event(ev, run_id))
                            out.append(b"id: %d\ndata: %s\n\n" % (ev["seq"], data))
                    after = res.events[-1]["seq"]
                    if out:
                        yield b"".join(out)
                    continue
                if res.finished:
                    return
                await store_.wait(run_id, after, 3600.0)

        return sse(frames(after), {"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def run_ui(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not valid_id(run_id):
            return _error(422, f"Invalid run id {run_id!r}: 1-128 characters of letters, digits, '_', '-', '.', ':'.")
        first = await store_.read(run_id, -1, limit=1)
        if first is None:
            return _error(404, f"No run {run_id!r} here (unknown, or its events expired).")
        meta: dict[str, t.Any] = {"runId": run_id, "readOnly": True}
        if first.events and first.events[0].get("kind") == "start":
            shown = _input_text(first.events[0].get("inputs"))
            if shown is not None:
                meta["input"] = errors.message(shown)
        traced = _trace_id(tracing.span_context(run_id)) if tracing is not None else None
        if traced:
            meta["traceId"] = traced
        mapper = UIMessageMapper(
            run_id,
            message_id=run_id,
            verbose=True,
            stream_text=True,
            metadata=lambda: meta,
            describe_error=errors.describe,
        )
        return sse(ui_frames(run_id, mapper, None), UI_STREAM_HEADERS)

    async def index(request: Request) -> Response:
        html = resources.files("streamtap.web").joinpath("static/index.html").read_text("utf-8")
        html = html.replace("{{trace_url}}", _escape(trace_template or ""))
        return HTMLResponse(html.replace("{{title}}", _escape(title)))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(page=page, token=token is not None))

    routes: list[Route | Mount] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/chat/{chat_id}/stream", chat_stream, methods=["GET"]),
        Route("/api/chat/{chat_id}/stop", chat_stop, methods=["POST"]),
        Route("/api/runs/{run_id}/events", run_events, methods=["GET"]),
        Route("/api/runs/{run_id}/ui", run_ui, methods=["GET"]),
    ]
    if agui_path is not None:
        from .agui import AGUIOptions, agui_routes

        def run_trace_id(run_id: str) -> str | None:
            return _trace_id(tracing.span_context(run_id)) if tracing is not None else None

        options = AGUIOptions(path=agui_path)
        routes += agui_routes(
            service,
            errors,
            options=options,
            read_json=read_json,
            sse=sse,
            max_messages=max_messages,
            trace_id=run_trace_id,
        )
    if page:
        static_dir = str(resources.files("streamtap.web").joinpath("static"))
        routes += [
            Route("/", index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=static_dir), name="static"),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> t.AsyncIterator[None]:
        yield
        await service.aclose()

    async def not_routed(request: Request, exc: Exception) -> Response:
        # The router's own 404/405 answers, in the app's JSON error shape.
        status = int(getattr(exc, "status_code", 500))
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see GET /openapi.json."
        else:
            message = f"No endpoint at {request.url.path}; the endpoints are listed at GET /openapi.json."
        return _error(status, message)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_routed})
    app.state.chat = service
    app.state.security = policy
    app.add_middleware(RequestGuard, policy=policy)
    return app


def _check_trace_url(template: str | None) -> str | None:
    """The trace URL template, checked: an http(s) URL with ``{trace_id}`` in it."""
    if template is None or template == "":
        return None
    if (
        not isinstance(template, str)
        or not template.startswith(("http://", "https://"))
        or "{trace_id}" not in template
    ):
        from ..exceptions import UsageError

        msg = (
            f"trace_url must be an http(s) URL template containing {{trace_id}}, got {template!r}; "
            "for Jaeger: 'http://localhost:16686/trace/{trace_id}'."
        )
        raise UsageError(msg)
    return template


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


async def _resolved(value: t.Any) -> t.Any:
    """``value``, awaited when a service method returned a coroutine (a service kept in Redis)."""
    return await value if inspect.isawaitable(value) else value


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
