"""What the user sees as the answer: the one rule shared by ``stream.text()`` and the web page.

A run tree streams text from many runs: a model's turns, an agent relaying
them, nodes, tools and the models that tools call. :class:`AnswerText`
decides which ``text`` deltas are *the answer*:

1. **Tools are not the answer.** Text of a run of kind ``tool``, and of every
   run inside a tool (a model a tool calls), is left out. The root run's own
   text always counts.
2. **A stream transform's input is not the answer.** Text of a run whose
   stream feeds a transform (``Sequential(llm, JsonOutputParser(), extract)``:
   the model's raw JSON) is left out with everything inside it; the
   transform's own output is what the user sees. Such runs carry the
   metadata key :data:`PIPED_KEY`.
3. **The innermost speaker wins.** Once a run's text was shown, the same text
   repeated by a run above it (an agent or node that re-yields its model's
   chunks) is not shown again; text of its own is.
4. **Turns are separated.** When the text shown comes from another run than
   the text before it (a second model turn after a tool call, the next node),
   :meth:`AnswerText.answer` puts :data:`TURN_SEPARATOR` between them, unless
   one side already has a line break there. The web page opens a new text
   part instead.
5. **A module that returns rather than streams** still answers: when the root
   ends ``ok`` with a ``str`` output and no text was shown at all, that output
   is the answer.

The whole tree's text, with nothing left out, stays available with
``stream.filter(kinds="chunk", channels="text")``.

This module imports nothing of streamtap but the events.
"""

from __future__ import annotations

import collections
import typing as t

from .events import Chunk, End, Event, Start

__all__ = ["PIPED_KEY", "TURN_SEPARATOR", "AnswerText"]

PIPED_KEY = "streamtap.piped_into"
"""Run metadata naming the transform that reads this run's stream (set by ``Sequential``)."""

TURN_SEPARATOR = "\n\n"
"""Put between the text of two different runs in :meth:`AnswerText.answer`."""


class _Echo:
    """The text a run's descendants showed, which the run may repeat (a relay) and must then not show twice.

    Pieces are kept as a queue, so repeated matching costs no quadratic copying.
    """

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: collections.deque[str] = collections.deque()

    def add(self, text: str) -> None:
        if text:
            self.pieces.append(text)

    def consume(self, delta: str) -> bool:
        """Whether ``delta`` is the next text already shown (then it is used up)."""
        if not delta:
            return True
        pieces = self.pieces
        joined, n = "", 0
        while len(joined) < len(delta) and n < len(pieces):
            joined += pieces[n]
            n += 1
        if not joined.startswith(delta):
            pieces.clear()  # the run says something of its own: show it, and from now on compare afresh
            return False
        for _ in range(n):
            pieces.popleft()
        if len(joined) > len(delta):
            pieces.appendleft(joined[len(delta) :])
        return True


class _Node(t.NamedTuple):
    parent_id: str | None
    hidden: bool
    """A tool, a stream transform's input, or inside one: its text is not the answer."""


_HIDDEN: tuple[_Echo, ...] = (_Echo(),)
"""Marks a run whose text is not the answer (compared by identity; never iterated)."""


class AnswerText:
    """The answer rule for one root run's events (see the module docstring), fed in ``seq`` order.

    Two ways to use it: :meth:`shows` says whether a ``text`` delta is part
    of the answer (the web mapper; it draws turn boundaries as parts), and
    :meth:`answer` returns the text to append for any event, separators and
    the returned-output fallback included (``stream.text()``).

    Args:
        root_id: the root run; its text always counts. ``None``: the first run seen.
    """

    __slots__ = ("_chains", "_echo", "_last_char", "_last_run", "_nodes", "_plain", "root_id", "shown")

    def __init__(self, root_id: str | None = None) -> None:
        self.root_id = root_id
        self.shown = False
        """Whether any text of the answer was shown yet."""
        self._nodes: dict[str, _Node] = {}
        self._echo: dict[str, _Echo] = {}  # relay (a run whose descendants spoke) -> the text it may repeat
        self._chains: dict[str, tuple[_Echo, ...]] = {}  # speaking run -> its ancestors' echoes (or _HIDDEN)
        self._last_run: str | None = None
        self._last_char = ""
        self._plain: str | None = None  # a run whose text all shows (no ancestor to echo it, nothing to consume)

    def started(
        self, run_id: str, parent_id: str | None, kind: str, metadata: t.Mapping[str, t.Any] | None = None
    ) -> None:
        """Record a run (its ``Start``), so that its children know whether they are inside a tool."""
        if self.root_id is None:
            self.root_id = run_id
        parent = self._nodes.get(parent_id or "")
        hidden = run_id != self.root_id and (
            kind == "tool" or bool(parent and parent.hidden) or bool(metadata and PIPED_KEY in metadata)
        )
        self._nodes[run_id] = _Node(parent_id, hidden)

    def _chain(
        self, run_id: str, parent_id: str | None, kind: str, metadata: t.Mapping[str, t.Any] | None
    ) -> tuple[_Echo, ...]:
        node = self._nodes.get(run_id)
        if node is None:  # fed from the middle of a run: derive what we can
            self.started(run_id, parent_id, kind, metadata)
            node = self._nodes[run_id]
        if node.hidden:
            chain = _HIDDEN
        else:
            echoes = []
            parent = node.parent_id
            while parent is not None:  # every ancestor may repeat this run's text later
                if parent == self._plain:
                    self._plain = None  # it may repeat this run's text now: no longer plain
                echoes.append(self._echo.setdefault(parent, _Echo()))
                above = self._nodes.get(parent)
                parent = above.parent_id if above is not None else None
            chain = tuple(echoes)
        self._chains[run_id] = chain
        return chain

    def shows(
        self, run_id: str, parent_id: str | None, kind: str, delta: str, metadata: t.Mapping[str, t.Any] | None = None
    ) -> bool:
        """Whether this ``text`` delta of ``run_id`` is part of the answer (and remember that it was shown)."""
        chain = self._chains.get(run_id)
        if chain is None:
            chain = self._chain(run_id, parent_id, kind, metadata)
        if chain is _HIDDEN:
            return False
        echo = self._echo.get(run_id)
        if echo is not None and echo.consume(delta):
            return False  # a parent repeating what its child already showed
        for each in chain:
            each.add(delta)
        if delta:
            self.shown = True
        return True

    def answer(self, event: Event) -> str | None:
        """The text ``event`` adds to the answer, with a turn separator before a new speaker; else ``None``."""
        cls = event.__class__
        run = event.run
        if cls is Chunk:
            ev = t.cast(Chunk, event)
            delta = ev.delta
            if ev.channel != "text" or delta.__class__ is not str or not delta:
                if delta == "" and ev.channel == "text":
                    self.shows(run.run_id, run.parent_id, run.kind, delta, run.metadata)
                return None
            rid = run.run_id
            if rid == self._plain:  # the hot path: a run shown as it speaks
                self.shown = True
            elif not self.shows(rid, run.parent_id, run.kind, delta, run.metadata):
                return None
            elif self._chains.get(rid) == () and rid not in self._echo:
                self._plain = rid
            if rid == self._last_run or self._last_run is None or self._last_char == "\n" or delta[0] == "\n":
                out = delta
            else:
                out = TURN_SEPARATOR + delta
            self._last_run = rid
            self._last_char = delta[-1]
            return out
        if cls is Start:
            self.started(run.run_id, run.parent_id, run.kind, run.metadata)
            return None
        if cls is End:
            ev_end = t.cast(End, event)
            if run.run_id == self.root_id and ev_end.status == "ok" and not self.shown:
                output = ev_end.output
                if isinstance(output, str) and output:
                    self.shown = True
                    return output
        return None
