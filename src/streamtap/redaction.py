"""Redaction of secrets in anything streamtap writes to traces and logs.

API keys, bearer tokens, ``Authorization`` headers and the like are replaced
with ``[REDACTED]`` before a value reaches a span, a span event or a log line.
This runs on every path, whether or not message content is captured: error
messages, exception stack traces and module attributes can carry secrets too.

Two mechanisms:

* **Patterns** over strings: the built-in :data:`DEFAULT_PATTERNS` plus any
  the user configures (a string or a compiled :class:`re.Pattern`; the whole
  match is replaced).
  The credential after a name like ``Authorization`` / ``api_key`` /
  ``password`` is replaced whatever its length, scheme (``Bearer``,
  ``Basic``, ``Token``) or quoting (``b'...'`` reprs, ``(name, value)``
  header lists, ``%20`` in query strings); ``Bearer``/``Basic`` followed by a
  credential is replaced even without the header name, unless the next word
  is plain English ("the bearer of", "Bearer token required").
* **Keys** in mappings: the value of any key named like a credential
  (``authorization``, ``api_key``, ``x-api-key``, ``password``, ``cookie``...)
  is replaced whole, whatever it looks like.
"""

from __future__ import annotations

import re
import typing as t

from .exceptions import UsageError

__all__ = ["DEFAULT_PATTERNS", "REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
"""What a secret is replaced with."""

_PLAIN_WORDS = (
    "of|token|tokens|auth|authentication|authorization|scheme|schemes|header|headers|credential|credentials"
    "|is|are|was|be|the|a|an|and|or|in|to|for|with|on|off|only|not|required|missing|invalid"
)

DEFAULT_PATTERNS: tuple[re.Pattern[str], ...] = (
    # "Authorization: Bearer abc", "api_key=abc", '"x-api-key": "abc"', "{'authorization': b'Token abc'}",
    # "(b'authorization', b'Bearer abc')" (a header list) -> keep the name, drop the value, however short
    re.compile(
        r"(?i)((?:proxy-)?authorization|x-api-key|api[-_]?key|api[-_]?token|access[-_]?token|refresh[-_]?token"
        r"|client[-_]?secret|secret[-_]?key|password|passwd)"
        r"""(["']?\s*(?:[:=]|,(?=\s*b?["']))\s*(?:b(?=["']))?["']?)(?:(?:bearer|basic|token)(?:\s+|%20|\+))?"""
        r"""([^\s"',;&}]+)"""
    ),
    # a scheme and its credential without the header name ("Illegal header value b'Bearer abc'"), any length;
    # plain English after the word ("the bearer of", "Bearer token required") is not a credential
    re.compile(rf"(?i)\b(?:bearer|basic)\s+(?!(?:{_PLAIN_WORDS})\b)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI, Anthropic, DeepSeek... keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z\-_]{30,}"),  # Google API key
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
)
"""Secrets recognised in any string."""

_SENSITIVE_KEY = re.compile(
    r"(?i)^(?:(?:proxy-)?authorization|x-api-key|api[-_]?key|api[-_]?token|access[-_]?token|refresh[-_]?token"
    r"|client[-_]?secret|secret|secret[-_]?key|password|passwd|cookie|set-cookie)$"
)


def _sub(match: re.Match[str]) -> str:
    # The first pattern keeps the key and separator (groups 1 and 2).
    if match.re is DEFAULT_PATTERNS[0]:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"
    return REDACTED


class Redactor:
    """Replaces secrets in strings and nested structures with ``[REDACTED]``.

    Args:
        patterns: extra patterns (strings or compiled) whose whole match is a
            secret, added to :data:`DEFAULT_PATTERNS`.

    Raises:
        UsageError: a pattern that is not a string or not a valid regular
            expression (the message names it).

    Example::

        Redactor([r"acct-\\d{6}"])("key sk-abcdefgh1234 for acct-123456")
        # 'key [REDACTED] for [REDACTED]'
    """

    __slots__ = ("_patterns",)

    def __init__(self, patterns: t.Iterable[str | re.Pattern[str]] = ()) -> None:
        extra: list[re.Pattern[str]] = []
        for p in patterns:
            if isinstance(p, re.Pattern):
                extra.append(p)
                continue
            if not isinstance(p, str):
                msg = f"A redaction pattern must be a string or a compiled re.Pattern, not {p!r}."
                raise UsageError(msg)
            try:
                extra.append(re.compile(p))
            except re.error as exc:
                msg = f"The redaction pattern {p!r} is not a valid regular expression ({exc}); fix or escape it."
                raise UsageError(msg) from None
        self._patterns = DEFAULT_PATTERNS + tuple(extra)

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret replaced."""
        for pattern in self._patterns:
            if pattern.search(text) is not None:
                text = pattern.sub(_sub, text)
        return text

    @staticmethod
    def is_sensitive_key(key: str) -> bool:
        """Whether a mapping key names a credential (``authorization``, ``api_key``, ``password``...)."""
        return _SENSITIVE_KEY.match(key) is not None

    def scrub(self, value: t.Any, _depth: int = 0) -> t.Any:
        """Return a copy of a JSON-like ``value`` with secrets replaced.

        Strings are redacted by pattern; in mappings, the value of a key named
        like a credential is replaced whole. Other values pass through.
        """
        if isinstance(value, str):
            return self(value)
        if _depth > 32:
            return value
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and _SENSITIVE_KEY.match(k) else self.scrub(v, _depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.scrub(v, _depth + 1) for v in value]
        return value
