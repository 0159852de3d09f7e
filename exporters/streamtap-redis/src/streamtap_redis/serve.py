"""Web processes and worker processes on one Redis: what ``streamtap serve --redis`` and ``streamtap worker`` run.

* :func:`create_redis_app` -- the web app with its events, chats and runs in Redis.
* :func:`app_from_env` -- the same, configured by ``STREAMTAP_SERVE_*`` variables
  (uvicorn's ``--workers`` processes import it by name).
* :func:`run_worker` -- a worker process until SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import typing as t

from streamtap import ModuleBase

from .chat import RedisChatService
from .connection import client_for, connect
from .keys import Keys
from .store import RedisEventStore
from .tasks import cancel_and_wait
from .worker import Worker

if t.TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

__all__ = ["app_from_env", "create_redis_app", "run_worker"]

log = logging.getLogger("streamtap_redis")

Target = ModuleBase | t.Callable[[], ModuleBase]


def create_redis_app(
    target: Target,
    url: str,
    *,
    prefix: str = "streamtap",
    run_in_process: bool = False,
    concurrency: int = 8,
    claim_timeout: float = 30.0,
    **options: t.Any,
) -> Starlette:
    """The web app (:func:`streamtap.web.create_app`) with its run logs, chats and runs on Redis.

    Args:
        target: the module or zero-argument factory (run here only with ``run_in_process``).
        url: the Redis URL (``redis://``, ``rediss://``); checked when the app starts.
        prefix: the key prefix (several apps can share one Redis).
        run_in_process: also run requests in this process (a worker inside the web process).
        concurrency: with ``run_in_process``, runs going at once at most.
        claim_timeout: with ``run_in_process``, the worker's claim timeout.
        options: the rest of :func:`~streamtap.web.create_app`'s options (``token``, ...).
    """
    from streamtap.web import create_app

    keys = Keys(prefix)
    client = client_for(url)
    store = RedisEventStore(client, keys)
    app = create_app(target, store=store, chat_service=RedisChatService.factory(client, keys), **options)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: t.Any) -> t.AsyncIterator[t.Any]:
        checked = await connect(url)  # a clear error naming the URL when Redis is not there
        await checked.aclose()
        worker = (
            Worker(target, client, keys, concurrency=concurrency, claim_timeout=claim_timeout, store=store)
            if run_in_process
            else None
        )
        task = asyncio.ensure_future(worker.run()) if worker is not None else None
        try:
            async with inner(a) as state:
                yield state
        finally:
            if worker is not None and task is not None:
                await worker.aclose()
                _raise_failure(await cancel_and_wait(task))
            await store.aclose()
            await client.aclose()

    app.router.lifespan_context = lifespan
    app.state.redis = client
    return app


def app_from_env() -> Starlette:
    """:func:`create_redis_app` from ``STREAMTAP_SERVE_TARGET``, ``_REDIS``, ``_PREFIX``, ``_TOKEN``, ``_HOST``, ``_IN_PROCESS``, ``_ALLOWED_HOSTS``, ``_ALLOWED_ORIGINS`` (JSON lists)."""
    from streamtap.serving import load_target
    from streamtap.web.security import allow_serving

    env = os.environ
    target = load_target(env["STREAMTAP_SERVE_TARGET"])
    app = create_redis_app(
        target,
        env["STREAMTAP_SERVE_REDIS"],
        prefix=env.get("STREAMTAP_SERVE_PREFIX", "streamtap"),
        run_in_process=env.get("STREAMTAP_SERVE_IN_PROCESS") == "1",
        token=env.get("STREAMTAP_SERVE_TOKEN") or None,
    )
    allow_serving(
        app,
        env.get("STREAMTAP_SERVE_HOST", "127.0.0.1"),
        allowed_hosts=json.loads(env.get("STREAMTAP_SERVE_ALLOWED_HOSTS") or "[]"),
        allowed_origins=json.loads(env.get("STREAMTAP_SERVE_ALLOWED_ORIGINS") or "[]"),
    )
    return app


async def run_worker(
    target: Target,
    url: str,
    *,
    prefix: str = "streamtap",
    concurrency: int = 8,
    claim_timeout: float = 30.0,
    grace: float = 10.0,
    ready: t.Callable[[Worker], None] | None = None,
) -> None:
    """Run a worker until SIGTERM or SIGINT: then it takes no new requests and finishes (or, after ``grace``, cancels) its runs.

    Raises:
        RedisUnavailable: Redis did not answer at ``url`` (the message names it, password masked).
    """
    client = await connect(url)
    worker = Worker(target, client, Keys(prefix), concurrency=concurrency, claim_timeout=claim_timeout, grace=grace)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(worker.run())
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    await worker.ensure_group()
    if ready is not None:
        ready(worker)
    waiter = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    await worker.aclose()
    waiter.cancel()
    _raise_failure(await cancel_and_wait(task))
    await worker.store.aclose()
    await client.aclose()


def _raise_failure(task: asyncio.Future[t.Any]) -> None:
    """Raise what ``task`` failed with (a worker loop that broke), not its cancellation."""
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise t.cast(BaseException, task.exception())
