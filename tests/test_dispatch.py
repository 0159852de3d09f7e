"""Dispatch: events reach sinks and subscribers in seq order, lock-free for one thread, locked once a second emits."""

from __future__ import annotations

import threading
import time
import typing as t

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamtap
from streamtap import ModuleBase
from streamtap.dispatch import Tree
from streamtap.testing import capture_events, check_invariants

DEADLINE = 10.0


class Child(ModuleBase):
    """Streams ``n`` chunks."""

    def forward(self, n: int) -> t.Iterator[str]:
        for i in range(n):
            yield f"{i} "


class Fan(ModuleBase):
    """Streams itself while threads emit into its tree: child modules, and chunks on this very run."""

    def forward(self, plan: list[tuple[str, int]], own: int) -> t.Iterator[str]:
        ctx = streamtap.current()
        assert ctx is not None
        child = Child()

        def work(how: str, n: int) -> None:
            if how == "child":
                child(n)
            else:  # the parent's own RunContext, used from another thread
                for i in range(n):
                    ctx.chunk(f"t{i} ")

        threads = [threading.Thread(target=streamtap.wrap(work), args=step) for step in plan]
        for th in threads:
            th.start()
        for i in range(own):
            yield f"own{i} "
        for th in threads:
            th.join(DEADLINE)
            assert not th.is_alive()


plans = st.lists(st.tuples(st.sampled_from(["child", "same-run"]), st.integers(0, 40)), min_size=0, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, own=st.integers(0, 60), maxsize=st.sampled_from([2, 16, 1024]))
def test_several_threads_into_one_tree_keep_the_invariants(plan: list[tuple[str, int]], own: int, maxsize: int) -> None:
    """Threads emitting into one tree: gap-free seq in delivery order, in the stream and in a subscriber alike."""
    with capture_events() as seen:
        stream = Fan().buffered(maxsize).stream(plan, own)
        read = list(stream)
    check_invariants(read)
    check_invariants(seen)
    assert [e.seq for e in read] == [e.seq for e in seen]
    chunks = [e for e in read if e.kind == "chunk"]
    assert len(chunks) == own + sum(n for _, n in plan)


def test_one_thread_never_shares_the_tree() -> None:
    """A tree fed by one thread stays unshared (no lock taken); a second emitting thread shares it."""
    trees: list[Tree] = []

    class Probe(ModuleBase):
        def forward(self, other_thread: bool) -> t.Iterator[str]:
            ctx = streamtap.current()
            assert ctx is not None
            yield "a"
            trees.append(ctx.tree())
            if other_thread:
                th = threading.Thread(target=streamtap.wrap(lambda: ctx.chunk("b")))
                th.start()
                th.join(DEADLINE)
            yield "c"

    assert "".join(Probe().stream(False).text()) == "ac"
    assert trees[-1].shared is False
    events = list(Probe().stream(True))
    check_invariants(events)
    assert trees[-1].shared is True


def test_a_second_thread_waits_for_the_owners_delivery_in_flight() -> None:
    """While the owner is inside a delivery, another thread's event is delivered only after it (seq order)."""
    in_delivery = threading.Event()
    other_started = threading.Event()
    order: list[int] = []

    class Owner(ModuleBase):
        def forward(self) -> t.Iterator[str]:
            ctx = streamtap.current()
            assert ctx is not None

            def other() -> None:
                assert in_delivery.wait(DEADLINE)
                other_started.set()
                ctx.chunk("from the other thread")

            th = threading.Thread(target=streamtap.wrap(other))
            th.start()
            yield "first"
            th.join(DEADLINE)
            assert not th.is_alive()

    def slow(ev: streamtap.Event) -> None:
        if ev.kind == "chunk" and ev.delta == "first":
            in_delivery.set()
            assert other_started.wait(DEADLINE)
            # Wait until the other thread has shared the tree: it is then emitting, and must wait for this
            # delivery to end before numbering and delivering its own event.
            ctx = streamtap.current()
            assert ctx is not None
            tree = ctx.tree()
            deadline = time.monotonic() + DEADLINE
            while not tree.shared:
                assert time.monotonic() < deadline, "the other thread never emitted"
                time.sleep(0.001)

    with streamtap.subscribe(slow, kinds="chunk"), streamtap.subscribe(lambda ev: order.append(ev.seq)):
        Owner()()
    assert order == sorted(order)
    assert order == list(range(len(order)))


def test_every_later_sharing_thread_also_waits_for_the_owners_delivery_in_flight() -> None:
    """A third thread that finds the tree already shared still waits for the owner's unlocked delivery (seq order)."""
    in_delivery, release = threading.Event(), threading.Event()
    delivered: list[tuple[int, str]] = []

    class Quiet(ModuleBase):
        def forward(self) -> None:
            return None

    def blocking(ev: streamtap.Event) -> None:
        if ev.kind == "chunk" and ev.delta == "owner":
            in_delivery.set()
            assert release.wait(DEADLINE)

    with (
        streamtap.subscribe(blocking, kinds="chunk"),
        streamtap.subscribe(lambda ev: delivered.append((ev.seq, ev.delta)), kinds="chunk"),
    ):
        run = Quiet().begin(parent=None)
        ctx = run.context
        tree = ctx.tree()
        first = threading.Thread(target=ctx.chunk, args=("first sharer",))
        second = threading.Thread(target=ctx.chunk, args=("second sharer",))

        def sharers() -> None:
            assert in_delivery.wait(DEADLINE)
            first.start()  # shares the tree, then waits for the owner's delivery in flight
            deadline = time.monotonic() + DEADLINE
            while not tree.shared:
                assert time.monotonic() < deadline, "the first thread never shared the tree"
                time.sleep(0.001)
            second.start()  # finds the tree shared: it must wait too, not deliver now
            second.join(0.5)  # long enough for a thread that does not wait to deliver
            release.set()

        helper = threading.Thread(target=sharers)
        helper.start()
        ctx.chunk("owner")  # this thread owns the tree: unlocked, held in `blocking` until released
        for th in (helper, first, second):
            th.join(DEADLINE)
            assert not th.is_alive()
        run.end()
    assert delivered[0][1] == "owner", delivered
    assert [seq for seq, _ in delivered] == sorted(seq for seq, _ in delivered), delivered
