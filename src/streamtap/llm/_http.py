"""Cancelling HTTP requests of the synchronous client: a cancel stops the wait at once and closes what arrives late."""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import socket
import typing as t

from ..context import RunContext


def _abort_response(response: t.Any) -> None:
    """Close an HTTP response from another thread, waking a read blocked on its socket."""
    try:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            return
    except (OSError, AttributeError):
        pass
    try:
        response.close()
    except Exception:  # pragma: no cover - best effort from another thread  # noqa: S110 - best effort: nothing useful to report here
        pass


@functools.lru_cache(maxsize=1)
def _waiting_pool() -> concurrent.futures.ThreadPoolExecutor:
    # Its own pool: requests waiting here must never queue behind the runs that wait for them.
    return concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="streamtap-http")


def _create_cancellable(ctx: RunContext, create: t.Callable[..., t.Any], kwargs: dict[str, t.Any]) -> t.Any:
    """``create(**kwargs)``, but a cancel stops the wait at once, even before the server's first byte.

    The synchronous client cannot be interrupted while it waits for response
    headers, so a cancellable run waits for it in another thread and abandons
    it on cancel; a response that arrives later is closed straight away. A
    call that nobody can cancel is made directly.
    """
    if not ctx.cancellable:
        return create(**kwargs)
    cancelled: concurrent.futures.Future[None] = concurrent.futures.Future()

    def settle() -> None:
        if not cancelled.done():
            cancelled.set_result(None)

    remove = ctx.on_cancel(settle)
    try:
        fut = _waiting_pool().submit(functools.partial(contextvars.copy_context().run, create, **kwargs))
        concurrent.futures.wait({fut, cancelled}, return_when=concurrent.futures.FIRST_COMPLETED)
        if not fut.done():
            fut.add_done_callback(_close_late)
            ctx.raise_if_cancelled()
        return fut.result()
    finally:
        remove()


def _close_late(fut: concurrent.futures.Future[t.Any]) -> None:
    """Close a response that arrived after its run was cancelled."""
    if fut.cancelled() or fut.exception() is not None:
        return
    close = getattr(fut.result(), "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: S110 - best effort: nothing useful to report here
            pass
