"""Fuzzing the web endpoints against the OpenAPI description the app publishes at ``/openapi.json``.

Hypothesis strategies (schemathesis does not read streaming bodies) send
random bodies, content types, origins, ids and resume positions to a real
uvicorn server. Every answer must be one the description lists for that
operation, never a 500, and every SSE body must parse as frames: a UI
message stream ends with ``data: [DONE]`` after a valid part sequence, an
event stream carries JSON events whose ``id:`` is their ``seq``.
"""

from __future__ import annotations

import json
import typing as t
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .helpers import Agent, Failing, check_ui_stream
from .test_encoding import ANY_TEXT, JSON, sse_frames, strict_json

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

ID = st.one_of(st.from_regex(r"[A-Za-z0-9_\-.:]{1,20}", fullmatch=True), ANY_TEXT.filter(lambda s: 0 < len(s) < 140))
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": ANY_TEXT}),
    st.dictionaries(st.sampled_from(["type", "text", "url", "data"]), JSON, max_size=3),
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "user", "assistant", "system", "tool", 3])},
    optional={
        "id": st.one_of(ID, JSON),
        "parts": st.one_of(st.lists(PART, max_size=3), JSON),
        "content": st.one_of(ANY_TEXT, JSON),
    },
)
CHAT_BODY = st.fixed_dictionaries(
    {"id": st.one_of(ID, JSON), "messages": st.one_of(st.lists(MESSAGE, min_size=1, max_size=3), JSON)},
    optional={
        "trigger": st.sampled_from(["submit-message", "regenerate-message", "resume-stream", ""]),
        "messageId": st.one_of(ID, JSON),
        "verbose": st.one_of(st.booleans(), JSON),
        "stream": st.one_of(st.booleans(), JSON),
        "resume": JSON,
    },
)
GOOD_ID = st.from_regex(r"[A-Za-z0-9_\-.:]{1,20}", fullmatch=True)
GOOD_CHAT = st.fixed_dictionaries(
    {
        "id": GOOD_ID,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.just("user"),
                    "id": GOOD_ID,
                    "parts": st.lists(
                        st.fixed_dictionaries({"type": st.just("text"), "text": ANY_TEXT.filter(str.strip)}),
                        min_size=1,
                        max_size=2,
                    ),
                }
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "trigger": st.sampled_from(["submit-message", "regenerate-message"]),
        "messageId": GOOD_ID,
        "verbose": st.booleans(),
        "stream": st.booleans(),
    },
)
CONTENT_TYPE = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        ["application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "", "multipart/form-data; boundary=x"]
    ),
)
IDS_FUZZ = settings(FUZZ, max_examples=40)
ORIGIN = st.one_of(
    st.none(),
    st.none(),
    st.just("SELF"),
    st.sampled_from(["http://evil.example", "null", "https://allowed.example", "garbage"]),
)


@pytest.fixture
def app_url(serve) -> t.Iterator[tuple[str, dict[str, t.Any]]]:
    srv = serve(lambda: Agent(), allowed_origins=["https://allowed.example"], max_messages=5)
    failing = serve(Failing())
    with httpx.Client(timeout=30) as c:
        spec = c.get(srv.url + "/openapi.json").json()
        _, got = _send(
            c,
            "POST",
            srv.url + "/api/chat",
            json={"id": "fz", "messages": [{"role": "user", "parts": [{"type": "text", "text": "weather in Paris"}]}]},
        )
    run_id = strict_json(sse_frames(got)[0]["data"])["messageMetadata"]["runId"]
    yield srv.url, spec, failing.url, run_id


def _documented(spec: dict[str, t.Any], template: str, method: str, status: int) -> None:
    responses = spec["paths"][template][method]["responses"]
    assert str(status) in responses, (
        f"{method.upper()} {template} answered {status}, not in the description {sorted(responses)}"
    )


def _check(spec: dict[str, t.Any], template: str, method: str, r: httpx.Response, body: bytes) -> None:
    event(f"{method.upper()} {template} -> {r.status_code}")
    assert r.status_code != 500, body[:500]
    _documented(spec, template, method, r.status_code)
    ctype = r.headers.get("content-type", "")
    if r.status_code >= 400:
        assert ctype.startswith("application/json") and isinstance(strict_json(body.decode())["error"], str)
    elif ctype.startswith("text/event-stream"):
        frames = sse_frames(body)
        if template.startswith("/api/chat"):
            assert frames and frames[-1] == {"data": "[DONE]"}, frames[-3:]
            check_ui_stream([strict_json(f["data"]) for f in frames[:-1] if "data" in f])
        else:
            for f in frames:
                if "data" in f:
                    assert int(f["id"]) == strict_json(f["data"])["seq"]


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # what a client may send: any bytes, even invalid UTF-8


def _send(
    c: httpx.Client, method: str, url: str, params: dict[str, str] | None = None, **kw: t.Any
) -> tuple[httpx.Response, bytes]:
    if params:
        url += "?" + urlencode({k: _b(v) for k, v in params.items()})
    with c.stream(method, url, **kw) as r:
        return r, r.read()


def test_openapi_describes_the_routes(app_url):
    url, spec, _, _ = app_url
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/api/chat",
        "/api/chat/{chat_id}/stream",
        "/api/chat/{chat_id}/stop",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/ui",
        "/openapi.json",
        "/",
    }
    with httpx.Client(timeout=10) as c:
        assert (
            c.get(url + "/openapi.json", headers={"host": "evil.example"}).status_code == 400
        )  # behind the same guard


@given(body=st.one_of(GOOD_CHAT, GOOD_CHAT, CHAT_BODY, JSON), ctype=CONTENT_TYPE, origin=ORIGIN, raw=st.booleans())
@FUZZ
def test_fuzz_post_chat(app_url, body, ctype, origin, raw):
    url, spec, failing, _ = app_url
    headers = {"content-type": ctype} if ctype else {}
    if origin is not None:
        headers["origin"] = url if origin == "SELF" else origin
    data = json.dumps(body).encode() if raw else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    with httpx.Client(timeout=30) as c:
        for base in (url, failing):
            r, got = _send(c, "POST", base + "/api/chat", content=data, headers=headers)
            _check(spec, "/api/chat", "post", r, got)


@given(
    chat_id=ID,
    run=st.one_of(st.none(), ID),
    after=st.one_of(st.none(), st.integers(-5, 50).map(str), ANY_TEXT),
    view=st.sampled_from([None, "user", "verbose", "x"]),
    origin=ORIGIN,
)
@IDS_FUZZ
def test_fuzz_ids_and_resume_positions(app_url, chat_id, run, after, view, origin):
    url, spec, _, run_id = app_url
    seg = quote(_b(chat_id), safe="")
    headers = {"origin": url if origin == "SELF" else origin} if origin else {}
    with httpx.Client(timeout=30) as c:
        params = {k: v for k, v in (("run", run), ("view", view), ("after", after)) if v is not None}
        for template, method, path, extra in (
            ("/api/chat/{chat_id}/stream", "get", f"/api/chat/{seg}/stream", {"run": run} if run else {}),
            ("/api/chat/{chat_id}/stop", "post", f"/api/chat/{seg}/stop", {}),
            ("/api/runs/{run_id}/events", "get", f"/api/runs/{seg}/events", params),
            ("/api/runs/{run_id}/events", "get", f"/api/runs/{run_id}/events", params),
            ("/api/chat/{chat_id}/stream", "get", "/api/chat/fz/stream", {"run": run_id}),
        ):
            if not seg or seg in (".", ".."):
                continue
            r, got = _send(c, method.upper(), url + path, params=extra, headers=headers if method == "post" else {})
            _check(spec, template, method, r, got)
        if after is not None and after.isascii() and after.isprintable():
            r, got = _send(c, "GET", f"{url}/api/runs/{run_id}/events", headers={"last-event-id": after})
            _check(spec, "/api/runs/{run_id}/events", "get", r, got)


def test_unknown_paths_and_methods_get_json_errors(app_url):
    """Found by the fuzzer: an id of '/' reaches no route, and the router's 404 was plain text."""
    url, _, _, _ = app_url
    with httpx.Client(timeout=10) as c:
        for method, path, status in (
            ("GET", "/api/chat/%2F/stream", 404),
            ("GET", "/nowhere", 404),
            ("DELETE", "/api/chat", 405),
            ("GET", "/static/none.js", 404),
        ):
            r = c.request(method, url + path)
            assert r.status_code == status, (path, r.text)
            assert r.headers["content-type"].startswith("application/json") and isinstance(r.json()["error"], str)
            assert "openapi.json" in r.json()["error"] or path.startswith("/static"), r.text
