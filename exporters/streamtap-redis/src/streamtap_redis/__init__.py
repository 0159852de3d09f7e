"""streamtap on Redis Streams: run logs any process can replay, shared chats, worker processes.

* :func:`connect` -- a ``redis.asyncio`` client for a URL, checked (clear error, password masked).
* :class:`Keys` -- key names under one prefix.
* :class:`RunLog` -- pipelined, outage-tolerant writer of run event logs.
* :class:`RedisEventStore` -- the web tier's :class:`~streamtap.web.store.EventStore` on Redis.
* :class:`RedisChatService` -- conversations shared by every web process; runs go to workers.
* :class:`Worker` -- runs requests from the Redis stream (``streamtap worker``).
* :class:`RedisPublisher` -- a bus subscriber writing the runs of any process to Redis.

Importing this package connects to nothing.
"""

from __future__ import annotations

import importlib
import typing as t

__all__ = [
    "Keys",
    "RedisChatService",
    "RedisEventStore",
    "RedisPublisher",
    "RedisUnavailable",
    "RunLog",
    "Worker",
    "connect",
    "mask_url",
]

if t.TYPE_CHECKING:  # pragma: no cover
    from .chat import RedisChatService
    from .connection import RedisUnavailable, connect, mask_url
    from .keys import Keys
    from .log import RunLog
    from .publisher import RedisPublisher
    from .store import RedisEventStore
    from .worker import Worker

_LAZY = {
    "Keys": ".keys",
    "RedisChatService": ".chat",
    "RedisEventStore": ".store",
    "RedisPublisher": ".publisher",
    "RedisUnavailable": ".connection",
    "RunLog": ".log",
    "Worker": ".worker",
    "connect": ".connection",
    "mask_url": ".connection",
}


def __getattr__(name: str) -> t.Any:
    """Import a public name from its submodule on first use (nothing at package import)."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
