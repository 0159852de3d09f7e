"""A recorded weather-agent run replayed into the page (``streamtap replay FILE``), watched in headless Chromium.

The recording is made from a real run (weather agent, real ``openai`` client,
embedded model server over real HTTP); ``streamtap replay`` runs as a real
subprocess serving the page with real uvicorn.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from streamtap.demo.weather import QUERY, weather_agent
from streamtap.recording import Recorder, read_recording
from streamtap.testing import FakeOpenAI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytest.importorskip("playwright")
pytestmark = pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/test.sh installs it)"
)

ANSWER = "() => { const m = [...document.querySelectorAll('.msg.assistant')].pop(); return m ? m.querySelector('.text')?.textContent || '' : ''; }"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("rec") / "weather.jsonl"
    with FakeOpenAI(token_delay=0.05) as model, Recorder(path):  # about a second and a half of streaming
        weather_agent(base_url=model.base_url)(QUERY)
    return path


class Replay:
    """``streamtap replay FILE ...`` in a subprocess; :attr:`links` are the run links it printed."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamtap.cli", "replay", *args, "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.links: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if "/?run=" in line:
                    self.links.append(line.split(": ", 1)[1].strip())
                if line.startswith("Ctrl-C"):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or not self.links:
            self.close()
            raise AssertionError(
                f"streamtap replay printed no run link: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C: the server stops cleanly
        code = self.proc.wait(15)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.mark.parametrize(
    "size", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_a_recorded_run_replays_into_the_page_at_its_pace(browser, recording, size):
    rec = read_recording(recording)
    [root] = rec.roots()
    answer = next(x["output"] for x in rec.lines if x["kind"] == "end" and x["run"]["run_id"] == root)
    replay = Replay(str(recording))
    try:
        [link] = replay.links
        assert link.endswith(f"/?run={root}")
        ctx = browser.new_context(viewport=size)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(link)
        # At the recorded pace the answer streams: part of it shows before the end.
        # The partial text is read in the same tick as the "still streaming" check (read later, it may be whole).
        partial = page.wait_for_function(
            f"() => {{ const a = ({ANSWER})(); return document.querySelector('.msg.assistant.streaming') && a ? a : null; }}",
            timeout=20000,
        ).json_value()
        page.wait_for_function(
            f"() => ({ANSWER})() === {answer!r} && !document.querySelector('.msg.assistant.streaming')", timeout=20000
        )
        assert len(partial) < len(answer)
        assert page.locator(".msg.user").inner_text().startswith(QUERY)
        assert page.locator("details.tool").count() == 2
        assert not page.locator("#composer").is_visible()
        if size["width"] < 760:
            page.click("#trace-toggle")
        assert page.locator("#waterfall .row").count() == 5
        ctx.close()
        assert errors == []
    finally:
        assert replay.close() == 0


def test_a_faster_replay_shows_the_whole_run(browser, recording):
    replay = Replay(str(recording), "--speed", "0")
    try:
        page = browser.new_page()
        page.goto(replay.links[0])
        page.wait_for_function(
            f"() => ({ANSWER})().includes('Tokyo') && !document.querySelector('.msg.assistant.streaming')",
            timeout=20000,
        )
        assert page.locator(".msg.assistant .note.error").count() == 0
        page.close()
    finally:
        assert replay.close() == 0
