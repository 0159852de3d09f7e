"""AG-UI requests: a ``RunAgentInput`` body checked and turned into a chat request, and the ``ag_ui.core`` import."""

from __future__ import annotations

import dataclasses
import typing as t

from .chat import BadRequest, ChatRequest, valid_id

__all__ = ["RunInput", "ag_ui_core", "parse_run_input"]


def ag_ui_core() -> t.Any:
    """The ``ag_ui.core`` module, or a :class:`~streamtap.exceptions.MissingDependencyError` naming the ``agui`` extra."""
    try:
        from ag_ui import core
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError("The AG-UI endpoint (streamtap.web.agui)", "agui") from exc
    return core


@dataclasses.dataclass(frozen=True)
class RunInput:
    """A checked ``RunAgentInput``: the chat request it becomes and what the AG-UI stream needs.

    Attributes:
        thread_id: ``threadId`` (the conversation).
        run_id: ``runId`` (echoed in ``RUN_STARTED`` / ``RUN_FINISHED``).
        chat: the :class:`~streamtap.web.chat.ChatRequest` the run answers.
        messages: the request's messages as sent (JSON).
        resume: the ``resume`` entries (``{"interruptId", "status", "payload"}``).
    """

    thread_id: str
    run_id: str
    chat: ChatRequest
    messages: list[dict[str, t.Any]]
    resume: list[dict[str, t.Any]]


def parse_run_input(body: t.Any, *, max_messages: int) -> RunInput:
    """Check an AG-UI ``RunAgentInput`` body and turn it into a chat request.

    ``forwardedProps.verbose`` and ``forwardedProps.stream`` (booleans) work
    like the AI SDK body's ``verbose`` / ``stream``.

    Raises:
        BadRequest: 422 naming the field that is wrong and what it must be; 413 for too many messages.
    """
    core = ag_ui_core()
    if not isinstance(body, dict):
        raise BadRequest(
            422,
            f"The body must be an AG-UI RunAgentInput object (threadId, runId, messages), not {type(body).__name__}.",
        )
    for key in ("threadId", "runId"):
        if not valid_id(body.get(key)):
            shown = repr(body.get(key))[:100]
            raise BadRequest(
                422, f"'{key}' must be 1-128 characters of letters, digits, '_', '-', '.', ':'; got {shown}."
            )
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise BadRequest(
            413,
            f"Too many messages: {len(messages)} > max_messages={max_messages}. Send only recent messages or raise max_messages.",
        )
    from pydantic import ValidationError

    try:
        parsed = core.RunAgentInput.model_validate(body)
    except ValidationError as exc:  # say which field, not the whole dump
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) + f": {first.get('msg')}"
        raise BadRequest(422, f"The body is not a valid AG-UI RunAgentInput ({where}). See docs.ag-ui.com.") from None
    forwarded = parsed.forwarded_props if isinstance(parsed.forwarded_props, dict) else {}
    extra: dict[str, t.Any] = {}
    for key in ("verbose", "stream"):
        if key in forwarded:
            if not isinstance(forwarded[key], bool):
                raise BadRequest(
                    422, f"'forwardedProps.{key}' must be true or false when given, got {forwarded[key]!r}."
                )
            extra[key] = forwarded[key]
    ui_messages = []
    for m in parsed.messages:
        role = {"developer": "system"}.get(m.role, m.role)
        if role not in ("system", "user", "assistant"):
            continue  # tool, reasoning and activity messages carry no user text
        ui_messages.append(
            {"id": m.id, "role": role, "parts": [{"type": "text", "text": _content_text(getattr(m, "content", None))}]}
        )
    resume = [r.model_dump(by_alias=True) for r in (parsed.resume or [])]
    for i, r in enumerate(resume):
        if not valid_id(r["interruptId"]):
            shown = repr(r["interruptId"])[:100]
            raise BadRequest(
                422,
                f"'resume[{i}].interruptId' must be an interrupt id (1-128 characters of letters, digits, "
                f"'_', '-', '.', ':'), got {shown}.",
            )
    resolved = [r for r in resume if r["status"] == "resolved"]
    if resolved:
        # Keyed by id, even for one: resuming checks each id is pending (UnknownInterruptError otherwise).
        extra["resume"] = {"answers": {r["interruptId"]: r.get("payload") for r in resolved}}
    chat_body = {"id": parsed.thread_id, "messages": ui_messages, "trigger": "submit-message", **extra}
    chat = ChatRequest(parsed.thread_id, ui_messages, "submit-message", None, chat_body)
    raw = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    return RunInput(parsed.thread_id, parsed.run_id, chat, raw, resume)


def _content_text(content: t.Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(p, "text", "") or "" for p in content if getattr(p, "type", None) == "text")
    return ""
