"""The error a model call raises when the server or the network fails."""

from __future__ import annotations

import types
import typing as t

from ..exceptions import StreamtapError

__all__ = ["LLMError"]


class LLMError(StreamtapError):
    """A model call failed: the server answered with an error, the network failed, or the stream broke.

    The message is short and safe to show: what failed, the attempts and time
    spent, and what to check (key, model, timeout). It never carries a
    secret or an address: the upstream's error text is passed through the
    redactor (:class:`~streamtap.redaction.Redactor`, plus the module's own
    API key) with URLs removed, and the model server's URL is left out. The
    full story is in :attr:`detail`, redacted too, for server logs and spans.
    The original exception (from the ``openai`` client) is kept as
    ``__cause__``, with its message and body redacted the same way.

    Attributes:
        base_url: the endpoint that was called (credentials removed).
        model: the requested model.
        status_code: the HTTP status, when the server answered with one.
        reason: a short machine-readable reason: ``connection``, ``timeout``,
            ``auth``, ``not_found``, ``rate_limit``, ``server``, ``bad_request``,
            ``malformed_stream``, ``stream_cut`` or ``status``.
        partial: the part of the answer that streamed before the failure (a
            :class:`~streamtap.llm.openai.ChatReply`), or ``None``. The End of
            the failed run carries it as its ``output``.
        detail: (property) a read-only mapping for server logs and spans: ``reason``,
            ``model``, ``base_url``, ``status_code``, ``attempts``,
            ``elapsed_s``, ``timeout_s``, ``chunks``, ``upstream`` (the
            server's error text, redacted, URLs kept) and ``cause`` (the
            underlying exception, redacted). Keys without a value are left out.
    """

    def __init__(
        self,
        message: str,
        *,
        base_url: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        reason: str = "status",
        partial: t.Any = None,
        detail: t.Mapping[str, t.Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.model = model
        self.status_code = status_code
        self.reason = reason
        self.partial = partial
        self.streamtap_output = partial  # what the End of the failed run carries as output
        facts = {"reason": reason, "model": model, "base_url": base_url, "status_code": status_code, **(detail or {})}
        self._detail = {k: v for k, v in facts.items() if v is not None}

    @property
    def detail(self) -> t.Mapping[str, t.Any]:
        """The redacted detail for server logs and spans (read-only; see the class docstring)."""
        return types.MappingProxyType(self._detail)
