"""``LLMError`` never carries the upstream's secrets: a 401 body that echoes the API key, bearer values, internal URLs.

The short message (``str()``, ``args``, the End's error) says what failed
without the key, the bearer value, the internal URL the body names or the
model server's URL; the redacted detail (``LLMError.detail``) keeps the rest
for server logs and spans.
"""

from __future__ import annotations

import string
import typing as t

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtap.llm.errors import LLMError
from streamtap.redaction import REDACTED
from streamtap.testing import capture_events

from .helpers import KEY, PROMPT, chat_for, ends
from .misbehaving import INTERNAL_URL, Misbehaving


def everything_said(error: LLMError, events: t.Any) -> list[str]:
    """Every string a client, log or span could be shown from the error."""
    end = ends(events)["llm"]
    assert end.error is not None
    said = [str(error), repr(error), *map(str, error.args), end.error.message]
    cause = error.__cause__
    while cause is not None:
        said += [str(cause), repr(cause), repr(getattr(cause, "body", None))]
        cause = cause.__cause__
    return said


KEYS = st.text(string.ascii_letters + string.digits + "-_.", min_size=12, max_size=60).filter(
    lambda k: sum(c.isdigit() for c in k) >= 3 and sum(c.isalpha() for c in k) >= 3
)
"""Keys of any shape; long and mixed enough never to be a piece of the error's own prose."""


def fail_401(srv: Misbehaving, key: str) -> tuple[LLMError, t.Any]:
    llm = chat_for(srv, "401", api_key=key)
    with capture_events() as events:
        try:
            llm(PROMPT)
        except LLMError as exc:
            return exc, events
    raise AssertionError("the 401 fault did not raise")


def test_a_401_that_echoes_the_key_keeps_it_out_of_the_error(misbehaving: Misbehaving) -> None:
    error, events = fail_401(misbehaving, KEY)
    assert error.reason == "auth" and error.status_code == 401
    for text in everything_said(error, events):
        assert KEY not in text and KEY[:12] not in text
    short = [str(error), *map(str, error.args), ends(events)["llm"].error.message]  # what a client may be shown
    for text in short:
        assert INTERNAL_URL not in text and "10.20.30.40" not in text
    message = str(error)
    assert misbehaving.base_url not in message and "127.0.0.1" not in message  # the model URL is internal too
    assert "API key" in message and "OPENAI_API_KEY" in message  # still says what to fix
    detail = error.detail
    assert detail["base_url"] == misbehaving.base_url and detail["status_code"] == 401
    assert detail["model"] == "fault-401" and detail["reason"] == "auth"
    assert REDACTED in detail["upstream"] and KEY not in str(detail)
    assert INTERNAL_URL in detail["upstream"]  # the server log may know where keys are checked


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS)
def test_no_key_of_any_shape_survives(misbehaving: Misbehaving, key: str) -> None:
    """Keys the built-in patterns would not recognise (no ``sk-``) are still removed: the module knows its own."""
    error, events = fail_401(misbehaving, key)
    for text in everything_said(error, events):
        assert key not in text
    assert key not in repr(error.detail)


def test_credentials_in_the_base_url_stay_out_of_the_detail(misbehaving: Misbehaving) -> None:
    url = misbehaving.base_url.replace("http://", "http://user:hunter2-password@") + "?api-key=querysecret123"
    llm = chat_for(misbehaving, "500")
    llm.base_url = url  # as a user would configure it (the client is made on first use)
    with capture_events():
        try:
            llm(PROMPT)
        except LLMError as exc:
            error = exc
    for text in (str(error), repr(error.detail), str(error.base_url)):
        assert "hunter2" not in text and "querysecret123" not in text
