"""The error a model call raises when the server or the network fails."""

from __future__ import annotations

from ..exceptions import StreamtapError

__all__ = ["LLMError"]


class LLMError(StreamtapError):
    """A model call failed: the server answered with an error, the network failed, or the stream broke.

    The message says what failed and what to check (URL, key, model). The
    original exception (from the ``openai`` client) is kept as ``__cause__``.

    Attributes:
        base_url: the endpoint that was called.
        model: the requested model.
        status_code: the HTTP status, when the server answered with one.
        reason: a short machine-readable reason: ``connection``, ``timeout``,
            ``auth``, ``not_found``, ``rate_limit``, ``server``, ``bad_request``,
            ``malformed_stream``, ``stream_cut`` or ``status``.
    """

    def __init__(
        self,
        message: str,
        *,
        base_url: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        reason: str = "status",
    ) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.model = model
        self.status_code = status_code
        self.reason = reason
