"""The chat endpoints' runs, shared by every web process through Redis; the runs go to workers.

:class:`RedisChatService` takes the place of :class:`streamtap.web.service.ChatService`
(``create_app(..., chat_service=RedisChatService.factory(client))``). A chat
request becomes a run request on ``{prefix}:requests``; the chat's running
run, its pending interrupt and its runs are Redis keys; the answer is read
from the run's log. So any web process can stream, resume, stop, or take the
answer to an interrupt for any chat, whichever process started it and
whichever worker runs it.
"""

from __future__ import annotations

import asyncio
import secrets
import typing as t

from streamtap import propagation
from streamtap.web.chat import BadRequest, ChatRequest
from streamtap.web.service import STOP_REQUEST, ActiveRun, ChatService

from .keys import Keys
from .requests import RunRequest
from .state import ChatState, as_text

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

    from streamtap import ModuleBase
    from streamtap.web.store import EventStore

__all__ = ["RedisChatService", "RemoteHandle"]


class _Token:
    """The part of a cancel token the web tier reads: why the run was stopped."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None


class RemoteHandle:
    """A run going in another process, as the web endpoints see it: its id, and a way to stop it."""

    def __init__(self, run_id: str, service: RedisChatService) -> None:
        self.run_id = run_id
        self.token = _Token()
        self._service = service

    def cancel(self, reason: str | None = None) -> bool:
        """Ask the worker to stop the run (the stop key and the stop channel); returns ``False`` if asked already."""
        if self.token.reason is not None:
            return False
        self.token.reason = reason or "cancelled"
        self._service.stop_later(self.run_id)
        return True


class RedisChatService(ChatService):
    """Conversations in Redis; runs are requests that workers run.

    Args:
        module_or_factory: the module (or factory); used for nothing in the web process
            (the workers build their own) but checked like :class:`ChatService` does.
        store: the :class:`~streamtap_redis.RedisEventStore` (possibly wrapped by the app).
        client: a ``redis.asyncio.Redis`` client.
        keys: key names (prefix).
        to_input: builds the module's input from a request (it must be JSON: it crosses Redis).
        stop_wait: seconds ``stop`` waits for the run to end.
    """

    def __init__(
        self,
        module_or_factory: ModuleBase | t.Callable[[], ModuleBase],
        store: EventStore,
        *,
        client: aioredis.Redis,
        keys: Keys | None = None,
        stop_wait: float = 10.0,
        **options: t.Any,
    ) -> None:
        options.pop("resume", None)  # the worker resumes interrupted runs itself
        super().__init__(module_or_factory, store, **options)
        self.client = client
        self.keys = keys or Keys()
        self.state = ChatState(client, self.keys)
        self.stop_wait = stop_wait
        self._stopping: set[asyncio.Task[None]] = set()

    @classmethod
    def factory(
        cls, client: aioredis.Redis, keys: Keys | None = None, **settings: t.Any
    ) -> t.Callable[..., RedisChatService]:
        """A ``chat_service`` for :func:`streamtap.web.create_app` using ``client``."""

        def make(module_or_factory: t.Any, store: EventStore, **options: t.Any) -> RedisChatService:
            return cls(module_or_factory, store, client=client, keys=keys, **settings, **options)

        return make

    # -- runs -------------------------------------------------------------------

    async def start(self, request: ChatRequest) -> ActiveRun:
        """Enqueue the run answering ``request`` (or the answer to the chat's pending interrupt).

        Raises:
            BadRequest: 409 when the chat already has a run going (on any process); 422 when
                the module's input is not JSON.
        """
        chat_id = request.chat_id
        run_id = secrets.token_hex(8)
        running = await self.state.claim(chat_id, run_id)
        if running is not None:
            msg = f"Chat {chat_id!r} already has a run going ({running}). Stop it with POST /api/chat/{chat_id}/stop or wait for it to finish."
            raise BadRequest(409, msg)
        record = None
        try:
            record = await self.state.take_pending(chat_id)
            body = request.body
            if record is not None:
                answer = body.get("resume", request.last_user_text)
                run_request = RunRequest(
                    run_id, chat_id, None, {"record": record, "answer": answer}, propagation.inject()
                )
            else:
                run_request = RunRequest(run_id, chat_id, self.to_input(request), None, propagation.inject())
            try:
                payload = run_request.to_json()
            except (TypeError, ValueError) as exc:
                raise BadRequest(
                    422, f"The module's input for this request is not JSON ({exc}); a worker could not receive it."
                ) from None
            run = ActiveRun(
                run_id=run_id,
                chat_id=chat_id,
                message_id=request.message_id or "msg-" + secrets.token_hex(8),
                handle=t.cast(t.Any, RemoteHandle(run_id, self)),
                verbose=bool(body.get("verbose", True)),
                stream_text=bool(body.get("stream", True)),
                resumed=record,
            )
            await self.store.create(run_id)
            meta: t.Any = {
                "chat": chat_id,
                "message": run.message_id,
                "verbose": int(run.verbose),
                "stream": int(run.stream_text),
            }
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.meta(run_id), mapping=meta)
            pipe.xadd(self.keys.requests, {"r": payload})
            await pipe.execute()
        except BaseException as exc:
            await self.state.release(chat_id, run_id)
            if record is not None:
                await self.state.set_pending(chat_id, record)
            if isinstance(exc, BadRequest):
                raise
            if isinstance(exc, Exception):
                raise BadRequest(
                    503, f"Redis failed ({type(exc).__name__}); try again. The details are in the server log."
                ) from exc
            raise
        return run

    async def _run(self, chat_id: str, run_id: str) -> ActiveRun | None:
        meta = await self.client.hgetall(self.keys.meta(run_id))
        if not meta or as_text(meta.get(b"chat", b"")) != chat_id:
            return None
        run = ActiveRun(
            run_id=run_id,
            chat_id=chat_id,
            message_id=as_text(meta.get(b"message", b"")) or "msg-" + run_id,
            handle=t.cast(t.Any, RemoteHandle(run_id, self)),
            verbose=meta.get(b"verbose", b"1") == b"1",
            stream_text=meta.get(b"stream", b"1") == b"1",
        )
        status = meta.get(b"status")
        run.status = as_text(status) if status else None
        return run

    async def run_of(self, chat_id: str, run_id: str) -> ActiveRun | None:  # type: ignore[override]
        """A run of this chat, going or finished while its log is kept."""
        return await self._run(chat_id, run_id)

    async def active(self, chat_id: str) -> ActiveRun | None:  # type: ignore[override]
        """The chat's running run (started by any process)."""
        run_id = await self.state.active(chat_id)
        return await self._run(chat_id, run_id) if run_id else None

    async def dismiss_pending(self, chat_id: str) -> str | None:  # type: ignore[override]
        """Drop the chat's pending interrupt when no run is going; returns its id."""
        if await self.state.active(chat_id) is not None:
            return None
        record = await self.state.take_pending(chat_id)
        if record is None:
            return None
        return str(record.get("id") or record.get("pause_id") or "pending")

    async def pending(self, chat_id: str) -> dict[str, t.Any] | None:  # type: ignore[override]
        """The interrupt record the chat waits an answer for, while no run is going in it (on any process)."""
        if await self.state.active(chat_id) is not None:
            return None
        return await self.state.pending(chat_id)

    async def has_pending(self, chat_id: str) -> bool:  # type: ignore[override]
        """Whether the chat waits for the answer to an interrupt."""
        return await self.state.has_pending(chat_id)

    def stop_later(self, run_id: str) -> None:
        """Send a stop for ``run_id`` from a task (for synchronous callers such as :meth:`RemoteHandle.cancel`)."""
        task = asyncio.get_running_loop().create_task(self.request_stop(run_id))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def request_stop(self, run_id: str) -> None:
        """Stop a run wherever it runs: the key (a stop before the worker took the request wins) and the channel."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.stop(run_id), "1", ex=86_400)
        pipe.publish(self.keys.stop_channel, run_id)
        await pipe.execute()

    async def stop(self, chat_id: str, *, wait: float | None = None) -> ActiveRun | None:
        """Stop the chat's run in whichever worker runs it, and wait (``stop_wait`` s) for it to end."""
        run = await self.active(chat_id)
        if run is None:
            return None
        t.cast(RemoteHandle, run.handle).token.reason = STOP_REQUEST
        await self.request_stop(run.run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.stop_wait if wait is None else wait)
        after = -1
        while loop.time() < deadline:
            res = await self.store.read(run.run_id, after)
            if res is None or res.finished:
                break
            if res.events:
                after = res.events[-1]["seq"]
                continue
            await self.store.wait(run.run_id, after, max(0.01, deadline - loop.time()))
        status = await self.client.hget(self.keys.meta(run.run_id), "status")
        run.status = as_text(status) if status else None
        return run

    async def aclose(self) -> None:
        """Nothing runs here; wait for pending stop requests."""
        if self._stopping:
            await asyncio.wait(list(self._stopping), timeout=5)
