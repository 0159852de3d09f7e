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


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Token abc123def456", "abc123def456"),
        ("Authorization: Token abc...", "abc..."),
        ("authorization=abc", "abc"),
        ("GET /v1?authorization=Bearer%20abc HTTP/1.1", "abc"),
        ("Authorization: Bearer abc", "abc"),
        ("authorization:bearer xy", "xy"),
        ("Illegal header value b'Bearer abc'", "abc"),  # h11's error names no header: the scheme alone marks it
        ("bearer x9", "x9"),
        ("{'Authorization': b'Bearer abc'}", "abc"),  # a bytes value in a repr
        ("[(b'authorization', b'Bearer abc'), (b'accept', b'*/*')]", "abc"),  # an httpcore header list
        ("headers=[('Authorization', 'Basic dTpw')]", "dTpw"),
    ],
)
def test_authorization_values_of_any_length_and_scheme(text: str, secret: str) -> None:
    """Short values, the Token scheme, query strings, bytes and header lists: the credential never survives."""
    out = redact(text)
    assert secret not in out and REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "the bearer of bad news",
        "a Bearer token is required",
        "send the bearer token in the header",
        "Basic auth is off",
    ],
)
def test_prose_about_schemes_is_kept(text: str) -> None:
    """Words after 'bearer' / 'basic' that are plain English are not taken for credentials."""
    assert redact(text) == text


def test_credential_keys_in_structures() -> None:
    """The value of a key named like a credential is replaced whole, at any depth."""
    data = {"headers": {"Authorization": "anything", "Accept": "json"}, "items": [{"password": 1}], "model": "m"}
    assert redact.scrub(data) == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "items": [{"password": REDACTED}],
        "model": "m",
    }


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


@settings(max_examples=80, deadline=None)
@given(
    key=st.sampled_from(["Authorization", "authorization", "Proxy-Authorization", "x-api-key", "api_key", "password"]),
    form=st.sampled_from(
        [(": ", ""), ("=", ""), (":", ""), ('": "', '"'), ("': '", "'"), ("': b'", "'"), ("', b'", "'"), ('", "', '"')]
    ),
    scheme=st.sampled_from(["", "Bearer ", "bearer ", "Token ", "Basic "]),
    value=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=", min_size=1, max_size=40
    ),
)
def test_property_a_credential_value_is_replaced_whole(
    key: str, form: tuple[str, str], scheme: str, value: str
) -> None:
    """Property: after a credential's name, its value (any length, any scheme, any quoting) becomes [REDACTED]."""
    sep, close = form
    assert redact(f"{key}{sep}{scheme}{value}{close} and more") == f"{key}{sep}{REDACTED}{close} and more"
