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
import secrets
import threading
import time
import types
import typing as t
from multiprocessing.connection import Client, Connection, Listener

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from . import bus
from .context import RunContext, current, current_var
from .events import End, ErrorInfo, Event, Run, Start, Timings, event_from_dict
from .exceptions import UsageError

__all__ = ["Attachment", "Carried", "Relay", "attach", "relay"]

log = logging.getLogger("streamtap.relay")

_CLOSE = b'{"streamtap.relay": "close"}'
_HELLO = b'{"streamtap.relay": "hello"}'
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
        self.received = 0
        """Events re-emitted into the parent's tree."""
        self.dropped = 0
        """Events that arrived after the relay closed (the parent run went on without them)."""
        self.lost_runs = 0
        """Child runs the relay ended with an error because their process went away first."""

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Relay:
        """Start listening (on a free port) and accepting child connections."""
        self._listener = Listener((self._host, 0), authkey=self._key)
        accept = threading.Thread(target=self._accept, name="streamtap-relay-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Let the children's connections drain (up to ``drain_timeout``), then close."""
        self.close()

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
            conn.close()
        with self._lock:
            if not self._closed:
                self._end_open("the child process went away before its run ended", only=mine)

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
    try:
        client = Client(carried.address, authkey=bytes.fromhex(carried.key))
        client.send_bytes(_HELLO)  # the relay's accept loop reads one frame per connection before handing it on
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

    def forward(event: Event) -> None:
        run = event.run
        if run.parent_id is None and isinstance(event, Start) and scope.active():
            roots.add(run.run_id)
        if run.root_id not in roots:
            return
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

    sub = bus.subscribe(forward)
    try:
        token = otel_context.attach(propagate.extract(dict(carried.headers)))
        try:
            with scope:
                yield out
        finally:
            otel_context.detach(token)
    finally:
        sub.unsubscribe()
        with send_lock:
            if conn is not None:
                conn.close()
                conn = None
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if callable(flush):
            flush()


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
