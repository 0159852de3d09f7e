"""The page's features in headless Chromium (Playwright), on desktop and phone viewports, checked through the DOM.

Markdown (and a hostile answer made inert), copy, regenerate, edit, retry,
status lines that clear, one duration per tool, token counts, the phone
layout, dark mode, the trace link and the read-only ``/?run=`` view. The
model is the embedded OpenAI-compatible server over real HTTP; the app runs
in real uvicorn.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import typing as t

import pytest

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import FakeOpenAI
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytest.importorskip("playwright")
pytest.importorskip("openai")
pytestmark = pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test.sh installs it)"
)

VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
}
LAST_ASSISTANT = "[...document.querySelectorAll('.msg.assistant')].pop()"
ANSWER = f"() => {{ const m = {LAST_ASSISTANT}; return m ? m.querySelector('.text')?.textContent || '' : ''; }}"
DONE = ".msg.assistant:not(.streaming)"


@pytest.fixture(scope="module")
def model() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI(token_delay=0.01) as srv:
        yield srv


@pytest.fixture(scope="module")
def weather(model: FakeOpenAI) -> t.Iterator[BackgroundServer]:
    srv = BackgroundServer(create_app(lambda: weather_agent(base_url=model.base_url), title="streamtap demo")).start()
    yield srv
    srv.stop()


def open_page(browser: t.Any, url: str, size: str = "desktop", **options: t.Any) -> tuple[t.Any, t.Any, list[str]]:
    ctx = browser.new_context(**VIEWPORTS[size], **options)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return ctx, page, errors


@pytest.fixture(params=list(VIEWPORTS))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ask(page: t.Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def answered(page: t.Any, count: int = 1) -> str:
    page.wait_for_function(
        f"() => document.querySelectorAll('{DONE}').length >= {count} && !document.querySelector('.msg.assistant.streaming')",
        timeout=15000,
    )
    return str(page.evaluate(ANSWER))


def test_markdown_is_rendered_and_a_hostile_answer_is_inert(browser, weather, size):
    ctx, page, errors = open_page(browser, weather.url + "/", size)
    hostile = (
        "**bold** and `code`\n\n- one\n- two\n\n"
        '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> '
        "[click me](javascript:window.pwned=3) ![pic](http://127.0.0.1:9/tracker.png) [docs](https://example.com/x)"
    )
    ask(page, hostile)
    answered(page)
    text = page.locator(".msg.assistant .text").first
    assert text.locator("strong").inner_text() == "bold"
    assert text.locator("code").inner_text() == "code"
    assert text.locator("li").all_inner_texts() == ["one", "two"]
    # Nothing ran and nothing will: no element from the answer's HTML, no handler, no javascript: URL.
    assert page.evaluate("() => window.pwned") is None
    assert text.locator("img, script, iframe, svg").count() == 0
    assert (
        page.evaluate(
            f"() => [...{LAST_ASSISTANT}.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length"
        )
        == 0
    )
    hrefs = [h or "" for h in text.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")]
    assert not any(h.strip().lower().startswith("javascript:") for h in hrefs)
    assert "https://example.com/x" in hrefs
    # The raw HTML is shown as text; an image is a link, not a fetch; links open apart from the page.
    assert '<img src=x onerror="window.pwned=1">' in text.inner_text()
    assert "http://127.0.0.1:9/tracker.png" in hrefs
    assert set(text.locator("a").evaluate_all("els => els.map(e => e.rel)")) == {"noopener noreferrer nofollow"}
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    ctx.close()
    assert errors == []


def test_copy_regenerate_and_edit_the_last_message(browser, weather, model, size):
    ctx, page, errors = open_page(browser, weather.url + "/", size, permissions=["clipboard-read", "clipboard-write"])
    ask(page, "first *question*")
    assert answered(page) == "You said: first question"
    # Copy puts the answer's markdown on the clipboard.
    page.locator(".msg.assistant button.copy").click()
    page.wait_for_function(
        "() => document.querySelector('.msg.assistant button.copy').textContent === 'Copied'", timeout=5000
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == "You said: first *question*"
    # Regenerate: the answer is asked for again and replaces the old one.
    before = len(model.chat_records())
    page.evaluate(f"() => {{ window.oldAnswer = {LAST_ASSISTANT}; }}")
    page.locator(".msg.assistant button.regenerate").click()
    page.wait_for_function(
        f"() => {{ const m = {LAST_ASSISTANT}; return m && m !== window.oldAnswer && !m.classList.contains('streaming'); }}",
        timeout=15000,
    )
    assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.user").count() == 1
    assert page.evaluate(ANSWER) == "You said: first question"
    assert len(model.chat_records()) == before + 1
    # While an answer streams there is nothing to regenerate or edit.
    ask(page, " ".join(f"s{i}" for i in range(60)))
    page.wait_for_selector(".msg.assistant.streaming", timeout=10000)
    assert page.locator(".msg button.regenerate, .msg button.edit").count() == 0
    answered(page, 2)
    # Edit the last user message: it and its answer are replaced by the edited question's.
    page.locator(".msg.user").last.locator("button.edit").click()
    box = page.locator(".msg.user .edit-text")
    box.fill("the edited question")
    box.press("Enter")
    page.wait_for_function(f"() => ({ANSWER})() === 'You said: the edited question'", timeout=15000)
    answered(page, 2)
    assert page.locator(".msg.user").all_inner_texts()[-1].startswith("the edited question")
    assert page.locator(".msg.user").count() == 2 and page.locator(".msg.assistant").count() == 2
    assert page.locator(".msg.user button.edit").count() == 1  # only the last user message is editable
    ctx.close()
    assert errors == []


def test_retry_after_an_error(browser, model, size):
    llm = OpenAIChat(base_url=model.base_url, model="fault-500", max_retries=0)
    with BackgroundServer(create_app(llm)) as srv:
        ctx, page, errors = open_page(browser, srv.url + "/", size)
        ask(page, "hello there")
        page.wait_for_selector(".msg.assistant .note.error", timeout=15000)
        assert page.locator(".msg.assistant button.regenerate").count() == 0
        llm.model = "fake-gpt"  # the model is back
        page.locator(".msg.assistant button.retry").click()
        page.wait_for_function(f"() => ({ANSWER})() === 'You said: hello there'", timeout=15000)
        answered(page)
        assert page.locator(".msg.assistant .note.error").count() == 0
        assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.user").count() == 1
        ctx.close()
    assert errors == []


STATUS_LOG = """
document.addEventListener('DOMContentLoaded', () => {
  window.statuses = [];
  const el = document.getElementById('status');
  new MutationObserver(() => window.statuses.push(el.textContent)).observe(el, {childList: true, characterData: true, subtree: true});
});
"""


def test_status_lines_clear_when_the_answer_ends(browser, weather, size):
    ctx = browser.new_context(**VIEWPORTS[size])
    ctx.add_init_script(STATUS_LOG)
    page = ctx.new_page()
    page.goto(weather.url + "/")
    # Stop: "Stopping…" shows, then goes when the answer has stopped.
    ask(page, " ".join(f"word{i}" for i in range(300)))
    page.wait_for_function(f"() => ({ANSWER})().length > 20", timeout=15000)
    page.click("#stop")
    page.wait_for_selector(".msg.assistant .note.stopped", timeout=10000)
    page.wait_for_function("() => document.getElementById('status').textContent === ''", timeout=5000)
    assert "Stopping…" in page.evaluate("() => window.statuses")
    # Resume after a reload: "Resumed the running answer." shows while it streams, and goes at the end.
    words = " ".join(f"w{i}" for i in range(120))
    ask(page, words)
    page.wait_for_function(f"() => ({ANSWER})().includes('w5')", timeout=15000)
    page.reload()
    page.wait_for_function(f"() => ({ANSWER})() === 'You said: {words}'", timeout=15000)
    answered(page, 2)
    assert "Resumed the running answer." in page.evaluate("() => window.statuses")
    assert page.inner_text("#status") == ""
    ctx.close()


def test_one_duration_per_tool_and_token_counts_in_the_waterfall(browser, weather, size):
    ctx, page, errors = open_page(browser, weather.url + "/", size)
    page.click("#opt-verbose")
    ask(page, QUERY)
    answered(page)
    if size == "phone":
        page.click("#trace-toggle")
    badges = page.locator("details.tool .badge")
    assert badges.count() == 2
    for i in range(2):
        badge = badges.nth(i)
        run_id = badge.get_attribute("data-run-id")
        assert run_id, "the tool's badge knows its run"
        row = page.locator(f'#waterfall .row[data-run-id="{run_id}"]')
        assert row.get_attribute("data-kind") == "tool"
        secs = row.locator(".secs").inner_text()
        assert badge.inner_text() == f"ok {secs}"
    llm_rows = page.locator('#waterfall .row[data-kind="llm"]')
    assert llm_rows.count() == 2
    for text in llm_rows.locator(".tokens").all_inner_texts():
        ins, outs = text.removesuffix(" tok").split(" · ")
        assert int(ins.removesuffix(" in")) > 0 and int(outs.removesuffix(" out")) > 0
    assert "tokens" in page.locator(".msg.assistant .usage").inner_text()
    ctx.close()
    assert errors == []


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_layout_labels_are_whole_and_the_phone_run_tree_collapses(browser, model, size):
    long_name = "a_rather_long_agent_name_that_would_be_cut_on_a_phone"
    with BackgroundServer(create_app(lambda: weather_agent(base_url=model.base_url, name=long_name))) as srv:
        ctx, page, errors = open_page(browser, srv.url + "/", size)
        page.click("#opt-verbose")
        ask(page, QUERY)
        answered(page)
        toggle = page.locator("#trace-toggle")
        if size == "phone":
            assert not page.locator("#waterfall").is_visible() and toggle.is_visible()
            assert toggle.inner_text() == "Run tree (5)" and toggle.get_attribute("aria-expanded") == "false"
            toggle.click()
            assert toggle.get_attribute("aria-expanded") == "true"
        else:
            assert not toggle.is_visible()
        assert page.locator("#waterfall").is_visible()
        rows = page.locator("#waterfall .row")
        assert rows.count() == 5
        for i in range(5):
            row = rows.nth(i)
            label = row.locator(".label")
            assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"label cut: {label.inner_text()}"
            assert not _overlap(row.locator(".dur").bounding_box(), row.locator(".track").bounding_box())
        assert long_name in rows.first.locator(".label").inner_text()
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        ctx.close()
    assert errors == []


def _luminance(css: str) -> float:
    r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_dark_mode_follows_the_os(browser, weather, scheme, size):
    ctx, page, errors = open_page(browser, weather.url + "/", size, color_scheme=scheme)
    ask(page, "hi")
    answered(page)
    bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    fg = page.evaluate("() => getComputedStyle(document.body).color")
    msg_bg = page.evaluate("() => getComputedStyle(document.querySelector('.msg.assistant')).backgroundColor")
    if scheme == "dark":
        assert _luminance(bg) < 0.2 and _luminance(msg_bg) < 0.25 and _luminance(fg) > 0.7
    else:
        assert _luminance(bg) > 0.8 and _luminance(fg) < 0.3
    ctx.close()
    assert errors == []


def test_each_answer_links_to_its_trace(browser, model, size):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamtap.tracing import TracingSubscriber

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    template = "http://jaeger.example:16686/trace/{trace_id}?run={run_id}"
    with TracingSubscriber(provider).subscribe() as sub:
        app = create_app(lambda: weather_agent(base_url=model.base_url), tracing=sub, trace_url=template)
        with BackgroundServer(app) as srv:
            ctx, page, errors = open_page(browser, srv.url + "/", size)
            ask(page, "hello")
            answered(page)
            meta = page.evaluate("() => JSON.parse(localStorage.getItem('streamtap.chat')).messages.pop().metadata")
            [root] = [s for s in exporter.get_finished_spans() if s.attributes.get("streamtap.run.id") == meta["runId"]]
            trace_id = format(root.context.trace_id, "032x")
            assert meta["traceId"] == trace_id
            link = page.locator(".msg.assistant a.trace-link")
            href = f"http://jaeger.example:16686/trace/{trace_id}?run={meta['runId']}"
            assert link.get_attribute("href") == href and link.is_visible()
            assert link.get_attribute("target") == "_blank"
            assert page.locator("#trace-link").get_attribute("href") == href  # the run tree's header links it too
            assert page.locator("#trace-link").is_visible()
            ctx.close()
    provider.shutdown()
    assert errors == []


def test_no_trace_link_without_a_template(browser, weather):
    ctx, page, errors = open_page(browser, weather.url + "/")
    ask(page, "hello")
    answered(page)
    assert page.locator("a.trace-link:visible").count() == 0
    ctx.close()
    assert errors == []


def test_read_only_view_of_a_run(browser, weather, size):
    ctx, page, errors = open_page(browser, weather.url + "/", size)
    page.click("#opt-verbose")
    ask(page, QUERY)
    answer = answered(page)
    saved = page.evaluate("() => localStorage.getItem('streamtap.chat')")
    run_id = json.loads(saved)["messages"][-1]["metadata"]["runId"]
    view = ctx.new_page()
    view.on("pageerror", lambda e: errors.append(str(e)))
    view.goto(f"{weather.url}/?run={run_id}")
    view.wait_for_function(
        f"() => ({ANSWER})() === {json.dumps(answer)} && document.querySelector('{DONE}')", timeout=15000
    )
    assert not view.locator("#composer").is_visible() and not view.locator("#new-chat").is_visible()
    assert run_id in view.locator("#readonly").inner_text()
    assert view.locator(".msg.user").inner_text().startswith(QUERY)
    assert view.locator("details.tool").count() == 2
    assert view.locator(".msg button.regenerate, .msg button.edit, .msg button.retry").count() == 0
    if size == "phone":
        view.click("#trace-toggle")
    assert view.locator("#waterfall .row").count() == 5
    assert view.evaluate("() => localStorage.getItem('streamtap.chat')") == saved  # the chat is left alone
    missing = ctx.new_page()
    missing.goto(f"{weather.url}/?run=no-such-run")
    missing.wait_for_function(
        "() => document.getElementById('status').textContent.includes('no-such-run')", timeout=10000
    )
    ctx.close()
    assert errors == []
