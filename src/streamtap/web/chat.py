"""The chat request body of the AI SDK (``id``, ``messages``, ``trigger``), validated.

Validation errors carry an HTTP status and a message that says what is wrong
and how to fix it; the endpoints send them as ``{"error": message}``.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

__all__ = ["BadRequest", "ChatRequest", "parse_chat_request"]

_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,128}")  # used with fullmatch: "$" would accept a trailing newline
_ID_RULE = "1-128 characters of letters, digits, '_', '-', '.', ':'"
_ROLES = ("system", "user", "assistant")
_TRIGGERS = ("submit-message", "regenerate-message")


class BadRequest(Exception):
    """A request the app refuses: ``status`` (400, 413, 422...) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def valid_id(value: t.Any) -> bool:
    """Whether ``value`` is an acceptable id -- chat, run, message or interrupt (1-128 of ``A-Z a-z 0-9 _ - . :``)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """One ``POST /api/chat`` body.

    Attributes:
        chat_id: the conversation id (``id``).
        messages: the UI messages (``{id, role, parts}``), oldest first.
        trigger: ``submit-message`` or ``regenerate-message``.
        message_id: the ``messageId`` the client asked for, if any.
        body: the whole body, including extra fields a front end sends
            (``useChat``'s ``body`` option): the built-in page sends
            ``verbose``, ``stream`` and ``resume``.
    """

    chat_id: str
    messages: list[dict[str, t.Any]]
    trigger: str
    message_id: str | None
    body: dict[str, t.Any]

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (its ``text`` parts joined)."""
        for msg in reversed(self.messages):
            if msg.get("role") == "user":
                return message_text(msg)
        return ""

    def history(self) -> list[dict[str, str]]:
        """The conversation as ``[{"role", "content"}]`` (text parts only), for chat models."""
        return [{"role": m["role"], "content": message_text(m)} for m in self.messages]


def message_text(msg: t.Mapping[str, t.Any]) -> str:
    """The joined ``text`` parts of a UI message (or its legacy ``content`` string), as valid Unicode.

    A lone surrogate (``"\\ud800"`` is valid JSON, but no model API can take it
    in UTF-8) becomes U+FFFD; a surrogate pair written as two escapes becomes its character.
    """
    parts = msg.get("parts")
    if isinstance(parts, list):
        text = "".join(
            p.get("text", "")
            for p in parts
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    else:
        content = msg.get("content")
        text = content if isinstance(content, str) else ""
    if _SURROGATE.search(text) is not None:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_chat_request(body: t.Any, *, max_messages: int) -> ChatRequest:
    """Check a decoded JSON body and return the request.

    Raises:
        BadRequest: 422 naming the field that is wrong and what it must be.
    """
    if not isinstance(body, dict):
        raise BadRequest(
            422, f"The body must be a JSON object with 'id', 'messages' and 'trigger', not {type(body).__name__}."
        )
    chat_id = body.get("id")
    if not valid_id(chat_id):
        raise BadRequest(422, f"'id' must be the chat id: {_ID_RULE}; got {_shown(chat_id)}.")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest(
            422, f"'messages' must be a list of UI messages ({{id, role, parts}}), got {type(messages).__name__}."
        )
    if len(messages) > max_messages:
        raise BadRequest(
            413,
            f"Too many messages: {len(messages)} > max_messages={max_messages}. Send only recent messages "
            "(useChat's prepareSendMessagesRequest) or raise max_messages in create_app().",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequest(422, f"messages[{i}] must be an object {{id, role, parts}}, got {type(msg).__name__}.")
        if "id" in msg and not (isinstance(msg["id"], str) and len(msg["id"]) <= 1024):
            raise BadRequest(
                422, f"messages[{i}].id must be a string (at most 1024 characters) when given, got {_shown(msg['id'])}."
            )
        if msg.get("role") not in _ROLES:
            raise BadRequest(422, f"messages[{i}].role must be one of {list(_ROLES)}, got {msg.get('role')!r}.")
        parts = msg.get("parts")
        if parts is not None and not (
            isinstance(parts, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in parts)
        ):
            raise BadRequest(422, f"messages[{i}].parts must be a list of parts, each an object with a string 'type'.")
        if parts is None and not isinstance(msg.get("content"), str):
            raise BadRequest(
                422, f'messages[{i}] needs \'parts\' (a list of parts like {{"type": "text", "text": "..."}}).'
            )
    trigger = body.get("trigger", "submit-message")
    if trigger not in _TRIGGERS:
        raise BadRequest(422, f"'trigger' must be one of {list(_TRIGGERS)}, got {trigger!r}.")
    for key in ("verbose", "stream"):
        if key in body and not isinstance(body[key], bool):
            raise BadRequest(422, f"'{key}' must be true or false when given, got {body[key]!r}.")
    message_id = body.get("messageId")
    if message_id is not None and not valid_id(message_id):
        raise BadRequest(422, f"'messageId' must be a message id ({_ID_RULE}) when given, got {_shown(message_id)}.")
    answers = body.get("resume")
    if isinstance(answers, dict) and set(answers) == {"answers"} and isinstance(answers["answers"], dict):
        for iid in answers["answers"]:
            if not valid_id(iid):
                raise BadRequest(422, f"'resume.answers' keys must be interrupt ids ({_ID_RULE}), got {_shown(iid)}.")
    return ChatRequest(str(chat_id), messages, trigger, message_id, body)


def _shown(value: t.Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error message must not echo a megabyte)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"
