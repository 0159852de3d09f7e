"""Redaction of secrets: patterns, credential keys, user patterns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamtap
from streamtap.redaction import REDACTED, Redactor

redact = Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-abcdefgh12345678", f"key {REDACTED}"),
        ("Authorization: Bearer abc.def.ghi", f"Authorization: {REDACTED}"),
        ('{"api_key": "hunter2hunter2"}', f'{{"api_key": "{REDACTED}"}}'),
        ("x-api-key=abcd1234", f"x-api-key={REDACTED}"),
        ("aws AKIAABCDEFGHIJKLMNOP done", f"aws {REDACTED} done"),
        ("password: swordfish", f"password: {REDACTED}"),
        ("nothing secret here, max_tokens=64", "nothing secret here, max_tokens=64"),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    """Known secret shapes are replaced, the rest of the text is kept."""
    assert redact(text) == expected


def test_credential_keys_in_structures() -> None:
    """The value of a key named like a credential is replaced whole, at any depth."""
    data = {"headers": {"Authorization": "anything", "Accept": "json"}, "items": [{"password": 1}], "model": "m"}
    assert redact.scrub(data) == {"headers": {"Authorization": REDACTED, "Accept": "json"}, "items": [{"password": REDACTED}], "model": "m"}


def test_user_patterns_and_errors() -> None:
    """Configured patterns are added; invalid ones are refused naming the pattern."""
    assert Redactor([r"acct-\d{6}"])("acct-123456 and sk-abcdefgh12345") == f"{REDACTED} and {REDACTED}"
    with pytest.raises(streamtap.UsageError, match=r"'\['"):
        Redactor(["["])
    with pytest.raises(streamtap.UsageError, match="string or a compiled"):
        Redactor([42])  # type: ignore[list-item]


@settings(max_examples=50, deadline=None)
@given(
    before=st.text(max_size=40),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=48),
    after=st.text(max_size=40),
)
def test_an_embedded_key_never_survives(before: str, key: str, after: str) -> None:
    """Property: whatever surrounds an sk- key, it is gone after redaction."""
    secret = f"sk-{key}"
    assert secret not in redact(f"{before} {secret} {after}")
