"""Errors and retries of model requests: which failures retry, and the :class:`~streamtap.llm.errors.LLMError` a failure becomes (secrets redacted)."""

from __future__ import annotations

import re
import threading
import typing as t
import urllib.parse

from ..context import RunContext
from ..redaction import Redactor
from ._accumulate import _Accumulator
from ._request import _import_openai
from .budget import Budget, is_retryable_status, retry_after
from .errors import LLMError


def _errors() -> tuple[type[BaseException], ...]:
    """What a model request or stream raises when the server or the network fails."""
    return (_import_openai().OpenAIError, ValueError, OSError)


def _retry_delay(exc: BaseException, budget: Budget) -> float | None:
    """Seconds to wait before retrying a failed request, or ``None`` to give up (see :class:`Budget`)."""
    openai = _import_openai()
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    should = headers.get("x-should-retry") if headers is not None else None
    if should in ("true", "false"):  # the server's own word, as the openai client honours it
        retryable = should == "true"
    elif isinstance(exc, openai.APIStatusError):
        retryable = is_retryable_status(exc.status_code)
    else:
        retryable = isinstance(exc, openai.APIConnectionError)  # timeouts included: the budget decides
    return budget.retry_delay(retryable=retryable, server_wait=retry_after(headers))


def _wait(ctx: RunContext, delay: float) -> None:
    """Sleep ``delay`` seconds between attempts; a cancel wakes it at once (and raises :class:`RunCancelled`)."""
    woken = threading.Event()
    remove = ctx.on_cancel(woken.set)
    try:
        woken.wait(delay)
    finally:
        remove()
    ctx.raise_if_cancelled()


_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>)\]]+", re.IGNORECASE)


_QUOTE_LIMIT = 240


def _seconds(value: float) -> str:
    """``3`` -> ``"3.0"``, ``0.25`` -> ``"0.25"``: a duration as people write it."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.3g}"


def _redactor(api_key: str | None) -> Redactor:
    """The project's redactor, plus the module's own API key (whatever its shape: a server may echo it)."""
    own = [re.escape(api_key)] if api_key and len(api_key) >= 8 else []
    return Redactor(own)


def _safe_url(url: str, redact: Redactor) -> str:
    """``url`` without user info (``user:password@``), secrets in its query redacted."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return redact(urllib.parse.urlunsplit(parts))


def _scrub_exception(exc: BaseException, redact: Redactor) -> None:
    """Redact the messages and bodies along an exception's chain, in place (they may echo the key)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        cur.args = tuple(redact(a) if isinstance(a, str) else a for a in cur.args)
        for name in ("message", "body"):
            value = getattr(cur, name, None)
            if isinstance(value, str | dict | list):
                try:
                    setattr(cur, name, redact.scrub(value))
                except AttributeError:  # pragma: no cover - a read-only attribute: leave it
                    pass
        cur = cur.__cause__ or cur.__context__


class _Failure:
    """What is known about a failed call; makes its :class:`LLMError` (short safe message, redacted detail)."""

    def __init__(
        self, base_url: str, model: str, budget: Budget, acc: _Accumulator | None, api_key: str | None
    ) -> None:
        self.redact = _redactor(api_key)
        self.base_url = _safe_url(base_url, self.redact)
        self.model = model
        self.budget = budget
        self.acc = acc
        self.chunks = acc.chunks if acc is not None else 0

    def quote(self, text: str) -> str:
        """Foreign text (a server's error, a network error) fit for the short message: redacted, no URLs, short."""
        text = " ".join(_URL.sub("[URL]", self.redact(text)).split())
        return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 1] + "\u2026"

    def error(
        self, message: str, reason: str, *, exc: BaseException | None = None, status_code: int | None = None
    ) -> LLMError:
        budget, acc = self.budget, self.acc
        detail: dict[str, t.Any] = {
            "attempts": budget.attempts,
            "elapsed_s": round(budget.elapsed(), 3),
            "timeout_s": budget.timeout,
            "chunks": self.chunks,
        }
        if exc is not None:
            _scrub_exception(exc, self.redact)
            detail["cause"] = self.redact(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
            if status_code is not None:
                detail["upstream"] = self.redact(_server_message(exc))
        partial = acc.reply() if acc is not None and (acc.text or acc.calls or acc.reasoning) else None
        return LLMError(
            message,
            base_url=self.base_url,
            model=self.model,
            status_code=status_code,
            reason=reason,
            partial=partial,
            detail=detail,
        )


def _describe(exc: BaseException, failure: _Failure) -> LLMError:
    """An :class:`LLMError` saying what failed and what to check -- no secret, no URL (those go to ``detail``)."""
    openai = _import_openai()
    model, budget, chunks = failure.model, failure.budget, failure.chunks
    spent = budget.summary()
    started = failure.acc is not None  # the response had started: this is a broken stream
    if isinstance(exc, openai.APITimeoutError):
        if started:
            msg = (
                f"The model server stopped sending after {chunks} chunks: nothing arrived for "
                f"{_seconds(budget.attempt_timeout)} s (model {model!r}; {spent}). The answer is incomplete; "
                "check the server's logs, or raise timeout=."
            )
        else:
            msg = (
                f"The model server did not start answering within the {_seconds(budget.timeout)} s timeout "
                f"(model {model!r}; {spent}). Check that the server is up and that base_url (OPENAI_BASE_URL) "
                "and model (OPENAI_MODEL) are right, or raise timeout=."
            )
        return failure.error(msg, "timeout", exc=exc)
    if isinstance(exc, openai.APIConnectionError):
        if started:
            msg = (
                f"The connection to the model server was cut after {chunks} stream chunks (model {model!r}): "
                f"{failure.quote(_root(exc))}. The answer is incomplete; check the server's logs and any proxy "
                "between you and it."
            )
            return failure.error(msg, "stream_cut", exc=exc)
        msg = (
            f"Could not connect to the model server ({failure.quote(_root(exc))}; {spent}). Check that base_url "
            "(OPENAI_BASE_URL) is right and the server is running and reachable."
        )
        return failure.error(msg, "connection", exc=exc)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = _status_reason(openai, exc, status)
        msg = _STATUS_HINTS[reason].format(status=status, detail=failure.quote(_server_message(exc)), model=model)
        if budget.declined_wait is not None:
            msg += (
                f" It asked to retry after {_seconds(budget.declined_wait)} s, past the {_seconds(budget.timeout)} s "
                "timeout, so the call failed at once."
            )
        return failure.error(f"{msg} ({spent}.)", reason, exc=exc, status_code=status)
    if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
        msg = (
            f"The model server sent a malformed stream chunk after {chunks} good ones (model {model!r}): "
            f"{failure.quote(str(exc))}. The answer is incomplete; check that base_url (OPENAI_BASE_URL) points to "
            "an OpenAI-compatible API."
        )
        return failure.error(msg, "malformed_stream", exc=exc)
    if isinstance(exc, openai.APIError):
        msg = (
            f"The model server reported an error mid-stream for model {model!r}: {failure.quote(str(exc))}. "
            "Check the server's logs."
        )
        return failure.error(msg, "status", exc=exc)
    msg = (
        f"The call to the model server failed (model {model!r}): {type(exc).__name__}: {failure.quote(str(exc))}. "
        "Check base_url (OPENAI_BASE_URL) and the network."
    )
    return failure.error(msg, "connection", exc=exc)


_STATUS_HINTS = {
    "auth": (
        "The model server rejected the API key (HTTP {status}: {detail}). Check api_key / OPENAI_API_KEY, and that "
        "the key belongs to this server."
    ),
    "not_found": (
        "The model server answered 404 for model {model!r} ({detail}). Check model / OPENAI_MODEL, and that "
        "base_url ends with the API root (usually '/v1')."
    ),
    "rate_limit": (
        "The model server rate-limited the request for model {model!r} (HTTP 429: {detail}). Retry later, lower "
        "the concurrency, or raise max_retries and timeout."
    ),
    "server": (
        "The model server failed with HTTP {status} for model {model!r} ({detail}). The server had an error: "
        "check its logs, retry, or check that model (OPENAI_MODEL) is served there."
    ),
    "bad_request": (
        "The model server refused the request for model {model!r} (HTTP {status}: {detail}). Check the model name "
        "and the request parameters."
    ),
}
"""``LLMError.reason`` of an HTTP status error -> its message template."""


def _status_reason(openai: t.Any, exc: BaseException, status: int | None) -> str:
    """The ``LLMError.reason`` of an ``openai.APIStatusError``."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth"
    if isinstance(exc, openai.NotFoundError):
        return "not_found"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit"
    if status is not None and status >= 500:
        return "server"
    return "bad_request"


def _server_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, dict) else None
        if isinstance(message, str):
            return message
        message = body.get("message")
        if isinstance(message, str):
            return message
    return str(getattr(exc, "message", exc))


def _root(exc: BaseException) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause) or type(cause).__name__
    return text if cause is exc else f"{type(cause).__name__}: {text}"
