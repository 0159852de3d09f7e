"""What every flow piece shares: wiring (``a >> b``, ``a - "x" >> b``), actions, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import typing as t

from ..exceptions import RunCancelled, StreamtapError, UsageError
from ..module import ModuleBase

__all__ = ["BaseNode", "FlowTimeout"]

DEFAULT = "default"


class FlowTimeout(StreamtapError, TimeoutError):
    """A node or a flow ran longer than its ``timeout``; it was cancelled.

    The timed-out run ends ``cancelled`` (its error says why); the flow that
    enforced the timeout ends ``error`` with this exception.
    """


class _Slot:
    """Where a node leaves the action its ``post`` returned, for the flow that runs it."""

    __slots__ = ("action",)

    def __init__(self) -> None:
        self.action: str | None = None


_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("streamtap_flow_slot", default=None)


def take_slot() -> _Slot | None:
    """The slot of the flow step running this node (hidden from the node's own children)."""
    slot = _slot.get()
    if slot is not None:
        _slot.set(None)
    return slot


def check_action(node: ModuleBase, action: t.Any) -> str | None:
    """Validate what ``post`` returned."""
    if action is None or isinstance(action, str):
        return action
    msg = (
        f"{node._run_name()}.post() returned {action!r} ({type(action).__name__}); "
        "post must return an action name (a str) or None for 'default'."
    )
    raise UsageError(msg)


class _Transition:
    """``node - "action"``: waiting for ``>> target``."""

    __slots__ = ("action", "source")

    def __init__(self, source: BaseNode, action: str) -> None:
        self.source = source
        self.action = action

    def __rshift__(self, target: BaseNode) -> BaseNode:
        return self.source.next(target, self.action)

    def __repr__(self) -> str:
        return f"<{self.source._run_name()} - {self.action!r} >> ?>"


class BaseNode(ModuleBase):
    """A step of a graph flow, wired with ``a >> b`` (action ``"default"``) and ``a - "action" >> b``.

    Attributes:
        timeout: seconds this step may run inside a flow before it is cancelled
            (enforced by the flow that runs it; a root flow enforces its own).
    """

    kind = "node"
    timeout: float | None = None

    @property
    def successors(self) -> dict[str, BaseNode]:
        """Action -> next node."""
        try:
            return self.__dict__["_successors"]  # type: ignore[no-any-return]
        except KeyError:
            return self.__dict__.setdefault("_successors", {})  # type: ignore[no-any-return]

    def next(self, node: BaseNode, action: str = DEFAULT) -> BaseNode:
        """Go to ``node`` after this one when ``post`` returns ``action``; returns ``node`` (for chaining).

        Raises:
            UsageError: ``node`` is not a flow node, ``action`` is not a non-empty
                string, or this node already goes elsewhere on ``action``.
        """
        if not isinstance(node, BaseNode):
            what = "a node class (instantiate it: Node())" if isinstance(node, type) else f"{node!r}"
            msg = f"{self._run_name()} >> {what}: a flow can only go to a node or a flow (a BaseNode instance)."
            raise UsageError(msg)
        if not isinstance(action, str) or not action:
            msg = f"Action {action!r} on {self._run_name()}: an action must be a non-empty string."
            raise UsageError(msg)
        old = self.successors.get(action)
        if old is not None and old is not node:
            msg = (
                f"{self._run_name()} already goes to {old._run_name()} on action {action!r}; "
                f"wiring it to {node._run_name()} too is ambiguous. Use another action name."
            )
            raise UsageError(msg)
        self.successors[action] = node
        return node

    def __rshift__(self, other: BaseNode) -> BaseNode:
        return self.next(other)

    def __sub__(self, action: str) -> _Transition:
        if not isinstance(action, str) or not action:
            msg = f"{self._run_name()} - {action!r}: an action must be a non-empty string, as in node - 'approve' >> other."
            raise UsageError(msg)
        return _Transition(self, action)


def _timeout_reason(node: ModuleBase, timeout: float) -> str:
    return f"{node._run_name()} timed out after {timeout} s"


def call_sync(node: ModuleBase, arg: t.Any, timeout: float | None) -> t.Any:
    """Run ``node(arg)`` as a child run, cancelling it after ``timeout`` seconds."""
    if timeout is None:
        return node(arg)
    handle = node.buffered(1, "drop_oldest").start(arg)
    try:
        return handle.result(timeout)
    except TimeoutError:
        if handle.done():  # the node's own TimeoutError
            raise
        reason = _timeout_reason(node, timeout)
        handle.cancel(reason)
        try:
            return handle.result()  # it stops at its next chunk or cancellation check
        except RunCancelled:
            raise FlowTimeout(f"{reason}; it was cancelled.") from None


async def call_async(node: ModuleBase, arg: t.Any, timeout: float | None) -> t.Any:
    """Await ``node.acall(arg)`` as a child run, cancelling it after ``timeout`` seconds."""
    if timeout is None:
        return await node.acall(arg)
    handle = node.buffered(1, "drop_oldest").astart(arg)
    try:
        return await asyncio.wait_for(handle.wait(), timeout)
    except asyncio.TimeoutError:
        if handle.done():  # the node's own TimeoutError
            raise
        reason = _timeout_reason(node, timeout)
        handle.cancel(reason)
        with contextlib.suppress(RunCancelled):
            return await handle
        raise FlowTimeout(f"{reason}; it was cancelled.") from None
    except asyncio.CancelledError:
        handle.cancel("the flow running it was cancelled")
        with contextlib.suppress(BaseException):
            await handle
        raise
