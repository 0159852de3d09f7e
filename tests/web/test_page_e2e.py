"""The built-in page in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import json
import pathlib
import shutil
import time
import typing as t

import httpx
import pytest

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytest.importorskip("playwright")
pytest.importorskip("openai")
pytestmark = pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test.sh installs it)"
)

ASSISTANT_TEXT = "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); return m ? m.querySelector('.text')?.textContent || '' : ''; }"


@pytest.fixture(scope="module")
def weather() -> t.Iterator[tuple[FakeOpenAI, BackgroundServer]]:
    with FakeOpenAI(token_delay=0.03, reasoning=True) as model:
        srv = BackgroundServer(
            create_app(lambda: weather_agent(base_url=model.base_url), title="streamtap demo")
        ).start()
        yield model, srv
        srv.stop()


@pytest.fixture
def page(browser: t.Any) -> t.Iterator[t.Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def ask(page: t.Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_streams_tokens_then_verbose_shows_tool_calls_and_waterfall(page, weather):
    _model, srv = weather
    page.goto(srv.url + "/")
    assert page.title() == "streamtap demo"
    ask(page, QUERY)
    # Tokens are on the page while the answer is still streaming.
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        " return m && m.classList.contains('streaming') && (m.querySelector('.text')?.textContent || '').length > 0; }",
        timeout=15000,
    )
    partial = page.evaluate(ASSISTANT_TEXT)
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=15000)
    final = page.evaluate(ASSISTANT_TEXT)
    assert final.startswith(partial) and len(final) > len(partial)
    assert "Tokyo is 10 degrees Celsius" in final and "Paris" in final
    # User-facing view: the tool calls are there but hidden.
    tool = page.locator("details.tool").first
    assert page.locator("details.tool").count() == 2 and not tool.is_visible()
    page.click("#opt-verbose")
    assert tool.is_visible()
    assert "get_current_weather" in tool.locator("summary").inner_text()
    tool.locator("summary").click()
    body = tool.inner_text()
    assert "Tokyo" in body and "Result" in body and '"temperature": "10"' in body
    assert page.locator("details.reasoning").first.is_visible()
    # The waterfall: one bar per run (agent, two model calls, two tools) with durations and TTFT.
    rows = page.locator("#waterfall .row")
    assert rows.count() == 5
    labels = rows.all_inner_texts()
    assert sum("get_current_weather" in x for x in labels) == 2 and sum("chat" in x for x in labels) == 2
    assert page.locator("#waterfall .ttft").count() >= 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"))
    # Phone-sized viewport: no sideways scrolling, the composer still reachable.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert page.locator("#input").is_visible()
    page.screenshot(path=str(ARTIFACTS / "web-page-phone.png"))


def test_stop_mid_answer_closes_the_model_stream(page, weather):
    model, srv = weather
    page.goto(srv.url + "/")
    t0 = time.monotonic()
    ask(page, " ".join(f"word{i}" for i in range(400)))
    page.wait_for_function(f"() => ({ASSISTANT_TEXT})().length > 20", timeout=15000)
    assert page.locator("#stop").is_visible()
    page.click("#stop")
    page.wait_for_selector(".msg.assistant .note.stopped", timeout=10000)
    record = model.wait_for_closed(timeout=5, after=t0)
    assert record.closed_early and record.chunks_sent < 400
    assert page.locator("#send").is_visible()
    assert "word399" not in page.evaluate(ASSISTANT_TEXT)


def test_reload_mid_answer_resumes(page, weather):
    _model, srv = weather
    page.goto(srv.url + "/")
    words = " ".join(f"w{i}" for i in range(70))
    ask(page, words)
    page.wait_for_function(f"() => ({ASSISTANT_TEXT})().includes('w5')", timeout=15000)
    page.reload()
    # After the reload the page asks GET /api/chat/{id}/stream and gets the whole answer replayed, then the rest.
    page.wait_for_function(f"() => ({ASSISTANT_TEXT})().includes('w69')", timeout=15000)
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=15000)
    assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.user").count() == 1
    assert page.evaluate(ASSISTANT_TEXT) == f"You said: {words}"
    assert (
        page.inner_text("#status") == ""
    )  # "Resumed the running answer." goes with the answer (test_page_features_e2e.py)


def test_page_closed_mid_answer_shows_the_whole_answer_when_reopened(browser, weather):
    model, srv = weather
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(srv.url + "/")
    words = " ".join(f"z{i}" for i in range(40))
    ask(page, words)
    page.wait_for_function(f"() => ({ASSISTANT_TEXT})().includes('z3')", timeout=15000)
    run_id = page.evaluate("() => JSON.parse(localStorage.getItem('streamtap.chat')).messages.pop().metadata.runId")
    page.close()  # the tab is closed; the run goes on on the server
    record = model.wait_for(lambda r: words in json.dumps(r.body or {}) and r.outcome == "completed", timeout=15)
    assert record.outcome == "completed"
    with httpx.Client(timeout=10) as client:  # wait until the app has finished the run (no active stream)  # noqa: SIM117 - nested blocks show which resource lives inside which
        with client.stream("GET", srv.url + f"/api/runs/{run_id}/events") as r:
            for _ in r.iter_lines():
                pass
    page = ctx.new_page()
    page.goto(srv.url + "/")
    page.wait_for_function(f"() => ({ASSISTANT_TEXT})() === 'You said: {words}'", timeout=15000)
    assert page.locator(".msg.assistant.streaming").count() == 0
    assert page.locator(".msg.assistant .note.error").count() == 0
    ctx.close()


def test_streaming_switch_off_shows_the_answer_whole(page, weather):
    _model, srv = weather
    page.goto(srv.url + "/")
    page.click("#opt-stream")
    assert not page.is_checked("#opt-stream")
    # Record every text length the answer shows while it runs.
    page.evaluate(
        f"() => {{ window.lengths = []; new MutationObserver(() => window.lengths.push(({ASSISTANT_TEXT})().length))"
        ".observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }"
    )
    words = " ".join(f"v{i}" for i in range(30))
    ask(page, words)
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=15000)
    final = page.evaluate(ASSISTANT_TEXT)
    assert final == f"You said: {words}"
    lengths = set(page.evaluate("() => window.lengths"))
    assert lengths <= {0, len(final)}, f"partial text was shown: {sorted(lengths)[:10]}"
    page.reload()  # the choice is remembered
    assert not page.is_checked("#opt-stream")


def test_answer_an_interrupt(browser):
    from streamtap.flows import Flow, Node, interrupt

    class Plan(Node):
        def prep(self, shared):
            return shared["question"]

        def exec(self, q):
            yield f"Planning a trip to {q}. "
            ok = interrupt({"question": f"Book the trip to {q}?"}, schema={"type": "boolean"})
            yield "Booked!" if ok else "Not booked."

    app = create_app(lambda: Flow(Plan(), name="TripFlow"), to_input=lambda r: {"question": r.last_user_text})
    with BackgroundServer(app) as srv:
        ctx = browser.new_context(viewport={"width": 900, "height": 700})
        page = ctx.new_page()
        page.goto(srv.url + "/")
        ask(page, "Paris")
        box = page.locator(".interrupt")
        box.wait_for(timeout=10000)
        assert "Book the trip to Paris?" in box.inner_text()
        page.screenshot(path=str(ARTIFACTS / "web-interrupt.png"))
        box.locator("button", has_text="Approve").click()
        page.wait_for_function(f"() => ({ASSISTANT_TEXT})().includes('Booked!')", timeout=10000)
        assert "Answered: approved" in page.locator(".interrupt").inner_text()
        ctx.close()


def test_a_batch_node_shows_a_progress_bar(browser):
    """A BatchNode's own progress events draw one bar on the page that fills as items finish."""
    import threading

    from streamtap.flows import BatchNode, Flow

    halfway, go = threading.Event(), threading.Event()

    class Summarise(BatchNode):
        def prep(self, shared):
            return list(range(10))

        def exec(self, item):
            if item == 5:  # five done: hold here until the page has shown it
                halfway.set()
                go.wait(20)
            return item

        def post(self, shared, items, results):
            shared["n"] = len(results)

    app = create_app(lambda: Flow(Summarise(), name="Batch"), to_input=lambda r: {})
    with BackgroundServer(app) as srv:
        ctx = browser.new_context(viewport={"width": 900, "height": 700})
        page = ctx.new_page()
        try:
            page.goto(srv.url + "/")
            ask(page, "go")
            assert halfway.wait(15)
            page.wait_for_function(
                "() => { const p = document.querySelector('.msg.assistant .progress progress'); return p && p.value === 5 && p.max === 10; }",
                timeout=10000,
            )
            assert page.locator(".msg.assistant .progress").count() == 1
            go.set()
            page.wait_for_function(
                "() => { const p = document.querySelector('.msg.assistant .progress progress'); return p && p.value === 10; }",
                timeout=10000,
            )
            assert "10/10" in page.locator(".msg.assistant .progress").inner_text()
        finally:
            go.set()
            ctx.close()
