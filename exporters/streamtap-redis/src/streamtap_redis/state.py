"""A conversation's state shared by every process: its running run, its pending interrupt, its runs."""

from __future__ import annotations

import json
import typing as t

from .keys import Keys

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["ChatState", "as_text"]

# Delete KEYS[1] only if it still holds ARGV[1] (a run never clears its successor's claim).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class ChatState:
    """Shared chat state on Redis.

    Args:
        client: a ``redis.asyncio.Redis`` client.
        keys: key names.
        ttl: seconds a chat's state is kept after its last change.
        history: run ids kept per chat.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, *, ttl: float = 86_400.0, history: int = 100) -> None:
        self.client = client
        self.keys = keys
        self.ttl = int(ttl)
        self.history = history

    async def claim(self, chat_id: str, run_id: str) -> str | None:
        """Make ``run_id`` the chat's running run; returns the run already going instead, if any."""
        key = self.keys.active(chat_id)
        if await self.client.set(key, run_id, nx=True, ex=self.ttl):
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(self.keys.history(chat_id), run_id)
            pipe.ltrim(self.keys.history(chat_id), 0, self.history - 1)
            pipe.expire(self.keys.history(chat_id), self.ttl)
            await pipe.execute()
            return None
        current = await self.client.get(key)
        return as_text(current) if current is not None else "starting"

    async def release(self, chat_id: str, run_id: str) -> None:
        """The run ended: the chat has no running run (unless another took its place)."""
        await self.client.eval(_RELEASE, 1, self.keys.active(chat_id), run_id)

    async def active(self, chat_id: str) -> str | None:
        """The chat's running run id."""
        value = await self.client.get(self.keys.active(chat_id))
        return as_text(value) if value is not None else None

    async def set_pending(self, chat_id: str, record: t.Mapping[str, t.Any]) -> None:
        """Keep the interrupt the chat's run paused at (the next message answers it)."""
        await self.client.set(self.keys.pending(chat_id), json.dumps(record, separators=(",", ":")), ex=self.ttl)

    async def take_pending(self, chat_id: str) -> dict[str, t.Any] | None:
        """Remove and return the pending interrupt record."""
        return _record(await self.client.getdel(self.keys.pending(chat_id)))

    async def pending(self, chat_id: str) -> dict[str, t.Any] | None:
        """The pending interrupt record, left in place."""
        return _record(await self.client.get(self.keys.pending(chat_id)))

    async def has_pending(self, chat_id: str) -> bool:
        """Whether an interrupt waits for an answer."""
        return bool(await self.client.exists(self.keys.pending(chat_id)))

    async def runs(self, chat_id: str) -> list[str]:
        """The chat's run ids, newest first."""
        return [as_text(r) for r in await self.client.lrange(self.keys.history(chat_id), 0, -1)]


def _record(raw: bytes | str | None) -> dict[str, t.Any] | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}


def as_text(value: bytes | str) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else value
