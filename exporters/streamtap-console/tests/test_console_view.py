"""The live terminal view, rendered to a real rich Console writing to a string."""

from __future__ import annotations

import importlib.metadata
import io
import re
import threading
import typing as t

import pytest
from rich.console import Console

import streamtap
import streamtap_console
from streamtap import ModuleBase
from streamtap.events import Usage
from streamtap_console import LiveView

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system="standard"), out


def plain(text: str) -> str:
    return ANSI.sub("", text)


class Search(ModuleBase):
    kind = "tool"

    def forward(self, q: str) -> str:
        return f"results for {q}"


class Broken(ModuleBase):
    kind = "tool"

    def forward(self, q: str) -> str:
        raise TimeoutError("search backend timed out")


class Answer(ModuleBase):
    kind = "llm"

    def forward(self, q: str) -> t.Iterator[str]:
        streamtap.current().add_usage(Usage(9, 4))  # type: ignore[union-attr]
        yield "The answer "
        yield "is 42."


class Agent(ModuleBase):
    kind = "agent"

    def forward(self, q: str) -> str:
        streamtap.current().tool("c1", "Search", "requested", arguments={"q": q})  # type: ignore[union-attr]
        Search()(q)
        try:
            Broken()(q)
        except TimeoutError:
            pass
        return str(Answer()(q))


def test_summary_tree_after_the_run() -> None:
    """The summary shows the tree, check marks, durations, usage, and the error in red."""
    console, out = terminal()
    with LiveView(console, refresh_per_second=50):
        Agent()("life")
    text = out.getvalue()
    summary = plain(text)
    lines = [line for line in summary.splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if "Agent agent" in line)
    tree = lines[start : start + 5]
    assert "✓ Agent agent" in tree[0] and "1 tool call" in tree[0]
    assert "✓ Search tool" in tree[1]
    assert "✗ Broken tool" in tree[2]
    assert "TimeoutError: search backend timed out" in tree[3]
    assert "✓ Answer llm" in tree[4] and "9→4 tok" in tree[4]
    assert re.search(r"\d+ ms", tree[0])
    # the error line is red (ANSI 31)
    error_line = next(line for line in text.splitlines() if "search backend timed out" in line)
    assert "\x1b[31m" in error_line
    assert "3/3 done" in tree[0]


def test_live_tree_while_running() -> None:
    """Mid-run: a spinner on running steps, the streamed text of the current step, finished steps checked."""
    console, _ = terminal()
    streamed = threading.Event()
    release = threading.Event()

    class Writer(ModuleBase):
        kind = "llm"

        def forward(self, q: str) -> t.Iterator[str]:
            yield "Once upon "
            yield "a time"
            streamed.set()
            release.wait(10)
            yield "."

    class Story(ModuleBase):
        kind = "agent"

        def forward(self, q: str) -> str:
            Search()(q)
            return str(Writer()(q))

    view = LiveView(console, refresh_per_second=50, summary=False)
    with view:
        handle = Story().start("x")
        assert streamed.wait(10)
        snapshot = Console(file=io.StringIO(), force_terminal=True, width=100)
        snapshot.print(view.render())
        live = plain(snapshot.file.getvalue())  # type: ignore[attr-defined]
        release.set()
        handle.result(10)
    assert "✓ Search tool" in live
    assert "… Once upon a time" in live
    spinner_frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    running = [line for line in live.splitlines() if "Writer" in line or "Story" in line]
    assert len(running) == 2 and all(any(f in line for f in spinner_frames) for line in running)
    done = Console(file=io.StringIO(), force_terminal=True, width=100)
    done.print(view.render(final=True))
    assert "Once upon" not in done.file.getvalue()  # type: ignore[attr-defined]


def test_progress_bar_for_batch_nodes() -> None:
    """A node reporting progress gets a bar with done/total."""
    console, _ = terminal()
    gate = threading.Event()
    go = threading.Event()

    class Batch(ModuleBase):
        kind = "node"

        def forward(self, items: list[int]) -> int:
            for i, _ in enumerate(items, 1):
                streamtap.emit("progress", {"done": i, "total": len(items)})
                if i == 3:
                    gate.set()
                    go.wait(10)
            return len(items)

    view = LiveView(console, summary=False)
    with view:
        handle = Batch().start(list(range(10)))
        assert gate.wait(10)
        snap = Console(file=io.StringIO(), force_terminal=True, width=100)
        snap.print(view.render())
        go.set()
        handle.result(10)
    text = plain(snap.file.getvalue())  # type: ignore[attr-defined]
    assert "3/10" in text
    assert "━" in text


def test_cancelled_and_interrupted_are_marked() -> None:
    """Cancelled and interrupted steps are marked and named, not shown as errors."""
    console, out = terminal()

    class Pause(Exception):
        __streamtap_status__ = "interrupted"

    class Ask(ModuleBase):
        def forward(self, q: str) -> str:
            raise Pause("approve?")

    class Stops(ModuleBase):
        def forward(self, q: str) -> str:
            raise streamtap.RunCancelled("stopped by user")

    with LiveView(console):
        with pytest.raises(Pause):
            Ask()("x")
        with pytest.raises(streamtap.RunCancelled):
            Stops()("x")
    text = plain(out.getvalue())
    assert "⏸ Ask module" in text and "interrupted" in text
    assert "■ Stops module" in text and "cancelled" in text


def test_view_unsubscribes_and_validates() -> None:
    """After the block no subscriber is left; a bad width is refused with a clear message."""
    console, _ = terminal()
    with LiveView(console) as view:
        pass
    assert view._subscription is None
    with pytest.raises(streamtap.UsageError, match="text_width"):
        LiveView(console, text_width=0)


def test_entry_point_registered() -> None:
    """Discoverable in the streamtap.exporters entry-point group."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="streamtap.exporters")}
    assert eps["console"].load() is streamtap_console and streamtap_console.LiveView is LiveView


def test_progress_bar_of_a_batch_node_without_any_emit() -> None:
    """A BatchNode's own progress events draw its bar: nothing hand-written in the node."""
    from streamtap.flows import BatchNode, Flow

    console, _ = terminal()
    gate = threading.Event()
    go = threading.Event()

    class Summarise(BatchNode):
        def prep(self, shared: t.Any) -> list[int]:
            return list(range(8))

        def exec(self, item: int) -> int:
            if item == 4:  # four done: hold the batch here while the view is drawn
                gate.set()
                go.wait(10)
            return item

    view = LiveView(console, summary=False)
    with view:
        handle = Flow(Summarise()).start({})
        assert gate.wait(10)
        snap = Console(file=io.StringIO(), force_terminal=True, width=100)
        snap.print(view.render())
        go.set()
        handle.result(10)
    text = plain(snap.file.getvalue())  # type: ignore[attr-defined]
    assert "Summarise" in text and "4/8" in text and "━" in text
