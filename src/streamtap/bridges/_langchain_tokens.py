"""The bridge's per-token path: LangChain's token callback handed straight to the bridge's handler.

LangChain gives every streamed token to each callback handler through its
generic dispatch (``handle_event`` / ``ahandle_event``: a loop over the
handlers, an ``ignore_llm`` check, a call with five keyword arguments, a
coroutine check; in async code also an ``asyncio.gather``). That dispatch,
paid for any handler, even one that does nothing, costs more per token than
the 10% of a fast model's own ``.stream()`` the bridge may add.

:func:`install` (called when the first
:class:`~streamtap.bridges.langchain.StreamtapCallbackHandler` is made) replaces ``on_llm_new_token`` of LangChain's two LLM run managers,
``CallbackManagerForLLMRun`` and ``AsyncCallbackManagerForLLMRun``, with a
method that, when the run's only handler is the bridge's, calls it directly,
with LangChain's own rules: an exception is logged as LangChain logs it and
raised again when the handler sets ``raise_error``; ``NotImplementedError`` is
logged only (the bridge's class does not ignore LLM events, so ``ignore_llm``
needs no check). Every other case (no handler, other handlers beside it or
instead of it, a subclass of the handler, which may override
``on_llm_new_token`` or ``ignore_llm``, extra keyword arguments, a handler not
run inline in async code) goes to LangChain's own method, unchanged. The handler's token
function gets the ``token``, ``chunk`` and ``run_id`` its ``on_llm_new_token``
would get (all that method reads of LangChain's arguments), so the tokens,
their order, cancellation and nesting are the callback route's exactly.

Installed at most once per process; where a LangChain version has
reshaped the methods (their parameters are not ``self, token, *, chunk,
**kwargs``), nothing is replaced and the bridge works through LangChain's
dispatch as before.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import typing as t

__all__ = ["install", "installed"]

_ORIGINAL = "__streamtap_original__"
_SHAPE = [
    ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ("token", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ("chunk", inspect.Parameter.KEYWORD_ONLY),
    ("kwargs", inspect.Parameter.VAR_KEYWORD),
]
_lock = threading.Lock()
_lc_log = logging.getLogger("langchain_core.callbacks.manager")  # where LangChain logs a handler's failure


def _managers() -> tuple[type, type]:
    from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun

    return CallbackManagerForLLMRun, AsyncCallbackManagerForLLMRun


def _fits(method: t.Any) -> bool:
    if not callable(method):
        return False
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    return [(p.name, p.kind) for p in params] == _SHAPE


def installed(managers: tuple[type, type] | None = None) -> bool:
    """Whether LangChain's token callbacks go straight to the bridge's handler in this process.

    Args:
        managers: the (sync, async) run manager classes to look at (default: LangChain's).
    """
    sync_cls, async_cls = managers or _managers()
    return all(hasattr(cls.__dict__.get("on_llm_new_token"), _ORIGINAL) for cls in (sync_cls, async_cls))


def _failed(handler: t.Any, exc: Exception) -> None:
    """Do what LangChain's ``handle_event`` does when a handler raises."""
    name = handler.__class__.__name__
    if isinstance(exc, NotImplementedError):
        _lc_log.warning("NotImplementedError in %s.on_llm_new_token callback: %s", name, repr(exc))
        return
    _lc_log.warning("Error in %s.on_llm_new_token callback: %s", name, repr(exc))
    if handler.raise_error:
        raise exc


Token = t.Callable[[t.Any, t.Any, t.Any, t.Any], None]
"""The handler's token function: ``(handler, run_id, token, chunk)``."""


def _sync(original: t.Callable[..., None], handler_type: type[t.Any], on_token: Token) -> t.Callable[..., None]:
    @functools.wraps(original)
    def on_llm_new_token(self: t.Any, token: t.Any, *, chunk: t.Any = None, **kwargs: t.Any) -> None:
        handlers = self.handlers
        if not handlers:
            return None
        if kwargs or len(handlers) != 1 or handlers[0].__class__ is not handler_type:
            return original(self, token, chunk=chunk, **kwargs)
        try:
            on_token(handlers[0], self.run_id, token, chunk)
        except Exception as exc:
            _failed(handlers[0], exc)
        return None

    setattr(on_llm_new_token, _ORIGINAL, original)
    return on_llm_new_token


def _async(
    original: t.Callable[..., t.Awaitable[None]], handler_type: type[t.Any], on_token: Token
) -> t.Callable[..., t.Awaitable[None]]:
    @functools.wraps(original)
    async def on_llm_new_token(self: t.Any, token: t.Any, *, chunk: t.Any = None, **kwargs: t.Any) -> None:
        handlers = self.handlers
        if not handlers:
            return
        handler: t.Any = handlers[0]
        # Not run inline, LangChain runs it in an executor thread: that stays LangChain's.
        if kwargs or len(handlers) != 1 or handler.__class__ is not handler_type or not handler.run_inline:
            await original(self, token, chunk=chunk, **kwargs)
            return
        try:
            on_token(handler, self.run_id, token, chunk)
        except Exception as exc:
            _failed(handler, exc)

    setattr(on_llm_new_token, _ORIGINAL, original)
    return on_llm_new_token


def install(handler_type: type[t.Any], on_token: Token, *, managers: tuple[type, type] | None = None) -> bool:
    """Hand LangChain's token callbacks straight to ``handler_type`` handlers (see the module docs).

    Idempotent; returns whether the short path is in place (``False`` where
    this LangChain's run managers do not have the expected shape).

    Args:
        handler_type: the bridge's handler class, whose ``on_llm_new_token``
            is a plain (not async) method that calls ``on_token`` and which
            keeps LangChain's ``ignore_llm`` (false); its instances (not a
            subclass's: one may override either) get their tokens directly
            when one is a run's only handler.
        on_token: what the method does, called as ``on_token(handler, run_id,
            token, chunk)``: the short path calls it without the method's
            keyword-argument parsing.
        managers: the (sync, async) run manager classes whose method to
            replace (default: LangChain's ``CallbackManagerForLLMRun`` and
            ``AsyncCallbackManagerForLLMRun``).
    """
    from langchain_core.callbacks import BaseCallbackHandler

    method = handler_type.__dict__.get("on_llm_new_token")
    if not callable(method) or inspect.iscoroutinefunction(method):
        msg = f"{handler_type.__name__}.on_llm_new_token must be a plain method defined on that class"
        raise TypeError(msg)
    if inspect.getattr_static(handler_type, "ignore_llm") is not inspect.getattr_static(
        BaseCallbackHandler, "ignore_llm"
    ):
        msg = f"{handler_type.__name__} redefines ignore_llm: its tokens must go through LangChain's dispatch"
        raise TypeError(msg)
    with _lock:
        sync_cls, async_cls = managers or _managers()
        sync_orig = sync_cls.__dict__.get("on_llm_new_token")
        async_orig = async_cls.__dict__.get("on_llm_new_token")
        if hasattr(sync_orig, _ORIGINAL) and hasattr(async_orig, _ORIGINAL):
            return True
        if not (_fits(sync_orig) and _fits(async_orig) and inspect.iscoroutinefunction(async_orig)):
            logging.getLogger("streamtap.bridges.langchain").info(
                "this langchain-core's LLM run managers have an unexpected shape: tokens go through its dispatch"
            )
            return False
        sync_cls.on_llm_new_token = _sync(t.cast(t.Callable[..., None], sync_orig), handler_type, on_token)  # type: ignore[attr-defined]
        async_cls.on_llm_new_token = _async(  # type: ignore[attr-defined]
            t.cast(t.Callable[..., t.Awaitable[None]], async_orig), handler_type, on_token
        )
        return True
