"""The suite's own guard (tests/conftest.py): a test that leaves a thread running fails fast, and the run ends."""

from __future__ import annotations

import pathlib
import re
import time

import pytest

pytest_plugins = ["pytester"]

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

LEAKY = '''
import threading

import streamtap

never = threading.Event()


class Forever(streamtap.ModuleBase):
    """A producer that never ends on its own (what a broken cancel path leaves behind)."""

    def forward(self, x):
        while not never.wait(0.001):
            yield "tick"


def test_leaves_a_plain_thread():
    threading.Thread(target=never.wait, name="leftover-producer").start()
    assert 1 + 1 == 3  # the regression itself


def test_leaves_a_run_in_the_sdk_pool():
    Forever().start(0)  # nobody cancels it: a streamtap pool worker stays busy


def test_after_them_a_clean_test_still_passes():
    done = threading.Event()
    th = threading.Thread(target=done.set, name="finishes")
    th.start()
    th.join()
    assert done.is_set()


def test_a_thread_that_finishes_within_the_grace_is_fine():
    stop = threading.Event()
    threading.Thread(target=stop.wait, args=(0.2,), name="slow-to-stop").start()
'''


def test_a_test_leaving_a_thread_fails_naming_it_and_the_run_ends(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMTAP_TEST_THREAD_GRACE", "0.5")  # the inner run's grace (the 0.2 s thread is within it)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_leaky=LEAKY)
    began = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=60)
    took = time.monotonic() - began
    out = result.stdout.str()
    result.assert_outcomes(passed=3, failed=1, errors=2)  # the pool test passes its call, then errors at teardown
    assert "ERROR at teardown of test_leaves_a_plain_thread" in out
    assert "ERROR at teardown of test_leaves_a_run_in_the_sdk_pool" in out
    assert "test left 1 thread(s) running 0.5 s after it ended" in out and "'leftover-producer' in " in out
    # the pool worker, and where it is stuck
    assert re.search(r"'streamtap_\d+' in \w+ \(\S+\.py:\d+\)", out)
    assert "exiting without waiting for them" in result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert took < 30, f"the run took {took:.1f} s"
