"""Flows: compose modules and nodes, stream from every step, pause for humans, cancel anywhere.

* Graphs in the PocketFlow style: :class:`Node` (``prep`` / ``exec`` / ``post``
  over a shared store), ``a >> b``, ``a - "action" >> b``, loops, nested
  flows, :class:`BatchNode` / :class:`ParallelBatchNode`, and their async
  variants, run by :class:`Flow` / :class:`AsyncFlow`.
* Value pipelines: :class:`Sequential` and :class:`Parallel` (and async variants).

Every flow is a :class:`~streamtap.ModuleBase` (kind ``flow``) and every
step a child run (kind ``node`` for nodes), so ``flow.stream(shared)`` shows
each node's chunks with its identity while the flow runs. Orchestration is
iterative: long loops and big batches run with a flat stack. A node can
:func:`~streamtap.interrupts.interrupt` and the flow be resumed later with
``flow.resume(record, answer)``. See ``docs/guide/flows.md``.
"""

from __future__ import annotations

from ..interrupts import Interrupt, Resume, interrupt
from ._base import BaseNode, FlowTimeout, FunctionNode, function_node
from ._container import Container
from .compose import AsyncParallel, AsyncSequential, Parallel, Sequential
from .graph import AsyncFlow, Flow
from .nodes import AsyncBatchNode, AsyncNode, AsyncParallelBatchNode, BatchNode, Node, ParallelBatchNode

__all__ = [
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncNode",
    "AsyncParallel",
    "AsyncParallelBatchNode",
    "AsyncSequential",
    "BaseNode",
    "BatchNode",
    "Container",
    "Flow",
    "FlowTimeout",
    "FunctionNode",
    "Interrupt",
    "Node",
    "Parallel",
    "ParallelBatchNode",
    "Resume",
    "Sequential",
    "function_node",
    "interrupt",
]
