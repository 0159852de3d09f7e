"""streamtap: make every step of an LLM application observable while it runs.

Subclass :class:`ModuleBase`, implement ``forward``, and every call emits
start, chunk, tool and end events on one blinker bus. Iterate a call's events
with ``module.stream(x)``, subscribe callbacks with :func:`subscribe`, and
export traces with the tracing subscriber. Importing streamtap configures
nothing and starts nothing.
"""

from __future__ import annotations

from .bus import Subscription, subscribe, unsubscribe
from .context import Executor, RunContext, current, emit, propagate, wrap
from .events import Chunk, Custom, End, Event, Run, Start, Tool
from .exceptions import RunCancelled, StreamtapError, UsageError
from .module import Delta, ModuleBase
from .steps import step
from .streams import RunHandle, RunStream

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "Custom",
    "Delta",
    "End",
    "Event",
    "Executor",
    "ModuleBase",
    "Run",
    "RunCancelled",
    "RunContext",
    "RunHandle",
    "RunStream",
    "Start",
    "StreamtapError",
    "Subscription",
    "Tool",
    "UsageError",
    "current",
    "emit",
    "propagate",
    "step",
    "subscribe",
    "unsubscribe",
    "wrap",
]
