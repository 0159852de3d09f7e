"""Cross-site requests and DNS rebinding against the web app (real uvicorn, real httpx).

A page on another site can send a CORS "simple request" (``text/plain``, no
preflight) to a loopback server, and a DNS-rebinding page reaches it under
another ``Host``. Neither may start a run or read one.
"""

from __future__ import annotations

import json
import typing as t

import pytest

from streamtap import ModuleBase
from streamtap.exceptions import UsageError
from streamtap.web import create_app

from .helpers import Talker, chat_body, read_sse

EVIL = "http://evil.example"


class Counting(ModuleBase):
    """Answers 'ok' and counts its calls: proof that a refused request ran nothing."""

    kind = "agent"
    blocking = False

    def __init__(self) -> None:
        self.calls = 0

    async def forward(self, text: str) -> t.AsyncIterator[str]:
        self.calls += 1
        yield "ok"


def _body(chat_id: str = "c1") -> bytes:
    return json.dumps(chat_body("hi", chat_id=chat_id)).encode()


async def test_text_plain_post_from_another_site_is_refused_and_runs_nothing(serve, client):
    module = Counting()
    srv = serve(module)
    r = await client.post(
        srv.url + "/api/chat", content=_body(), headers={"content-type": "text/plain", "origin": EVIL}
    )
    assert r.status_code == 403, r.text
    assert EVIL in r.json()["error"] and "allowed_origins" in r.json()["error"]
    r = await client.post(srv.url + "/api/chat", content=_body(), headers={"content-type": "text/plain"})
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["error"] and "text/plain" in r.json()["error"]
    r = await client.post(
        srv.url + "/api/chat", content=_body(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415
    r = await client.post(
        srv.url + "/api/chat", content=_body(), headers={"content-type": "application/json", "origin": EVIL}
    )
    assert r.status_code == 403
    r = await client.post(srv.url + "/api/chat/c1/stop", headers={"origin": EVIL})
    assert r.status_code == 403
    assert module.calls == 0
    assert srv.server.config.app.state.chat.conversations == {}


async def test_referer_is_checked_when_there_is_no_origin(serve, client):
    module = Counting()
    srv = serve(module)
    r = await client.post(
        srv.url + "/api/chat", content=_body(), headers={"content-type": "application/json", "referer": EVIL + "/page"}
    )
    assert r.status_code == 403
    r = await client.post(
        srv.url + "/api/chat", content=_body(), headers={"content-type": "application/json", "origin": "null"}
    )
    assert r.status_code == 403, "an opaque origin (sandboxed frame, file:) is not the app's"
    assert module.calls == 0


async def test_same_origin_configured_origins_and_originless_clients_are_served(serve, client):
    module = Counting()
    srv = serve(module, allowed_origins=["https://app.example.com"])
    for i, headers in enumerate(
        [
            {"origin": srv.url},  # the page served by this app
            {"referer": srv.url + "/"},
            {"origin": "https://app.example.com"},  # configured
            {},  # not a browser (curl, the ai package in Node): no Origin, nothing to forge
        ]
    ):
        res = await read_sse(
            client, "POST", srv.url + "/api/chat", json=chat_body("hi", chat_id=f"ok{i}"), headers=headers
        )
        assert res.status == 200 and res.done, (headers, res)
    assert module.calls == 4
    r = await client.post(
        srv.url + "/api/chat",
        json=chat_body("hi", chat_id="x"),
        headers={"origin": "https://app.example.com.evil.example"},
    )
    assert r.status_code == 403


async def test_rebinding_host_is_refused_by_trusted_host(serve, client):
    srv = serve(Talker())
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("hi", chat_id="h1"))
    run_id = res.parts[0]["messageMetadata"]["runId"]
    port = srv.port
    for path in (f"/api/runs/{run_id}/events", "/api/chat/h1/stream", "/"):
        r = await client.get(srv.url + path, headers={"host": f"rebind.evil.example:{port}"})
        assert r.status_code == 400, (path, r.status_code)
        assert "rebind.evil.example" in r.json()["error"] and "allowed_hosts" in r.json()["error"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        r = await client.get(srv.url + f"/api/runs/{run_id}/events", headers={"host": host})
        assert r.status_code in (200, 204), (host, r.status_code)


async def test_allowed_hosts_are_served(serve, client):
    srv = serve(Talker(), allowed_hosts=["chat.internal", "*.example.org"])
    for host in ("chat.internal", "a.example.org", f"chat.internal:{srv.port}"):
        r = await client.get(srv.url + "/api/chat/c/stream", headers={"host": host})
        assert r.status_code == 204, host
    r = await client.get(srv.url + "/api/chat/c/stream", headers={"host": "example.org.evil.example"})
    assert r.status_code == 400


async def test_app_origin_follows_the_allowed_host(serve, client):
    """A page served under an allowed host name posts with that origin: it is the app's own."""
    module = Counting()
    srv = serve(module, allowed_hosts=["chat.internal"])
    headers = {"host": f"chat.internal:{srv.port}", "origin": f"http://chat.internal:{srv.port}"}
    res = await read_sse(client, "POST", srv.url + "/api/chat", json=chat_body("hi"), headers=headers)
    assert res.status == 200 and res.done
    assert module.calls == 1


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("allowed_origins", ["app.example.com"], "scheme"),
        ("allowed_origins", ["https://app.example.com/path"], "path"),
        ("allowed_origins", "https://app.example.com", "list"),
        ("allowed_hosts", ["evil*.example"], "*.example.com"),
        ("allowed_hosts", ["http://x"], "host name"),
        ("error_detail", "everything", "'short' or 'full'"),
    ],
)
def test_bad_security_options_are_clear_usage_errors(option, value, needle):
    with pytest.raises(UsageError) as info:
        create_app(Talker(), **{option: value})
    assert needle in str(info.value) and option in str(info.value)


def test_serve_and_demo_take_the_options():
    import inspect

    from streamtap import demo
    from streamtap.web.server import serve

    params = inspect.signature(serve).parameters
    assert "allowed_origins" in params and "allowed_hosts" in params
    args = demo._parser().parse_args(
        ["--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example", "--allowed-host", "chat.lan"]
    )
    assert args.allowed_origin == ["https://a.example", "https://b.example"] and args.allowed_host == ["chat.lan"]


async def test_serving_options_extend_the_apps_policy(client):
    from streamtap.web.security import allow_serving
    from streamtap.web.server import BackgroundServer, serve

    app = create_app(Counting())
    allow_serving(app, "127.0.0.1", allowed_hosts=["chat.lan"], allowed_origins=["https://ui.example"])
    with BackgroundServer(app) as srv:
        r = await client.get(srv.url + "/api/chat/c/stream", headers={"host": "chat.lan"})
        assert r.status_code == 204
        r = await client.post(srv.url + "/api/chat/c/stop", headers={"origin": "https://ui.example"})
        assert r.status_code == 200
    lan = create_app(Counting(), token="t0k3n-for-lan")
    allow_serving(lan, "192.168.1.5")
    assert "192.168.1.5" in lan.state.security.hosts  # the bound address is a Host the server answers to
    allow_serving(lan, "0.0.0.0")
    assert "0.0.0.0" not in lan.state.security.hosts
    with pytest.raises(UsageError, match="create_app"):
        serve(lambda scope, receive, send: None, allowed_hosts=["x.lan"])  # not a streamtap app: say so, do not ignore


# -- the access token: every route but the page, wherever the app is served ----------------

TOKEN = "s3cret-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def _agui_body(thread: str) -> dict[str, t.Any]:
    return {
        "threadId": thread,
        "runId": "r1",
        "state": None,
        "messages": [{"id": "m1", "role": "user", "content": "hi"}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


def _assert_token_refusal(r: t.Any) -> None:
    assert r.status_code == 401, (r.request.url, r.status_code, r.text)
    assert "Authorization: Bearer" in r.json()["error"]


async def test_token_guards_an_agui_path_outside_api(serve, client):
    module = Counting()
    srv = serve(module, token=TOKEN, agui_path="/agui")
    _assert_token_refusal(await client.post(srv.url + "/agui", json=_agui_body("t1")))
    _assert_token_refusal(await client.post(srv.url + "/agui/t1/stop"))
    _assert_token_refusal(
        await client.post(srv.url + "/agui", json=_agui_body("t1"), headers={"authorization": "Bearer nope"})
    )
    _assert_token_refusal(await client.get(srv.url + "/not-a-route"))  # unknown paths too: secure by default
    assert module.calls == 0
    assert srv.server.config.app.state.chat.conversations == {}
    r = await client.post(srv.url + "/agui", json=_agui_body("t1"), headers=BEARER)
    assert r.status_code == 200 and "RUN_FINISHED" in r.text, r.text
    assert (await client.post(srv.url + "/agui/t1/stop", headers=BEARER)).status_code == 200
    assert module.calls == 1
    for path in ("/", "/static/app.js", "/openapi.json"):  # the page loads without the token, then sends it
        assert (await client.get(srv.url + path)).status_code == 200, path


async def _check_prefixed(client: t.Any, module: Counting, api: str, page: str) -> None:
    """``api`` and ``page``: the URLs of the app's ``/api`` and of its page as a client reaches them."""
    _assert_token_refusal(await client.post(api + "/chat", json=chat_body("hi", chat_id="p1")))
    _assert_token_refusal(await client.post(api + "/chat/p1/stop"))
    _assert_token_refusal(await client.get(api + "/chat/p1/stream"))
    assert module.calls == 0
    res = await read_sse(client, "POST", api + "/chat", json=chat_body("hi", chat_id="p1"), headers=BEARER)
    assert res.status == 200 and res.done, res
    assert module.calls == 1
    for path in ("", "static/app.js", "openapi.json"):
        assert (await client.get(page + path)).status_code == 200, path


async def test_token_is_required_under_a_root_path(client):
    """``uvicorn --root-path /bot`` behind a prefix-stripping proxy: ``scope["path"]`` is ``/bot/api/...``."""
    from streamtap.web.server import BackgroundServer

    module = Counting()
    srv = BackgroundServer(create_app(module, token=TOKEN))
    srv.config.root_path = "/bot"
    with srv:
        await _check_prefixed(client, module, srv.url + "/api", srv.url + "/")


async def test_token_is_required_when_mounted_under_a_prefix(client):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from streamtap.web.server import BackgroundServer

    module = Counting()
    inner = create_app(module, token=TOKEN)
    outer = Starlette(routes=[Mount("/bot", app=inner)])
    outer.state.chat = inner.state.chat
    with BackgroundServer(outer) as srv:
        await _check_prefixed(client, module, srv.url + "/bot/api", srv.url + "/bot/")
