"""The testing helpers catch what they claim to catch."""

from __future__ import annotations

import pytest

from streamtap import ModuleBase
from streamtap.events import Chunk, End, Run, Start
from streamtap.testing import capture_events, check_invariants

ROOT = Run("a", "A", "module", None, "a")
CHILD = Run("b", "B", "module", "a", "a")


class Hi(ModuleBase):
    def forward(self):
        yield "hi"


def test_capture_events_views():
    """capture_events() collects every event; its views slice them."""
    with capture_events() as events:
        Hi()()
    assert events.kinds() == ["start", "chunk", "end"]
    assert events.text() == "hi" and len(events.runs()) == 1 and len(events.ends()) == 1
    check_invariants(events)


def test_capture_events_by_kind_and_sender():
    """kinds= and sender= narrow the capture."""
    a, b = Hi(), Hi()
    with capture_events(kinds=["end"], sender=a) as events:
        a()
        b()
    assert events.kinds() == ["end"]


@pytest.mark.parametrize(
    "events, message",
    [
        ([Start(ROOT, 0)], "never ended"),
        ([Start(ROOT, 0), End(ROOT, 1, "ok"), End(ROOT, 2, "ok")], "after its end"),
        ([Chunk(ROOT, 0, "x")], "before its start"),
        ([Start(ROOT, 0), End(ROOT, 2, "ok")], "gap-free"),
        ([Start(ROOT, 0), Start(CHILD, 1), End(ROOT, 2, "ok"), End(CHILD, 3, "ok")], "ended after its parent"),
        ([Start(CHILD, 0), End(CHILD, 1, "ok")], "never started"),
    ],
)
def test_check_invariants_detects_violations(events, message):
    """Each broken guarantee is reported by name."""
    with pytest.raises(AssertionError, match=message):
        check_invariants(events)
