"""What every flow piece shares: wiring (``a >> b``, ``a - "x" >> b``), actions, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import typing as t

from ..events import RunKind
from ..exceptions import RunCancelled, StreamtapError, UsageError
from ..module import Configured, ModuleBase

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

    def __rshift__(self, target: BaseNode | t.Callable[..., t.Any]) -> BaseNode:
        return self.source.next(target, self.action)

    def __repr__(self) -> str:
        return f"<{self.source._run_name()} - {self.action!r} >> ?>"


class BaseNode(ModuleBase):
    """A step of a graph flow, wired with ``a >> b`` (action ``"default"``) and ``a - "action" >> b``.

    Attributes:
        timeout: seconds this step may run inside a flow before it is cancelled
            (enforced by the flow that runs it; a root flow enforces its own).
    """

    kind: RunKind = "node"
    timeout: float | None = None

    @property
    def successors(self) -> dict[str, BaseNode]:
        """Action -> next node."""
        try:
            return self.__dict__["_successors"]  # type: ignore[no-any-return]
        except KeyError:
            return self.__dict__.setdefault("_successors", {})  # type: ignore[no-any-return]

    def next(self, node: BaseNode | t.Callable[..., t.Any], action: str = DEFAULT) -> BaseNode:
        """Go to ``node`` after this one when ``post`` returns ``action``; returns ``node`` (for chaining).

        ``node`` may be a plain function: it becomes a :func:`function_node`.

        Raises:
            UsageError: ``node`` is not a flow node, ``action`` is not a non-empty
                string, or this node already goes elsewhere on ``action``.
        """
        node = as_node(node)
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

    def __rshift__(self, other: BaseNode | t.Callable[..., t.Any]) -> BaseNode:
        return self.next(other)

    def __sub__(self, action: str) -> _Transition:
        if not isinstance(action, str) or not action:
            msg = f"{self._run_name()} - {action!r}: an action must be a non-empty string, as in node - 'approve' >> other."
            raise UsageError(msg)
        return _Transition(self, action)


class FunctionNode(BaseNode):
    """A plain function as a graph node: called with the shared store; a ``str`` it returns is the action.

    Made by :func:`function_node` (and by ``a >> fn`` / ``Flow(fn)``). The
    run is named after the function. A generator function streams what it
    yields; the value of its ``return`` is the action. Any other return
    value (or ``None``) is the node's output and the action is ``"default"``.
    """

    fn: t.Callable[..., t.Any]

    def __init__(self, fn: t.Callable[..., t.Any], *, name: str | None = None, timeout: float | None = None) -> None:
        super().__init__(name=name or getattr(fn, "__name__", None) or type(fn).__name__)
        self.fn = fn
        self.__wrapped__ = fn
        if timeout is not None:
            self.timeout = timeout


def _set_action(result: t.Any, slot: _Slot | None) -> None:
    if slot is not None and isinstance(result, str):
        slot.action = result


class _SyncFunctionNode(FunctionNode):
    def forward(self, shared: t.Any) -> t.Any:
        """Call the function on the shared store."""
        slot = take_slot()
        result = self.fn(shared)
        _set_action(result, slot)
        return result


class _GenFunctionNode(FunctionNode):
    def forward(self, shared: t.Any) -> t.Generator[t.Any, None, t.Any]:
        """Run the generator function on the shared store; what it yields streams."""
        slot = take_slot()
        result = yield from self.fn(shared)
        _set_action(result, slot)
        return result


class _AsyncFunctionNode(FunctionNode):
    async def forward(self, shared: t.Any) -> t.Any:
        """Await the function on the shared store."""
        slot = take_slot()
        result = await self.fn(shared)
        _set_action(result, slot)
        return result


def function_node(fn: t.Callable[..., t.Any], *, name: str | None = None, timeout: float | None = None) -> FunctionNode:
    """A graph node that calls ``fn(shared)``; see :class:`FunctionNode`.

    Raises:
        UsageError: ``fn`` is an async generator function (use an :class:`~streamtap.flows.AsyncNode`).
    """
    import inspect

    if inspect.isasyncgenfunction(fn):
        msg = f"{getattr(fn, '__name__', fn)!r} is an async generator function; as a graph node, write an AsyncNode whose exec_async streams."
        raise UsageError(msg)
    cls: type[FunctionNode]
    if inspect.iscoroutinefunction(fn):
        cls = _AsyncFunctionNode
    elif inspect.isgeneratorfunction(fn):
        cls = _GenFunctionNode
    else:
        cls = _SyncFunctionNode
    return cls(fn, name=name, timeout=timeout)


def as_node(obj: t.Any) -> t.Any:
    """``obj`` as a graph node: nodes as they are, plain functions as :func:`function_node` (anything else unchanged)."""
    if isinstance(obj, (BaseNode, ModuleBase, type)) or not callable(obj):
        return obj
    return function_node(obj)


def _timeout_reason(node: ModuleBase | Configured, timeout: float) -> str:
    return f"{node._run_name()} timed out after {timeout} s"


def call_sync(node: ModuleBase | Configured, arg: t.Any, timeout: float | None) -> t.Any:
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


async def call_async(node: ModuleBase | Configured, arg: t.Any, timeout: float | None) -> t.Any:
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
