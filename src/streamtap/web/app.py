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
    ``Last-Event-ID`` (or ``?after=``) resumes with no gap and no duplicate
    (events the store no longer keeps are reported as one ``{"kind": "gap", ...}`` message);
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
import typing as t

from ..module import ModuleBase
from ..redaction import Redactor
from .client_errors import ClientErrors, ErrorDetail, LoggingStore
from .security import RequestGuard, SecurityPolicy, is_loopback
from .service import ChatService, InputBuilder, Resumer
from .store import EventStore, MemoryEventStore
from .ui_stream import UI_STREAM_HEADERS

if t.TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

    from .endpoints import SpanSource

__all__ = ["UI_STREAM_HEADERS", "create_app", "is_loopback"]


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
        token: when set, every request needs ``Authorization: Bearer <token>`` except the page
            (``/``), ``/static/...`` and ``/openapi.json``, wherever the app is mounted.
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
            ``run_of``, ``pending``, ``has_pending``, ``dismiss_pending`` and ``stop`` may be coroutines
            (the endpoints take either through :func:`~streamtap.web.service.resolved`).

    Returns:
        A Starlette application; ``app.state.chat`` is its :class:`ChatService`,
        ``app.state.security`` its :class:`~streamtap.web.security.SecurityPolicy`.

    Raises:
        MissingDependencyError: when the ``web`` extra is not installed.
        UsageError: an allowed host or origin that is not one, an unknown ``error_detail``,
            or a ``trace_url`` that is not an http(s) URL with ``{trace_id}`` in it.
    """
    try:  # every part of the extra, checked here even when the endpoints module was imported before
        import sse_starlette  # noqa: F401
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException

        from .endpoints import Endpoints
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError("streamtap.web", "web") from exc

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
    endpoints = Endpoints(
        service,
        errors,
        tracing=tracing,
        trace_url=trace_template,
        max_body_bytes=max_body_bytes,
        max_messages=max_messages,
        keepalive=keepalive,
        send_timeout=send_timeout,
        page=page,
        title=title,
        token_required=token is not None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> t.AsyncIterator[None]:
        yield
        await service.aclose()

    app = Starlette(
        routes=endpoints.routes(agui_path),
        lifespan=lifespan,
        exception_handlers={HTTPException: endpoints.not_routed},
    )
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
