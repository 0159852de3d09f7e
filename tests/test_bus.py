"""The bus: subscribe/unsubscribe, failure isolation, async subscribers, raw blinker signals."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import streamtap
from streamtap import ModuleBase, UsageError, bus, subscribe, unsubscribe


class Words(ModuleBase):
    def forward(self, text: str):
        yield from text.split()


class TestSubscribe:
    def test_receives_every_event_in_seq_order(self):
        """A subscriber sees start, chunks and end of a call, in seq order."""
        seen = []
        with subscribe(seen.append):
            Words()("a b")
        assert [e.kind for e in seen] == ["start", "chunk", "chunk", "end"]
        assert [e.seq for e in seen] == [0, 1, 2, 3]

    def test_kinds_and_sender_filter(self):
        """`kinds=` and `sender=` narrow what a subscriber gets."""
        a, b = Words(), Words()
        ends, only_a = [], []
        with subscribe(ends.append, kinds=["end"]), subscribe(only_a.append, sender=a):
            a("x")
            b("y")
        assert [e.kind for e in ends] == ["end", "end"]
        assert {e.run.run_id for e in only_a} == {only_a[0].run.run_id} and len(only_a) == 3

    def test_decorator_and_unsubscribe_by_function(self):
        """`@subscribe(...)` works as a decorator; unsubscribe(fn) disconnects it."""
        got = []

        def fn(event):
            got.append(event)

        sub = subscribe(kinds="start")(fn)
        Words()("x")
        unsubscribe(fn)
        Words()("y")
        assert len(got) == 1 and sub("called directly") is None and got[-1] == "called directly"

    def test_context_manager_unsubscribes(self):
        """Leaving the with-block disconnects; a second unsubscribe is harmless."""
        got = []
        with subscribe(got.append) as sub:
            pass
        sub.unsubscribe()
        Words()("x")
        assert got == []

    @pytest.mark.parametrize("bad", [{"kinds": ["chunks"]}, {"maxsize": 0}])
    def test_bad_arguments_are_clear(self, bad):
        """An unknown kind or a bad size names the value."""
        with pytest.raises(UsageError, match="chunks|maxsize"):
            subscribe(lambda e: None, **bad)

    def test_not_callable(self):
        """Subscribing something that is not callable says what is expected."""
        with pytest.raises(UsageError, match="callable"):
            subscribe(42)  # type: ignore[arg-type]


class TestFailureIsolation:
    def test_raising_subscriber_breaks_nothing(self, caplog):
        """The producer and the other subscribers go on; the failure is logged once and counted."""
        got = []

        def broken(event):
            raise RuntimeError("boom")

        with caplog.at_level(logging.ERROR, logger="streamtap.bus"):  # noqa: SIM117 - nested blocks show which resource lives inside which
            with subscribe(broken) as bad, subscribe(got.append):
                assert Words()("a b c") == "abc"
                Words()("d")
        assert bad.errors == 8  # 5 events of the first call, 3 of the second
        assert len(got) == 8
        logged = [r for r in caplog.records if "broken" in r.getMessage()]
        assert len(logged) == 1 and "RuntimeError" in logged[0].getMessage()

    def test_slow_subscriber_runs_synchronously(self):
        """Subscribers run in the producing thread before the producer continues (documented: must not block)."""
        order = []

        def slow(event):
            if event.kind == "chunk":
                order.append(("subscriber", event.delta, threading.get_ident()))

        class Tracking(ModuleBase):
            def forward(self):
                for x in "ab":
                    yield x
                    order.append(("producer-after", x, threading.get_ident()))

        with subscribe(slow):
            Tracking()()
        assert [o[:2] for o in order] == [
            ("subscriber", "a"),
            ("producer-after", "a"),
            ("subscriber", "b"),
            ("producer-after", "b"),
        ]
        assert len({o[2] for o in order}) == 1

    @pytest.mark.parametrize("policy", ["block", "drop_oldest", "error"])
    def test_raising_subscriber_leaves_every_stream_policy_whole(self, policy):
        """A subscriber raising on every event costs a stream nothing, whatever its policy: all events, run ok."""

        def broken(event):
            raise RuntimeError("boom")

        with subscribe(broken) as bad:
            stream = Words().buffered(64, policy).stream("a b c d e")
            events = list(stream)
        assert [e.kind for e in events] == ["start"] + ["chunk"] * 5 + ["end"]
        assert events[-1].status == "ok" and stream.dropped == 0 and bad.errors == 7

    def test_blocking_subscriber_holds_only_the_run_it_blocks_in(self):
        """A subscriber that blocks holds the producer it runs in (documented: must not block); other runs go on; nothing is lost."""
        held, release = threading.Event(), threading.Event()
        seen = []

        def blocking(event):
            seen.append((event.run.name, event.kind))
            if event.run.name == "Held" and event.kind == "chunk" and not release.is_set():
                held.set()
                assert release.wait(10)

        held_words, free_words = type("Held", (Words,), {})(), type("Free", (Words,), {})()
        with subscribe(blocking):
            handle = held_words.start("a b c")
            assert held.wait(10)
            assert free_words("x y") == "xy"  # another run, another thread: not held
            assert not handle.done()
            release.set()
            assert handle.result(10) == "abc"
        assert [k for n, k in seen if n == "Held"] == ["start", "chunk", "chunk", "chunk", "end"]
        assert [k for n, k in seen if n == "Free"] == ["start", "chunk", "chunk", "end"]


class TestAsyncSubscribers:
    async def test_async_subscriber_in_order_on_its_loop(self):
        """An async subscriber runs on its loop, one event at a time, in seq order, from any thread."""
        loop_thread = threading.get_ident()
        seen, threads = [], set()
        done = asyncio.Event()

        async def sub(event):
            threads.add(threading.get_ident())
            await asyncio.sleep(0)  # yield inside: order must still hold
            seen.append(event.seq)
            if event.kind == "end" and event.run.parent_id is None:
                done.set()

        with subscribe(sub):
            # produced in a worker thread
            await Words().acall("a b c d")
            await asyncio.wait_for(done.wait(), 5)
        assert seen == list(range(6))
        assert threads == {loop_thread}

    async def test_slow_async_subscriber_drops_oldest_and_counts(self):
        """An async subscriber that lags more than maxsize loses the oldest events, counted; the run is unaffected."""
        seen = []
        done = asyncio.Event()

        async def slow(event):
            seen.append(event.seq)
            if event.kind == "end":
                done.set()

        with subscribe(slow, maxsize=3) as sub:
            # produced synchronously on the loop thread: the subscriber cannot run until we await
            assert Words()("a b c d e f g h") == "abcdefgh"
            await asyncio.wait_for(done.wait(), 5)
        assert seen == [7, 8, 9]  # the last three of start + 8 chunks + end
        assert sub.dropped == 7

    def test_async_subscriber_needs_a_loop(self):
        """Outside a running loop, an async subscriber without loop= is a clear error."""

        async def sub(event):
            pass

        with pytest.raises(UsageError, match="event loop"):
            subscribe(sub)

    async def test_raising_async_subscriber_is_counted(self):
        """An async subscriber that raises is isolated like a sync one."""
        done = asyncio.Event()

        async def bad(event):
            if event.kind == "end":
                done.set()
            raise ValueError("nope")

        with subscribe(bad) as sub:
            Words()("x")
            await asyncio.wait_for(done.wait(), 5)
        assert sub.errors == 3

    async def test_raising_async_subscriber_is_logged_once(self, caplog):
        """Its first failure is logged with its name, later ones only counted; a sync subscriber beside it gets everything."""
        done = asyncio.Event()
        got = []

        async def flaky_async(event):
            if event.kind == "end":
                done.set()
            raise KeyError("nope")

        with (
            caplog.at_level(logging.ERROR, logger="streamtap.bus"),
            subscribe(flaky_async) as sub,
            subscribe(got.append),
        ):
            Words()("a b")
            await asyncio.wait_for(done.wait(), 5)
        assert sub.errors == 4 and len(got) == 4
        logged = [r for r in caplog.records if "flaky_async" in r.getMessage()]
        assert len(logged) == 1 and "KeyError" in logged[0].getMessage()

    async def test_async_subscriber_that_hangs_does_not_hold_the_producer(self):
        """An async subscriber stuck on an event: producers finish anyway; past maxsize the oldest are dropped, counted."""
        stuck, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
        seen = []

        async def hanging(event):
            seen.append((event.run.name, event.seq))
            stuck.set()
            await release.wait()
            if event.kind == "end" and event.run.name == "Second":
                ended.set()

        first, second = type("First", (Words,), {})(), type("Second", (Words,), {})()
        with subscribe(hanging, maxsize=4) as sub:
            first("a")  # 3 events; the subscriber takes the first and hangs on it
            await asyncio.wait_for(stuck.wait(), 5)
            assert await second.acall("a b c d e f g h") == "abcdefgh"  # 10 more events, produced meanwhile
            assert seen == [("First", 0)]
            assert sub.dropped == 2 + 10 - 4  # four kept: the newest
            release.set()
            await asyncio.wait_for(ended.wait(), 5)
        assert seen == [("First", 0), ("Second", 6), ("Second", 7), ("Second", 8), ("Second", 9)]


class TestRawSignals:
    def test_blinker_sender_filtering(self):
        """The raw blinker signals carry the module instance as sender."""
        a, b = Words(), Words()
        got = []

        def recv(sender, event):
            got.append((sender, event.kind))

        bus.signals["end"].connect(recv, sender=a)
        try:
            a("x")
            b("y")
        finally:
            bus.signals["end"].disconnect(recv)
        assert got == [(a, "end")]

    def test_scope_signal_wraps_forward(self):
        """A scope receiver's context manager is entered around forward() and left before End."""
        log = []

        class Scope:
            def __enter__(self):
                log.append(("enter", streamtap.current().run.name))

            def __exit__(self, *exc):
                log.append(("exit",))

        def on_scope(sender, run, context):
            return Scope

        bus.scope_signal.connect(on_scope)
        try:
            with subscribe(lambda e: log.append((e.kind,)), kinds=["start", "end"]):
                Words()("x")
        finally:
            bus.scope_signal.disconnect(on_scope)
        assert log == [("start",), ("enter", "Words"), ("exit",), ("end",)]


def test_a_raising_scope_receiver_still_ends_the_run():
    """A scope receiver that fails after Start cannot leave a run without its End."""

    def broken(sender, run, context):
        raise RuntimeError("scope broke")

    bus.scope_signal.connect(broken)
    try:
        from streamtap.testing import capture_events

        with capture_events() as events, pytest.raises(RuntimeError, match="scope broke"):
            Words()("x")
    finally:
        bus.scope_signal.disconnect(broken)
    assert events.kinds() == ["start", "end"] and events.of("end")[0].status == "error"
