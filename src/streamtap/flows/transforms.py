"""Stream transforms in a :class:`~streamtap.flows.Sequential`: a step that reads the previous step's live stream.

A run of steps ``head, t1, t2, ...`` where every ``t`` is a transform (see
:mod:`streamtap.steps`) runs as one *segment*: ``head`` starts streaming,
``t1`` reads its stream while it is produced, ``t2`` reads ``t1``'s, and so
on; the segment's output is the last transform's output. Every step is
still a child run of the sequence, so all of them stream with their
identity.

What a transform reads from its upstream: the ``delta`` of each chunk of
the upstream's own run on the ``text`` or ``data`` channel, in order. An
upstream that streams nothing of its own (a step that returns, or a flow
whose children do the talking) gives its output as one item when it ends.
An upstream that fails raises its exception inside the transform's loop;
a transform that stops reading early (``break``) cancels its upstream.

Each upstream's runs carry the metadata ``{"streamtap.piped_into": <the
transform's name>}`` (:data:`~streamtap.answer.PIPED_KEY`): what it streams is
the transform's input, so ``stream.text()`` and the web page leave it out of
the answer and show the transform's output instead.
"""

from __future__ import annotations

import contextlib
import itertools
import typing as t

from ..answer import PIPED_KEY
from ..events import Chunk, End
from ..module import Configured, ModuleBase
from ..steps import transform_input
from ..streams import RunStream

__all__ = ["Live", "run_segment", "run_segment_async", "segment_end"]

_CHANNELS = ("text", "data")


def segment_end(steps: t.Sequence[t.Any], at: int) -> int:
    """The index after the last transform that follows ``steps[at]`` (``at + 1`` when none does)."""
    end = at + 1
    while end < len(steps) and transform_input(steps[end]) is not None:
        end += 1
    return end


class Live:
    """The live stream of one upstream step, as a transform iterates it (sync or async).

    Iterating it yields the upstream run's own ``text`` / ``data`` deltas as
    they arrive (its output once, at its end, when it streamed nothing).
    """

    __slots__ = ("_done", "_sent", "name", "stream")

    def __init__(self, stream: RunStream, name: str) -> None:
        self.stream = stream
        self.name = name
        """The upstream step's run name."""
        self._sent = False
        self._done = False

    def _item(self, ev: t.Any) -> tuple[bool, t.Any]:
        """``(True, value)`` when ``ev`` gives the transform a value."""
        rid = self.stream.handle.run_id
        if ev.__class__ is Chunk:
            if ev.run.run_id == rid and ev.channel in _CHANNELS:
                self._sent = True
                return True, ev.delta
        elif ev.__class__ is End and ev.run.run_id == rid:
            self._done = True
            if ev.status == "ok" and not self._sent and ev.output is not None:
                return True, ev.output
        return False, None

    def __iter__(self) -> t.Iterator[t.Any]:
        try:
            for ev in self.stream:
                ok, value = self._item(ev)
                if ok:
                    yield value
            self.stream.handle.result()  # the upstream's failure is raised here, in the transform's loop
        finally:
            self.stream.close()

    async def _aiter(self) -> t.AsyncIterator[t.Any]:
        try:
            async for ev in self.stream:
                ok, value = self._item(ev)
                if ok:
                    yield value
            await self.stream.handle
        finally:
            self.stream.close()

    def __aiter__(self) -> t.AsyncIterator[t.Any]:
        return self._aiter()

    def __repr__(self) -> str:
        return f"<live stream of {self.name}>"


class _Feed:
    """The iterator a transform gets: its upstream's live values, with a readable repr (the run's ``inputs``)."""

    __slots__ = ("_it", "name")

    def __init__(self, it: t.Any, name: str) -> None:
        self._it = it
        self.name = name

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> t.Any:
        return next(self._it)

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> t.Any:
        return await self._it.__anext__()

    def close(self) -> None:
        """Stop reading: the upstream is cancelled if it still runs."""
        self._it.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self._it.aclose()

    def __repr__(self) -> str:
        return f"<live stream of {self.name}>"


def _feed(step: t.Any, live: Live) -> t.Any:
    """What a transform is called with: the live stream, iterated the way it declared (sync or async)."""
    return _Feed(iter(live) if transform_input(step) == "sync" else live.__aiter__(), live.name)


def _name(step: ModuleBase | Configured) -> str:
    return step._run_name()


def _piped(steps: t.Sequence[t.Any]) -> list[t.Any]:
    """Every step but the last, marked as feeding the next one (for the answer rule); the last as is."""
    out = [s.with_options(metadata={PIPED_KEY: _name(nxt)}) for s, nxt in itertools.pairwise(steps)]
    return [*out, steps[-1]]


def run_segment(steps: t.Sequence[t.Any], value: t.Any) -> t.Any:
    """Run ``head, *transforms`` on ``value`` (sync), each transform reading the previous one live."""
    head, *transforms = _piped(steps)
    live = Live(head.stream(value), _name(head))
    opened = [live]
    try:
        for step in transforms[:-1]:
            live = Live(step.stream(_feed(step, live)), _name(step))
            opened.append(live)
        last = transforms[-1]
        return last(_feed(last, live))
    finally:
        for each in opened:
            each.stream.close()  # cancels an upstream still running (the transform stopped reading)
        for each in opened:
            with contextlib.suppress(BaseException):  # its End comes before the sequence's own
                each.stream.handle.result()


async def run_segment_async(steps: t.Sequence[t.Any], value: t.Any) -> t.Any:
    """Async :func:`run_segment`: streams are tasks of the running loop (sync steps in the SDK's threads)."""
    head, *transforms = _piped(steps)
    live = Live(head.astream(value), _name(head))
    opened = [live]
    try:
        for step in transforms[:-1]:
            live = Live(step.astream(_feed(step, live)), _name(step))
            opened.append(live)
        last = transforms[-1]
        return await last.acall(_feed(last, live))
    finally:
        for each in opened:
            each.stream.close()
        for each in opened:
            with contextlib.suppress(BaseException):
                await each.stream.handle
