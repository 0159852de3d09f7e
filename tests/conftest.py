"""Shared fixtures: every test starts and ends with an empty bus, and leaves no thread running."""

from __future__ import annotations

import concurrent.futures.thread
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import typing as t

import pytest

from streamtap import bus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""Debian's Chromium, which scripts/test.sh installs; the page tests drive it with Playwright."""


@pytest.fixture(scope="module")
def browser() -> t.Iterator[t.Any]:
    """One headless Chromium per test module (its pages are the tests' own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


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


# -- leftover threads ---------------------------------------------------------------------------
#
# A test that leaves a non-daemon thread running (a producer that never saw its cancel, a pool worker
# stuck in a run) would make pytest hang at exit, after the test already failed. Each test is checked
# instead: a thread it started that is still busy after a short grace fails the test, naming the
# thread; and if such a thread is still running when pytest is done, the process exits without
# waiting for it (os._exit with pytest's own exit status), so the run ends.

THREAD_GRACE = float(os.environ.get("STREAMTAP_TEST_THREAD_GRACE", "2.0"))
"""Seconds a test's threads get to finish after its teardown before the test fails."""

_leaked: list[threading.Thread] = []  # threads reported by a test, checked again at exit


_WORKER = concurrent.futures.thread._worker.__code__


def _idle_pool_worker(thread: threading.Thread) -> bool:
    """Whether ``thread`` is a ThreadPoolExecutor worker waiting for work (its innermost Python frame is the worker loop)."""
    frame = sys._current_frames().get(thread.ident or -1)
    return frame is not None and frame.f_code is _WORKER


def _pool_worker(thread: threading.Thread) -> bool:
    """Whether ``thread`` is a ThreadPoolExecutor worker (idle or running a task): it cannot be joined, only waited on."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is _WORKER:
            return True
        frame = frame.f_back
    return False


def _busy_threads() -> set[threading.Thread]:
    """The threads that would keep the interpreter from exiting: non-daemon, alive, not idle pool workers."""
    main = threading.main_thread()
    return {
        th
        for th in threading.enumerate()
        if th is not main and not th.daemon and th.is_alive() and not _idle_pool_worker(th)
    }


_STDLIB = sysconfig.get_paths()["stdlib"]


def _describe(thread: threading.Thread) -> str:
    """The thread's name and where it is: its innermost frame outside the standard library."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None and frame.f_back is not None and frame.f_code.co_filename.startswith(_STDLIB):
        frame = frame.f_back
    where = f" in {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})" if frame is not None else ""
    return f"{thread.name!r}{where}"


def leftover_threads(before: set[threading.Thread], grace: float = THREAD_GRACE) -> list[threading.Thread]:
    """The threads busy now and not in ``before``, once each had up to ``grace`` seconds (in all) to finish."""
    deadline = time.monotonic() + grace
    while True:
        left = [th for th in _busy_threads() if th not in before]
        remaining = deadline - time.monotonic()
        if not left or remaining <= 0:
            return left
        joinable = [th for th in left if not _pool_worker(th)]
        for th in joinable:
            th.join(max(0.0, deadline - time.monotonic()))
        if len(joinable) < len(left):  # a busy pool worker: look again shortly, until the deadline
            threading.Event().wait(min(0.01, max(0.0, deadline - time.monotonic())))


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> t.Iterator[None]:
    """Fail a test that leaves a thread running (it would hang pytest at exit); the fixture set up first, checked last."""
    before = _busy_threads()
    yield
    left = leftover_threads(before)
    if left:
        _leaked.extend(left)
        names = ", ".join(_describe(th) for th in left)
        pytest.fail(f"test left {len(left)} thread(s) running {THREAD_GRACE} s after it ended: {names}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember pytest's exit status for :func:`pytest_unconfigure`."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit at once when a reported leftover thread is still running (waiting for it would never end)."""
    alive = [th for th in _leaked if th.is_alive()]
    if alive:
        sys.stdout.flush()
        sys.stderr.write(
            f"\nstreamtap tests: {len(alive)} leftover thread(s) still running ({', '.join(_describe(th) for th in alive)}); exiting without waiting for them.\n"
        )
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1) or 1)


def _run_example(name: str, **env_vars: str) -> str:
    """Run ``examples/<name>`` as a user would (offline: no OPENAI_* or OTEL_* variables but ``env_vars``); return its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env.update(env_vars)
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / name
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def run_example() -> t.Callable[..., str]:
    """``run_example(name, **env_vars)``: run an example in a subprocess, check it exits 0, return its stdout."""
    return _run_example


@pytest.fixture
def traced() -> t.Iterator[tuple[t.Any, t.Any]]:
    """A subscribed :class:`~streamtap.tracing.TracingSubscriber` and the in-memory exporter its spans end in."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamtap.tracing import TracingSubscriber

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TracingSubscriber(provider) as sub:
        yield sub, exporter
    provider.shutdown()


@pytest.fixture
def misbehaving() -> t.Iterator[t.Any]:
    """A misbehaving OpenAI-compatible server on loopback (``tests/llm/misbehaving.py``), stopped after the test.

    Each request picks its fault by model name (``"fault-cut-close"``) or the ``x-fault`` header:
    500, 429 with Retry-After, a 401 echoing the key, malformed chunk, cuts, no finish reason, hangs, huge delta.
    """
    from llm.misbehaving import Misbehaving

    with Misbehaving() as srv:
        yield srv
