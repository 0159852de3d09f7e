"""Failure-isolated raw bus receivers: for hooks that :func:`streamtap.subscribe` cannot carry.

:func:`streamtap.subscribe` hands a subscriber one event. The tracing
subscriber also needs :data:`streamtap.bus.scope_signal` (to make a run's span
current around ``forward()``, reading the module instance there), which is a
raw blinker signal whose receivers' exceptions would reach the producer.
:class:`IsolatedReceivers` connects such receivers with
:func:`~streamtap.subscribe`'s failure policy: a receiver that raises never
reaches the producer; its first failure is logged, every failure is counted.
"""

from __future__ import annotations

import logging
import threading
import typing as t

from . import bus

__all__ = ["IsolatedReceivers"]

Handler = t.Callable[[t.Any, t.Any], None]
"""``handler(sender, event)``."""


class IsolatedReceivers:
    """A set of ``handler(sender, event)`` callables connected to the raw bus signals.

    Args:
        owner: name used in the log line of the first failure.
        handlers: event kind -> handler.
        scope: optional receiver for :data:`streamtap.bus.scope_signal`
            (``scope(sender, run, context)`` returning a context-manager factory or ``None``).
        log: the logger of the first failure.
    """

    __slots__ = ("_connected", "_handlers", "_lock", "_scope", "_wrapped", "failures", "owner")

    def __init__(
        self,
        owner: str,
        handlers: t.Mapping[str, Handler],
        scope: t.Callable[..., t.Any] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.owner = owner
        self._handlers = dict(handlers)
        self._scope = scope
        self.failures = bus.FailureLog(owner, log or logging.getLogger("streamtap.bus"))
        """The handlers' failures: the first is logged, all are counted."""
        self._wrapped: dict[str, t.Callable[..., t.Any]] = {}
        self._connected = False
        self._lock = threading.Lock()  # connect() may be called from any producing thread

    @property
    def errors(self) -> int:
        """How many times a handler raised."""
        return self.failures.count

    def _wrap(self, handler: Handler) -> t.Callable[..., None]:
        def receive(sender: t.Any, /, *, event: t.Any, **_: t.Any) -> None:
            try:
                handler(sender, event)
            except Exception as exc:
                self.failures.record(exc)

        return receive

    def _wrap_scope(self, scope: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        def receive(sender: t.Any, /, *, run: t.Any, context: t.Any = None, **_: t.Any) -> t.Any:
            try:
                return scope(sender, run, context)
            except Exception as exc:
                self.failures.record(exc)
                return None

        return receive

    def connect(self) -> None:
        """Connect every handler (idempotent, thread-safe)."""
        with self._lock:
            self._connect()

    def _connect(self) -> None:
        if self._connected:
            return
        for kind, handler in self._handlers.items():
            fn = self._wrap(handler)
            self._wrapped[kind] = fn
            bus.signals[kind].connect(fn, weak=False)
        if self._scope is not None:
            fn = self._wrap_scope(self._scope)
            self._wrapped["scope"] = fn
            bus.scope_signal.connect(fn, weak=False)
        self._connected = True

    def disconnect(self) -> None:
        """Disconnect every handler (idempotent, thread-safe)."""
        with self._lock:
            self._disconnect()

    def _disconnect(self) -> None:
        if not self._connected:
            return
        for kind, fn in self._wrapped.items():
            (bus.scope_signal if kind == "scope" else bus.signals[kind]).disconnect(fn)
        self._wrapped.clear()
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether the handlers are connected."""
        return self._connected
