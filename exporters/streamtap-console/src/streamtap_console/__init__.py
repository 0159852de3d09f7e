"""A live terminal view of streamtap run trees, drawn with ``rich``.

::

    from streamtap_console import LiveView

    with LiveView():
        agent("What's the weather in Paris?")

While the block runs, the terminal shows every run tree as it grows: a
spinner on each running step with the last line of text it is streaming,
a check mark and the duration of finished steps, failures in red with their
message, cancelled and interrupted steps in yellow and magenta, token usage
of model calls, and a progress bar on steps that report progress with
``streamtap.emit("progress", {"done": i, "total": n})`` (a step with several
child runs and no reported progress shows how many have finished). When the
block ends, the live view is replaced by a summary tree.

It is an ordinary subscriber: it sees runs of every thread and task. Only
the tail of each step's text is kept, so memory stays flat on long streams.
"""

from __future__ import annotations

import threading
import time
import typing as t

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import streamtap

__all__ = ["LiveView"]

__version__ = "0.1.0"

_MARKS = {
    "ok": ("✓", "green"),
    "error": ("✗", "bold red"),
    "cancelled": ("■", "yellow"),
    "interrupted": ("⏸", "magenta"),
}


class _Step:
    """What the view knows about one run."""

    __slots__ = ("children", "duration", "error", "progress", "run", "started", "status", "tail", "tools", "usage")

    def __init__(self, run: streamtap.Run) -> None:
        self.run = run
        self.started = time.monotonic()
        self.status: str | None = None
        self.duration: float | None = None
        self.error: str | None = None
        self.usage: t.Any = None
        self.tail = ""
        self.children: list[str] = []
        self.progress: tuple[float, float] | None = None
        self.tools: int = 0


def _duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


class LiveView:
    """Draws run trees live in the terminal, then prints a summary tree.

    Args:
        console: where to draw (default: a new :class:`rich.console.Console` on stdout).
        show_text: show the tail of the text each running step streams.
        text_width: characters of streamed text kept and shown per step.
        refresh_per_second: redraws per second.
        summary: print the final tree when the view stops.
        transient: remove the live drawing when the view stops (the summary replaces it).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    :meth:`render` returns the current tree as a renderable (for tests or
    for drawing it yourself).
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        show_text: bool = True,
        text_width: int = 72,
        refresh_per_second: float = 12,
        summary: bool = True,
        transient: bool = True,
    ) -> None:
        if text_width < 1:
            msg = f"text_width must be at least 1 character, got {text_width!r}."
            raise streamtap.UsageError(msg)
        self.console = console or Console()
        self.show_text = show_text
        self.text_width = text_width
        self.refresh_per_second = refresh_per_second
        self.summary = summary
        self.transient = transient
        self._steps: dict[str, _Step] = {}
        self._roots: list[str] = []
        self._lock = threading.Lock()
        self._subscription: streamtap.Subscription | None = None
        self._live: Live | None = None
        self._spinners: dict[str, Spinner] = {}

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> LiveView:
        """Subscribe and start drawing; returns ``self``."""
        if self._subscription is None:
            kinds = ["start", "tool", "custom", "end"] + (["chunk"] if self.show_text else [])
            self._subscription = streamtap.subscribe(self._on_event, kinds=kinds)
            self._live = Live(
                get_renderable=self.render,
                console=self.console,
                refresh_per_second=self.refresh_per_second,
                transient=self.transient,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def stop(self) -> None:
        """Stop drawing and unsubscribe; print the summary tree (idempotent)."""
        if self._subscription is None:
            return
        self._subscription.unsubscribe()
        self._subscription = None
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.summary and self._roots:
            self.console.print(self.render(final=True))

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- events -----------------------------------------------------------------

    def _on_event(self, ev: t.Any) -> None:
        rid = ev.run.run_id
        kind = ev.kind
        with self._lock:
            if kind == "start":
                self._steps[rid] = _Step(ev.run)
                parent = self._steps.get(ev.run.parent_id) if ev.run.parent_id else None
                if parent is None:
                    self._roots.append(rid)
                else:
                    parent.children.append(rid)
                return
            step = self._steps.get(rid)
            if step is None:
                return
            if kind == "chunk":
                if ev.channel == "text" and isinstance(ev.delta, str):
                    step.tail = (step.tail + ev.delta)[-self.text_width :]
            elif kind == "end":
                step.status = ev.status
                step.duration = ev.timings.duration if ev.timings is not None else time.monotonic() - step.started
                step.usage = ev.usage
                if ev.error is not None:
                    step.error = f"{ev.error.type}: {ev.error.message}"
            elif kind == "tool":
                if ev.phase == "requested":
                    step.tools += 1
            elif kind == "custom" and ev.name == "progress" and isinstance(ev.data, t.Mapping):
                done = ev.data.get("done", ev.data.get("completed"))
                total = ev.data.get("total")
                if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
                    step.progress = (float(done), float(total))

    # -- drawing ----------------------------------------------------------------

    def render(self, final: bool = False) -> RenderableType:
        """The run trees as a renderable; ``final`` drops spinners and streamed text (the summary)."""
        with self._lock:
            trees = []
            for rid in self._roots:
                tree = Tree(self._label(self._steps[rid], final), guide_style="dim")
                self._grow(tree, self._steps[rid], final)
                trees.append(tree)
        return Group(*trees) if trees else Text("")

    def _grow(self, tree: Tree, step: _Step, final: bool) -> None:
        # Iterative, so that very deep trees cannot exhaust the stack.
        stack = [(tree, step)]
        while stack:
            node, s = stack.pop()
            for cid in s.children:
                child = self._steps[cid]
                branch = node.add(self._label(child, final))
                stack.append((branch, child))

    def _label(self, step: _Step, final: bool) -> RenderableType:
        run = step.run
        head = Text()
        if step.status is not None:
            mark, style = _MARKS.get(step.status, ("?", ""))
            head.append(f"{mark} ", style=style)
        head.append(run.name, style="bold red" if step.status == "error" else "bold")
        head.append(f" {run.kind}", style="dim")
        if step.duration is not None:
            head.append(f"  {_duration(step.duration)}", style="cyan")
        else:
            head.append(f"  {_duration(time.monotonic() - step.started)}", style="dim cyan")
        if step.usage is not None:
            head.append(f"  {step.usage.input_tokens}→{step.usage.output_tokens} tok", style="dim")
        if step.tools:
            head.append(f"  {step.tools} tool call{'s' if step.tools != 1 else ''}", style="dim")
        if step.status is not None and step.status not in {"ok", "error"}:
            head.append(f"  {step.status}", style=_MARKS[step.status][1])
        if step.progress is None and len(step.children) > 1:
            finished = sum(1 for c in step.children if self._steps[c].status is not None)
            head.append(f"  {finished}/{len(step.children)} done", style="dim")
        parts: list[RenderableType] = []
        if step.status is None and not final:
            spinner = self._spinners.get(run.run_id)
            if spinner is None:
                spinner = self._spinners[run.run_id] = Spinner("dots", style="yellow")
            row = Table.grid(padding=(0, 1))
            row.add_row(spinner, head)
            parts.append(row)
        else:
            self._spinners.pop(run.run_id, None)
            parts.append(head)
        if step.progress is not None:
            done, total = step.progress
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=total, completed=min(done, total), width=30),
                Text(f"{done:g}/{total:g}", style="cyan"),
            )
            parts.append(bar)
        if step.error is not None:
            parts.append(Text(step.error, style="red"))
        if self.show_text and step.tail and step.status is None and not final:
            line = step.tail.replace("\n", " ")
            parts.append(Text(f"… {line}", style="italic dim"))
        return Group(*parts) if len(parts) > 1 else parts[0]
