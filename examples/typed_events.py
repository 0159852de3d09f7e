"""Typed events: narrow by ``kind``, put them on a wire and back, and add a buffer of your own.

Run it: ``python examples/typed_events.py``. It prints the answer as it
streams, a one-line summary of each run, and checks that every event survives
``to_dict()`` -> JSON -> ``event_from_dict()`` unchanged.
"""

from __future__ import annotations

import json
import typing as t

import streamtap
from streamtap.events import Event, event_from_dict


class Shout(streamtap.ModuleBase):
    """Streams the words of its input, upper-cased."""

    def forward(self, text: str) -> t.Iterator[str]:
        for word in text.split():
            yield word.upper() + " "


class Pipeline(streamtap.ModuleBase):
    """Calls Shout twice; its chunks nest under this run."""

    def forward(self, text: str) -> t.Iterator[str]:
        yield from Shout().stream(text).text()
        yield from Shout().stream("done").text()


def describe(ev: Event) -> str | None:
    """A line per run start and end; a type checker narrows ``ev`` by its ``kind``."""
    if ev.kind == "start":
        return f"start {'/'.join(ev.run.path)}"
    if ev.kind == "end":
        return (
            f"end   {'/'.join(ev.run.path)} {ev.status} after {ev.timings.duration * 1000:.2f} ms"
            if ev.timings
            else None
        )
    return None


def main() -> None:
    """Stream the pipeline, print the answer and the runs, check the wire format round-trips."""
    events = []
    for ev in Pipeline().stream("streamtap streams typed events"):  # the reader drives the run in this thread
        events.append(ev)
        if ev.kind == "chunk" and ev.run.name == "Pipeline":
            print(ev.delta, end="", flush=True)
    print()
    for ev in events:
        line = describe(ev)
        if line:
            print(line)
    wire = [json.loads(json.dumps(ev.to_dict())) for ev in events]
    back = [event_from_dict(d) for d in wire]
    assert [b.to_dict() for b in back] == wire, "the wire format must round-trip"
    assert [e.seq for e in events] == list(range(len(events))), "seq is gap-free"
    print(f"{len(events)} events, seq 0..{len(events) - 1}, round-trip ok")


if __name__ == "__main__":
    main()
