"""Runs that span processes: a child process's modules as children of the run that handed it work.

Three pieces, re-exported by :mod:`streamtap.propagation`:

* :class:`Relay` (made with :func:`relay`, in the parent, inside the tool run
  that hands work out): listens on a loopback TCP port for the child
  processes' events and *re-emits* them into the parent's run tree, each with
  the parent tree's next ``seq`` (so ordering and gap-freeness stay the
  parent's job), its run id kept, the child's root run re-parented under the
  tool run, its ``root_id``, ``tags`` and ``path`` those of the parent's tree.
* :class:`Carried` (from :meth:`Relay.carry`): the run context to hand to the
  child, picklable and JSON (:meth:`Carried.to_dict` /
  :meth:`Carried.from_dict`): the tool run's ids, tags and path, its W3C
  ``traceparent``, and the relay's address and one-time key.
* :func:`attach` (in the child): ``with attach(carried): module(...)``
  continues the trace (the child's spans are children of the tool's span, in
  the same trace, exported by the child), sends every event of the runs
  started in the block to the relay as JSON (never pickle), and flushes the
  child's spans at the end.

Cancellation: when the tool run is cancelled (``handle.cancel()``, a web
stop, a worker's stop message: anything that cancels the parent's tree), the
relay sends a cancel frame back over every child connection (and to a child
that connects later, while the relay is open); :func:`attach` cancels the
root runs of its block with the same reason, so their next chunk raises
:class:`~streamtap.exceptions.RunCancelled`, their model streams close, and
their ``End`` events (status ``cancelled``) reach the parent before the relay
closes. A hand-off block that then fails (the pool or Celery re-raises the
child's error) raises ``RunCancelled``, so the tool run ends ``cancelled``.

Failures: a child that dies mid-run closes its connection; the relay ends the
child's open runs with an ``error`` :class:`~streamtap.events.End`
(``streamtap.ChildProcessLost``), and the tool sees the failure its pool
reports (``BrokenProcessPool``, a Celery error), so nothing hangs. Events that
arrive after the relay closed (the tool run ended) are dropped and counted in
:attr:`Relay.dropped`; a child that cannot reach the relay still runs, and
counts what it could not send in :attr:`Attachment.lost`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import secrets
import socket
import threading
import time
import types
import typing as t
from multiprocessing.connection import Client, Connection, Listener

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from . import bus
from .bus import scope_signal
from .context import RunContext, current, current_var
from .events import End, ErrorInfo, Event, Run, Start, Timings, event_from_dict
from .exceptions import RunCancelled, UsageError

__all__ = ["Attachment", "Carried", "Relay", "attach", "relay"]

log = logging.getLogger("streamtap.relay")

_CLOSE = b'{"streamtap.relay": "close"}'
_HELLO = b'{"streamtap.relay": "hello"}'
_CANCEL = "cancel"
_READY = b'{"streamtap.relay": "ready"}'
_HANDSHAKE_TIMEOUT = 5.0  # seconds a child waits for the relay's first answer before it runs anyway
_LOST = "streamtap.ChildProcessLost"
_scope_var: contextvars.ContextVar[object] = contextvars.ContextVar("streamtap_attach", default=None)


class Carried(t.NamedTuple):
    """The run context carried into another process (picklable; JSON through :meth:`to_dict`).

    ``key`` authenticates the child to the relay (HMAC handshake): treat it
    like a short-lived password, it is good for one relay only. ``repr`` masks it.
    """

    root_id: str
    """The parent tree's root run id."""
    parent_id: str
    """The run that handed the work out (the tool run): the child's root runs become its children."""
    tags: tuple[str, ...]
    """The tool run's tags (inherited by the child's runs)."""
    path: tuple[str, ...]
    """The tool run's path (prefixed to the child's runs' paths)."""
    headers: t.Mapping[str, str]
    """W3C trace context headers (``traceparent``, ``tracestate``, ``baggage``) of the tool's span."""
    address: tuple[str, int]
    """Where the relay listens (host, port)."""
    key: str
    """The relay's one-time key (hex)."""

    def to_dict(self) -> dict[str, t.Any]:
        """A JSON-safe dict (for a Celery task argument or a job queue message)."""
        return {
            "root_id": self.root_id,
            "parent_id": self.parent_id,
            "tags": list(self.tags),
            "path": list(self.path),
            "headers": dict(self.headers),
            "address": [self.address[0], self.address[1]],
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> Carried:
        """The inverse of :meth:`to_dict`.

        Raises:
            UsageError: ``data`` is not a carried run context, naming what is missing.
        """
        try:
            host, port = data["address"]
            return cls(
                str(data["root_id"]),
                str(data["parent_id"]),
                tuple(str(x) for x in data.get("tags") or ()),
                tuple(str(x) for x in data.get("path") or ()),
                {str(k): str(v) for k, v in (data.get("headers") or {}).items()},
                (str(host), int(port)),
                str(data["key"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"Not a carried streamtap run context ({exc!r}): pass what Relay.carry() returned, or its to_dict()."
            raise UsageError(msg) from None

    def __repr__(self) -> str:
        return f"Carried(parent_id={self.parent_id!r}, root_id={self.root_id!r}, address={self.address!r}, key='***')"


class Relay:
    """Receives a child process's events and re-emits them into the current run's tree.

    Make it with :func:`relay` inside the run that hands work out (a tool),
    use it as a context manager around the hand-off, and give the child
    :meth:`carry`'s result::

        with propagation.relay() as r:
            pool.submit(child_job, r.carry(), task).result()

    Args:
        host: the address to listen on (loopback by default; the child must
            reach it, so a child on another machine needs a routable address).
        drain_timeout: at the end of the block, how long to wait for the
            children's connections to deliver what they sent before closing.

    Raises:
        UsageError: called outside a module run.
    """

    def __init__(self, *, host: str = "127.0.0.1", drain_timeout: float = 5.0) -> None:
        ctx = current()
        if ctx is None:
            msg = (
                "streamtap.propagation.relay() was called outside any module run, so there is no run for the "
                "child process's runs to join. Call it inside the forward() of the tool that hands work out."
            )
            raise UsageError(msg)
        self._ctx: RunContext = ctx
        self._host = host
        self._drain_timeout = drain_timeout
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._closed = False
        self._listener: Listener | None = None
        self._threads: list[threading.Thread] = []
        self._runs: dict[str, Run] = {}
        self._open: dict[str, tuple[Run, float]] = {}
        self._send_lock = threading.Lock()  # guards _conns and _stop; frames back to the children
        self._conns: list[Connection] = []
        self._stop: str | None = None
        self._remove_cancel: t.Callable[[], None] | None = None
        self.received = 0
        """Events re-emitted into the parent's tree."""
        self.dropped = 0
        """Events that arrived after the relay closed (the parent run went on without them)."""
        self.lost_runs = 0
        """Child runs the relay ended with an error because their process went away first."""
        self.cancels_sent = 0
        """Cancel frames sent to children (one per connected child when the tool run was cancelled)."""

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Relay:
        """Start listening (on a free port) and accepting child connections."""
        self._listener = Listener((self._host, 0), authkey=self._key)
        accept = threading.Thread(target=self._accept, name="streamtap-relay-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        self._remove_cancel = self._ctx.on_cancel(self._cancel_children)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        """Let the children's connections drain (up to ``drain_timeout``), then close.

        Raises:
            RunCancelled: the block failed after the tool run was cancelled (the pool or Celery
                re-raised the cancelled child's error); the original error is its ``__cause__``.
        """
        self.close()
        if isinstance(exc, Exception) and not isinstance(exc, RunCancelled) and self._ctx.cancelled:
            reason = self._ctx.token.reason or f"run {self._ctx.run.run_id} was cancelled"
            raise RunCancelled(reason) from exc

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the relay listens on."""
        if self._listener is None:
            msg = "The relay is not listening: use it as a context manager (with propagation.relay() as r: ...)."
            raise UsageError(msg)
        host, port = t.cast(tuple[str, int], self._listener.address)
        return host, port

    def carry(self) -> Carried:
        """The run context to hand to a child process (pass it to :func:`attach` there)."""
        run = self._ctx.run
        return Carried(
            run.root_id,
            run.run_id,
            run.tags,
            run.path,
            _headers(),
            self.address,
            self._key.hex(),
        )

    def close(self) -> None:
        """Stop accepting, wait for open connections to end (``drain_timeout``), end runs left open.

        After this, events still arriving are dropped and counted in :attr:`dropped`.
        """
        if self._listener is None:
            return
        if self._remove_cancel is not None:
            self._remove_cancel()
            self._remove_cancel = None
        # Wake the accept loop: the connections queued before this one are accepted first.
        with contextlib.suppress(OSError), Client(self.address, authkey=self._key) as conn:
            conn.send_bytes(_CLOSE)
        deadline = time.monotonic() + self._drain_timeout
        accept, *_ = self._threads
        accept.join(max(0.0, deadline - time.monotonic()))  # it starts the readers: join it first
        for thread in list(self._threads[1:]):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            self._end_open("the run that handed the work out ended before the child process's run did")
        with contextlib.suppress(OSError):
            self._listener.close()
        self._listener = None

    # -- receiving -------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None  # started by __enter__ only
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError):  # closed, or a connection that failed the handshake
                if self._listener is None:
                    return
                continue
            try:
                first = conn.recv_bytes()
            except (OSError, EOFError):
                conn.close()
                continue
            if first == _CLOSE:
                conn.close()
                return
            with self._send_lock:
                self._conns.append(conn)
                if self._stop is not None:  # the tool run was cancelled before this child connected
                    self._send_cancel(conn, self._stop)
                else:
                    with contextlib.suppress(OSError, ValueError):
                        conn.send_bytes(_READY)
            reader = threading.Thread(target=self._read, args=(conn,), name="streamtap-relay", daemon=True)
            reader.start()
            self._threads.append(reader)

    def _read(self, conn: Connection) -> None:
        mine: list[str] = []
        try:
            while True:
                self._deliver(conn.recv_bytes(), mine)
        except (OSError, EOFError):
            pass
        finally:
            with self._send_lock:
                if conn in self._conns:
                    self._conns.remove(conn)
                conn.close()
        with self._lock:
            if not self._closed:
                self._end_open("the child process went away before its run ended", only=mine)

    # -- cancelling ------------------------------------------------------------------

    def _cancel_children(self) -> None:
        """The tool run was cancelled: tell every connected child (and, later, any child that connects)."""
        reason = self._ctx.token.reason or f"run {self._ctx.run.run_id} was cancelled"
        with self._send_lock:
            if self._stop is not None:
                return
            self._stop = reason
            for conn in list(self._conns):
                self._send_cancel(conn, reason)

    def _send_cancel(self, conn: Connection, reason: str) -> None:
        """Send one cancel frame; called with ``_send_lock`` held."""
        try:
            conn.send_bytes(json.dumps({"streamtap.relay": _CANCEL, "reason": reason}).encode())
            self.cancels_sent += 1
        except (OSError, ValueError):
            log.debug("A child of the streamtap relay went away before its cancel frame", exc_info=True)

    def _deliver(self, data: bytes, mine: list[str]) -> None:
        try:
            event = event_from_dict(json.loads(data))
        except ValueError:
            log.warning("The streamtap relay received something that is not an event; it was ignored")
            return
        with self._lock:
            if self._closed:
                self.dropped += 1
                return
            ev = event._replace(run=self._adopt(event.run))
            rid = ev.run.run_id
            if isinstance(ev, Start):
                self._open[rid] = (ev.run, time.time())
                mine.append(rid)
            elif isinstance(ev, End):
                self._open.pop(rid, None)
            self._ctx.relay(ev)
            self.received += 1

    def _adopt(self, run: Run) -> Run:
        """The child's run as a run of the parent's tree (cached per run id)."""
        known = self._runs.get(run.run_id)
        if known is not None:
            return known
        own = self._ctx.run
        tags = own.tags + tuple(x for x in run.tags if x not in own.tags)
        adopted = run._replace(
            parent_id=run.parent_id or own.run_id,
            root_id=own.root_id,
            tags=tags,
            path=own.path + run.path,
        )
        self._runs[run.run_id] = adopted
        return adopted

    def _end_open(self, why: str, only: list[str] | None = None) -> None:
        """End (deepest first) the child runs that started and never ended; called with the lock held."""
        ids = [rid for rid in self._open if only is None or rid in only]
        for rid in reversed(ids):
            run, started = self._open.pop(rid)
            error = ErrorInfo(_LOST, f"{run.name} ({rid}): {why}")
            timings = Timings(started, max(0.0, time.time() - started))
            self._ctx.relay(End(run, 0, "error", None, error, None, timings, types.MappingProxyType({})))
            self.lost_runs += 1


def relay(*, host: str = "127.0.0.1", drain_timeout: float = 5.0) -> Relay:
    """A :class:`Relay` for the current run (use it as a context manager; see the class)."""
    return Relay(host=host, drain_timeout=drain_timeout)


class Attachment:
    """What :func:`attach` yields: the child side's counters."""

    __slots__ = ("carried", "lost", "sent")

    def __init__(self, carried: Carried) -> None:
        self.carried = carried
        """The context the block runs under."""
        self.sent = 0
        """Events sent to the relay."""
        self.lost = 0
        """Events that could not be sent (the relay was unreachable or had closed)."""


@contextlib.contextmanager
def attach(carried: Carried | t.Mapping[str, t.Any]) -> t.Iterator[Attachment]:
    """Run the block under a carried run context, in the child process.

    Root runs started in the block (in this thread or its tasks) continue the
    parent's trace, and every event of theirs is sent to the parent's relay,
    which re-emits it under the tool run. At the end of the block the
    connection is closed and the tracer provider flushed, so the child's spans
    are exported even if the pool later kills the process.

    Args:
        carried: what :meth:`Relay.carry` returned, or its :meth:`~Carried.to_dict`.

    Raises:
        UsageError: ``carried`` is not a carried run context, or the block is already inside a run
            (a module running here is that run's child already; attach at the top of the child's job).
    """
    if not isinstance(carried, Carried):
        carried = Carried.from_dict(carried) if isinstance(carried, t.Mapping) else _not_carried(carried)
    if current_var.get() is not None:
        msg = (
            "streamtap.propagation.attach() was called inside a module run; its runs would belong to that run. "
            "Call it at the top of the child process's job, outside any module."
        )
        raise UsageError(msg)
    out = Attachment(carried)
    cancel = _ChildCancel()
    try:
        client = Client(carried.address, authkey=bytes.fromhex(carried.key))
        client.send_bytes(_HELLO)  # the relay's accept loop reads one frame per connection before handing it on
        # Its answer (ready, or cancel: the parent's run was stopped before this child connected) comes before any
        # run here starts, so an early stop always wins.
        if client.poll(_HANDSHAKE_TIMEOUT):
            cancel.handle(client.recv_bytes())
        conn: Connection | None = client
    except (OSError, EOFError, ValueError) as exc:
        log.warning(
            "streamtap: the child process cannot reach the parent's relay at %s:%s (%s); its events are not "
            "relayed (counted as lost)",
            carried.address[0],
            carried.address[1],
            exc,
        )
        conn = None
    send_lock = threading.Lock()
    roots: set[str] = set()
    marker = object()
    scope = _Scope(marker)
    carried_drain = 5.0  # seconds the relay gets to read what this block sent, at its end

    def forward(event: Event) -> None:
        run = event.run
        if run.parent_id is None and isinstance(event, Start) and scope.active():
            roots.add(run.run_id)
        if run.root_id not in roots:
            return
        if isinstance(event, End) and run.parent_id is None:
            cancel.forget(run.run_id)
        nonlocal conn
        with send_lock:
            if conn is None:
                out.lost += 1
                return
            try:
                conn.send_bytes(json.dumps(event.to_dict()).encode())
                out.sent += 1
            except (OSError, ValueError):
                out.lost += 1
                conn = None

    def on_start(_sender: object, *, run: Run, context: RunContext, **_: object) -> None:
        if run.parent_id is None and scope.active():
            cancel.watch(context)

    listener = None
    if conn is not None:
        listener = threading.Thread(target=cancel.listen, args=(conn,), name="streamtap-attach-cancel", daemon=True)
        listener.start()
    sub = bus.subscribe(forward)
    scope_signal.connect(on_start, weak=False)
    try:
        token = otel_context.attach(propagate.extract(dict(carried.headers)))
        try:
            with scope:
                yield out
        finally:
            otel_context.detach(token)
    finally:
        scope_signal.disconnect(on_start)
        sub.unsubscribe()
        with send_lock:
            closing, conn = conn, None  # late events of other threads are counted as lost from here
        if closing is not None:
            # A graceful close: our end-of-file goes after what was sent; the relay reads to it and closes its
            # end, which ends the cancel listener. Only if the relay does not, both ways are cut.
            _shutdown(closing, socket.SHUT_WR)
            if listener is not None:
                listener.join(carried_drain)
                if listener.is_alive():
                    _shutdown(closing, socket.SHUT_RDWR)
                    listener.join(1.0)
            closing.close()
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if callable(flush):
            flush()


class _ChildCancel:
    """The child side of cancellation: the root runs of one :func:`attach` block, cancelled on the relay's word."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunContext] = {}
        self.reason: str | None = None

    def watch(self, ctx: RunContext) -> None:
        """A root run of the block started: cancel it when the parent's run is (at once if it already was)."""
        with self._lock:
            reason = self.reason
            if reason is None:
                self._runs[ctx.run.run_id] = ctx
        if reason is not None:
            ctx.token.cancel(reason)

    def forget(self, run_id: str) -> None:
        """The root run ended."""
        with self._lock:
            self._runs.pop(run_id, None)

    def listen(self, conn: Connection) -> None:
        """Read the relay's frames until the connection closes; a cancel frame cancels the block's runs."""
        while True:
            try:
                data = conn.recv_bytes()
            except (OSError, EOFError):
                return
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """One frame from the relay: a cancel frame cancels the block's runs (and any started later)."""
        try:
            frame = json.loads(data)
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("streamtap.relay") != _CANCEL:
            return
        reason = str(frame.get("reason") or "the parent run was cancelled")
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            runs = list(self._runs.values())
            self._runs.clear()
        for ctx in runs:
            ctx.token.cancel(reason)


def _shutdown(conn: Connection, how: int) -> None:
    """Shut the connection's socket down (``SHUT_WR``: send end-of-file; ``SHUT_RDWR``: a blocked reader wakes)."""
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(how)
        finally:
            sock.close()


def _headers() -> dict[str, str]:
    """The W3C trace context of the current span (the tool's, inside its forward())."""
    out: dict[str, str] = {}
    propagate.inject(out)
    return out


def _not_carried(value: object) -> t.NoReturn:
    msg = f"attach() takes what Relay.carry() returned (or its to_dict()), not {type(value).__name__}."
    raise UsageError(msg)


class _Scope:
    """Marks the block of one :func:`attach` in the context, so that its subscriber knows its own root runs."""

    def __init__(self, marker: object) -> None:
        self._marker = marker
        self._token: t.Any = None

    def __enter__(self) -> _Scope:
        self._token = _scope_var.set(self._marker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _scope_var.reset(self._token)

    def active(self) -> bool:
        """Whether the calling context is inside this block."""
        return _scope_var.get() is self._marker
