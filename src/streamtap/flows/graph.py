"""Graph flows in the PocketFlow style: ``a >> b``, ``a - "action" >> b``, loops, nested flows.

The orchestration is a flat ``while`` loop: a loop of 100,000 node
executions runs with a constant stack and constant memory. Every node is a
child run (kind ``node``) of the flow's run (kind ``flow``), so its chunks
stream with its identity while the flow runs; the flow's output is what the
last node returned.
"""

from __future__ import annotations

import contextlib
import typing as t

from ..exceptions import UsageError
from ..interrupts._frames import handing
from ..interrupts.errors import StalePauseError
from ..interrupts.records import Interrupt
from ._base import DEFAULT, BaseNode, _Slot, _slot, as_node, call_async, call_sync, take_slot
from ._container import Call, Container, check_member

__all__ = ["AsyncFlow", "Flow"]


class Flow(Container):
    """A graph of nodes run from ``start``, following the actions their ``post`` returns.

    Args:
        start: the first node (any :class:`~streamtap.flows.BaseNode`, flows included, or a plain
            function: see :class:`~streamtap.flows.FunctionNode`).
        name: the run name (default: the class name).
        store: a pause store (see :class:`~streamtap.flows.Container`).
        version: the flow's version in pause records (default: a hash of its wiring).
        timeout: seconds the whole flow may run (enforced by itself as a root
            run, or by the flow it is a node of).

    The flow ends when a node has no successors. A node that has successors
    but none for the action it returned is a wiring mistake and raises
    :class:`~streamtap.UsageError`.

    Example::

        plan, act = Plan(), Act()
        plan - "act" >> act
        act >> plan                     # loop back
        flow = Flow(plan)
        for ev in flow.stream({"goal": "..."}).filter(kinds="chunk"):
            print(ev.run.name, ev.delta)   # "Plan", "I will ..."
    """

    _frame_kind = "graph"
    _sync = True

    def __init__(
        self,
        start: BaseNode | t.Callable[..., t.Any] | None = None,
        *,
        name: str | None = None,
        store: t.Any = None,
        version: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.start_node = as_node(start)
        self._configure(name, store, version, timeout)

    # -- structure ----------------------------------------------------------

    def nodes(self) -> list[BaseNode]:
        """Every node reachable from ``start``, breadth first (the order pause records index)."""
        if self.start_node is None:
            msg = f"{self._run_name()} has no start node; create it as Flow(start_node)."
            raise UsageError(msg)
        if not isinstance(self.start_node, BaseNode):
            msg = f"{self._run_name()}'s start must be a node or a flow (a BaseNode instance), got {self.start_node!r}."
            raise UsageError(msg)
        seen = {id(self.start_node)}
        order = [self.start_node]
        i = 0
        while i < len(order):
            for nxt in order[i].successors.values():
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    order.append(nxt)
            i += 1
        return order

    def _structure(self) -> t.Any:
        order = self.nodes()
        index = {id(n): i for i, n in enumerate(order)}
        return [
            [
                type(n).__qualname__,
                n._run_name(),
                n.flow_version() if isinstance(n, Container) else None,
                sorted((a, index[id(m)]) for a, m in n.successors.items()),
            ]
            for n in order
        ]

    def _prepare(self) -> list[BaseNode]:
        order = self.nodes()
        for node in order:
            if node is self:
                msg = f"{self._run_name()} is one of its own nodes; a flow cannot contain itself."
                raise UsageError(msg)
            check_member(self, node, self._sync)
        return order

    def _resume_at(self, call: Call, order: list[BaseNode]) -> tuple[BaseNode, t.Any]:
        frame = call.frame
        if frame is None:
            return t.cast(BaseNode, self.start_node), None
        at = frame.get("at")
        if not isinstance(at, int) or not 0 <= at < len(order) or order[at]._run_name() != frame.get("node"):
            msg = f"The pause record resumes {self._run_name()} at node {frame.get('node')!r} (#{at}), which this flow does not have there."
            raise StalePauseError(msg)
        return order[at], frame.get("child")

    def _next(self, node: BaseNode, action: str | None) -> BaseNode | None:
        succ = node.successors
        if not succ:
            return None
        nxt = succ.get(action or DEFAULT)
        if nxt is None:
            msg = (
                f"{node._run_name()} returned action {action or DEFAULT!r}, but it only goes on {sorted(succ)}. "
                f"Wire it ({node._run_name()} - {action or DEFAULT!r} >> next_node) or return one of those."
            )
            raise UsageError(msg)
        return nxt

    def _paused(self, call: Call, exc: Interrupt, order: list[BaseNode], node: BaseNode, shared: t.Any) -> Interrupt:
        at = next(i for i, n in enumerate(order) if n is node)
        state = {"kind": "graph", "at": at, "node": node._run_name(), "child": exc.state}
        return call.paused(exc, state, shared)

    # -- running -------------------------------------------------------------

    @contextlib.contextmanager
    def _walking(self, shared: t.Any) -> t.Iterator[_Walk]:
        """Open the flow's call for one run (sync or async): the caller arms it and runs the nodes."""
        outer = take_slot()
        order = self._prepare()
        call = Call(self, shared)
        with call:
            walk = _Walk(self, call, order)
            with call.raising_timeouts():
                yield walk
            if outer is not None:
                outer.action = walk.last

    def forward(self, shared: t.Any) -> t.Any:
        """Run the graph on the shared store (or a :class:`~streamtap.interrupts.Resume`)."""
        with self._walking(shared) as walk:
            walk.call.arm()
            while walk.node is not None:
                with walk.step() as node:
                    walk.output = call_sync(node, walk.shared, node.timeout)
        return walk.output


class AsyncFlow(Flow):
    """A :class:`Flow` for async code: runs :class:`~streamtap.flows.AsyncNode` and sync nodes alike.

    Sync nodes run in the SDK's thread pool (``blocking = True``, the default)
    or inline on the loop (``blocking = False``).
    """

    _sync = False

    async def forward(self, shared: t.Any) -> t.Any:
        """Run the graph on the shared store (or a :class:`~streamtap.interrupts.Resume`)."""
        with self._walking(shared) as walk:
            walk.call.arm_async()
            while walk.node is not None:
                with walk.step() as node:
                    walk.output = await call_async(node, walk.shared, node.timeout)
        return walk.output


class _Walk:
    """Where one run of a flow is: everything of :meth:`Flow.forward` but calling the nodes.

    Shared by :class:`Flow` and :class:`AsyncFlow`: :meth:`step` wraps one node
    call (cancellation check, the node's action slot, the pause it may raise)
    and moves on to the next node.
    """

    __slots__ = ("_child", "call", "flow", "last", "node", "order", "output", "shared")

    def __init__(self, flow: Flow, call: Call, order: list[BaseNode]) -> None:
        self.flow = flow
        self.call = call
        self.order = order
        self.shared = call.input
        self.node: BaseNode | None
        self.node, self._child = flow._resume_at(call, order)
        self.output: t.Any = None
        self.last: str | None = None

    @contextlib.contextmanager
    def step(self) -> t.Iterator[BaseNode]:
        """Run the current node inside the ``with`` block (it yields the node), then go to the next one."""
        node = t.cast(BaseNode, self.node)
        ctx = self.call.ctx
        if ctx.token.cancelled:
            ctx.raise_if_cancelled()
        slot = _Slot()
        tok = _slot.set(slot)
        try:
            with handing(self._child):
                yield node
        except Interrupt as exc:
            raise self.flow._paused(self.call, exc, self.order, node, self.shared) from None
        finally:
            _slot.reset(tok)
        self._child = None
        self.last = slot.action
        self.node = self.flow._next(node, self.last)
