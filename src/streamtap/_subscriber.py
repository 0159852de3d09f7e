"""The subscribe/unsubscribe lifecycle shared by the log and tracing subscribers.

Both hold a table of event kind -> handler, subscribe one dispatcher for those
kinds with :func:`streamtap.subscribe`, can be used as context managers, and
keep counting the isolated failures of a subscription after it ends.
"""

from __future__ import annotations

import typing as t

from .bus import Subscription, subscribe

__all__ = ["KindDispatcher"]

if t.TYPE_CHECKING:
    from typing_extensions import Self


class KindDispatcher:
    """Dispatches bus events to ``self._handlers[event.kind]`` while subscribed.

    Subclasses call :meth:`_set_handlers` in ``__init__``.
    """

    _handlers: dict[str, t.Callable[[t.Any], None]]
    _subscription: Subscription | None
    _past_errors: int

    def _set_handlers(self, handlers: dict[str, t.Callable[[t.Any], None]]) -> None:
        self._handlers = handlers
        self._subscription = None
        self._past_errors = 0

    def subscribe(self) -> Self:
        """Start handling events (idempotent); returns ``self``."""
        if self._subscription is None:
            self._subscription = subscribe(self._dispatch, kinds=list(self._handlers))
        return self

    def unsubscribe(self) -> None:
        """Stop handling events."""
        if self._subscription is not None:
            self._past_errors = self._subscription.errors
            self._subscription.unsubscribe()
            self._subscription = None

    def _dispatch(self, event: t.Any) -> None:
        self._handlers[event.kind](event)

    def __enter__(self) -> Self:
        return self.subscribe()

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    @property
    def _bus_errors(self) -> int:
        """Failures of handlers counted by the current (or the last) subscription."""
        return self._subscription.errors if self._subscription is not None else self._past_errors
