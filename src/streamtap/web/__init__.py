"""The web front end: AI SDK UI message streams over SSE, resumable event streams, and a page.

Needs the ``web`` extra (``pip install 'streamtap[web]'``: starlette,
uvicorn, sse-starlette); nothing is imported from them until an app is made.

* :func:`create_app` -- the Starlette app serving a module per conversation.
* :func:`serve` -- run it with uvicorn (loopback by default; a token for anything else).
* :class:`UIMessageMapper` -- streamtap events to UI message stream parts (pure).
* :class:`EventStore` / :class:`MemoryEventStore` -- the per-run event buffer.
"""

from __future__ import annotations

import typing as t

from .._lazy import lazy_getattr

__all__ = ["ChatRequest", "EventStore", "MemoryEventStore", "UIMessageMapper", "create_app", "serve"]

if t.TYPE_CHECKING:  # pragma: no cover
    from .app import create_app
    from .chat import ChatRequest
    from .server import serve
    from .store import EventStore, MemoryEventStore
    from .ui_stream import UIMessageMapper

_LAZY = {
    "create_app": ".app",
    "serve": ".server",
    "ChatRequest": ".chat",
    "EventStore": ".store",
    "MemoryEventStore": ".store",
    "UIMessageMapper": ".ui_stream",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
