"""Shared fixtures: every test starts and ends with an empty bus."""

from __future__ import annotations

import typing as t

import pytest

from streamtap import bus


def _connected() -> list[str]:
    found = [f"{kind}: {sub!r}" for kind in bus.KINDS for sub in getattr(bus.registry, kind)]
    found += [f"{kind}: raw receiver" for kind, sig in bus.signals.items() if sig.receivers]
    return found


@pytest.fixture(autouse=True)
def _clean_bus() -> t.Iterator[None]:
    """Fail a test that leaves a subscriber connected (it would leak events into later tests)."""
    before = _connected()
    yield
    after = _connected()
    leaked = [x for x in after if x not in before]
    if leaked:
        for kind in bus.KINDS:
            for sub in getattr(bus.registry, kind):
                sub.unsubscribe()
        pytest.fail(f"test left subscribers connected: {leaked}")
