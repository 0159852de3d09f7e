"""Fixtures for the model tests: the embedded OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import typing as t

import pytest

from streamtap.testing import FakeOpenAI


@pytest.fixture(scope="module")
def server() -> t.Iterator[FakeOpenAI]:
    """One embedded server per test module (records accumulate; filter them by time or model)."""
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def make_server() -> t.Iterator[t.Callable[..., FakeOpenAI]]:
    """Start servers with chosen options; all are stopped after the test."""
    started: list[FakeOpenAI] = []

    def make(**options: t.Any) -> FakeOpenAI:
        srv = FakeOpenAI(**options).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
