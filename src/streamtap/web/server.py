"""Run a streamtap web app with uvicorn: in the foreground, or in a background thread.

Binding anything but a loopback interface needs an access token, so a demo
started by mistake on ``0.0.0.0`` does not hand the model to the network.

Shutdown (SIGTERM or SIGINT in the foreground, :meth:`BackgroundServer.stop`
in a thread) is graceful: the listening socket closes at once, the runs in
flight get ``shutdown_grace`` seconds to finish, the ones still going are
then cancelled (reason ``shutdown``), every connected stream gets its proper
end (``abort``/``finish`` and ``[DONE]``, or the events endpoint's last
event), and the OpenTelemetry providers are flushed before :meth:`run`
returns. A second signal exits at once (status ``128 + signal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import typing as t

from ..exceptions import MissingDependencyError, UsageError
from .security import allow_serving, is_loopback

__all__ = ["BackgroundServer", "Drainable", "check_bind", "check_grace", "flush_telemetry", "serve"]

log = logging.getLogger("streamtap.web")

_STREAM_ENDS_WAIT = 5.0  # seconds, after the runs ended, for the last bytes of each stream to be sent
_FLUSH_TIMEOUT = 5.0  # seconds the telemetry flush may take before the process goes on exiting


@t.runtime_checkable
class Drainable(t.Protocol):
    """What a server needs of an app's run service for a graceful shutdown (``app.state.chat``)."""

    async def shutdown(self, grace: float) -> None:
        """Refuse new runs, give the running ones ``grace`` seconds, cancel the rest, wait for their ends."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a ``token``.

    Raises:
        UsageError: naming the host and how to allow it.
    """
    if not is_loopback(host) and not token:
        msg = (
            f"Refusing to listen on {host!r} without an access token: anyone who can reach it could use the model. "
            "Pass token=... (clients then send 'Authorization: Bearer <token>'), or bind 127.0.0.1."
        )
        raise UsageError(msg)


def check_grace(shutdown_grace: float) -> float:
    """``shutdown_grace`` as seconds, or a :class:`UsageError` naming the value."""
    ok = isinstance(shutdown_grace, (int, float)) and not isinstance(shutdown_grace, bool)
    if not ok or math.isnan(shutdown_grace) or not 0 <= shutdown_grace < math.inf:
        msg = (
            f"shutdown_grace must be a number of seconds >= 0 (how long running answers may take to finish "
            f"when the server stops), got {shutdown_grace!r}. Use 0 to cancel them at once."
        )
        raise UsageError(msg)
    return float(shutdown_grace)


def flush_telemetry(timeout: float = _FLUSH_TIMEOUT) -> None:
    """Flush the global OpenTelemetry tracer and meter providers (when they are the SDK's), each within ``timeout``.

    A failing or slow exporter is logged, never raised: the process is stopping.
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError:  # pragma: no cover - the API is a core dependency
        return
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        flush = getattr(provider, "force_flush", None)
        if not callable(flush):
            continue  # the API's no-op or proxy provider: nothing is queued
        try:
            flush(int(timeout * 1000))
        except Exception:
            log.warning("Flushing %s at shutdown failed", type(provider).__name__, exc_info=True)


def _uvicorn() -> t.Any:
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("streamtap.web.serve", "web") from exc
    return uvicorn


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _drainable(app: t.Any) -> Drainable | None:
    service = getattr(getattr(app, "state", None), "chat", None)
    return service if isinstance(service, Drainable) else None


def serve(
    app: t.Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    log_level: str = "warning",
    allowed_hosts: t.Iterable[str] | None = None,
    allowed_origins: t.Iterable[str] | None = None,
    shutdown_grace: float = 10.0,
    cancel_on_disconnect: bool | None = None,
    detach_timeout: float | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (Ctrl-C), then shut down gracefully (see the module docstring).

    Args:
        app: the ASGI app (from :func:`~streamtap.web.create_app`, made with the same ``token``).
        host: interface to listen on (default loopback only).
        port: TCP port.
        token: the access token the app was made with; required for a non-loopback ``host``.
        log_level: uvicorn's log level.
        allowed_hosts: ``Host`` names to serve besides the loopback names and ``host`` itself
            (added to the app's :class:`~streamtap.web.security.SecurityPolicy`).
        allowed_origins: origins whose pages may send state-changing requests, besides the app's own.
        shutdown_grace: seconds the runs in flight may take to finish once a stop is asked for;
            then they are cancelled (reason ``shutdown``). Default 10.
        cancel_on_disconnect: set the app's option (cancel a run when its last reader
            disconnects); ``None`` keeps what the app was made with.
        detach_timeout: set the app's option (cancel a run nobody has read for this many
            seconds); ``None`` keeps what the app was made with (off by default).

    Raises:
        UsageError: a public ``host`` without ``token``, a bad ``shutdown_grace`` or
            ``detach_timeout``, or run options for an app that is not a streamtap app.
    """
    check_bind(host, token)
    grace = check_grace(shutdown_grace)
    allow_serving(app, host, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    if cancel_on_disconnect is not None or detach_timeout is not None:
        service = getattr(getattr(app, "state", None), "chat", None)
        if service is None or not hasattr(service, "configure"):
            msg = f"cancel_on_disconnect / detach_timeout need an app made by streamtap.web.create_app(), got {app!r}."
            raise UsageError(msg)
        service.configure(cancel_on_disconnect=cancel_on_disconnect, detach_timeout=detach_timeout)
    server = BackgroundServer(app, host, port, log_level=log_level, shutdown_grace=grace)
    server.run()


class BackgroundServer:
    """A uvicorn server for one app, on a port bound up front (port 0 picks a free one).

    ``start()`` runs it in a daemon thread (tests, benchmarks) and ``stop()``
    shuts it down; ``run()`` serves in the calling thread until SIGTERM or
    SIGINT. Either way the shutdown is graceful (see the module docstring):
    in-flight runs get ``shutdown_grace`` seconds (``stop(grace)`` in a thread),
    then they are cancelled with reason ``shutdown`` and every stream ends
    properly. :attr:`url` is its base URL.

    Args:
        app: the ASGI app.
        host: interface to listen on.
        port: TCP port (0: a free one).
        log_level: uvicorn's log level.
        shutdown_grace: seconds in-flight runs may take to finish when :meth:`run` is stopped by a signal.

    Example::

        with BackgroundServer(create_app(agent)) as srv:
            httpx.get(srv.url + "/")
    """

    def __init__(
        self,
        app: t.Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        shutdown_grace: float = 10.0,
    ) -> None:
        uvicorn = _uvicorn()
        self.shutdown_grace = check_grace(shutdown_grace)
        self.host = host
        self._sock = _bind(host, port)
        self.port = self._sock.getsockname()[1]
        self.config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level=log_level,
            lifespan="on",
            timeout_graceful_shutdown=self.shutdown_grace,
            access_log=False,
        )
        self.server = uvicorn.Server(self.config)
        # The shutdown is ours (signals included): uvicorn's own handlers would re-raise SIGTERM
        # after serving and kill the process before the spans are flushed.
        self.server.capture_signals = contextlib.nullcontext
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None
        self.signals: list[int] = []
        """The signals received while :meth:`run` served (the first one began the shutdown)."""

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- serving ------------------------------------------------------------------

    def run(self, *, stop_after: float | None = None, ready: t.Callable[[], None] | None = None) -> None:
        """Serve in this thread until SIGTERM or SIGINT (or ``stop_after`` seconds), then shut down gracefully.

        The first signal starts the graceful shutdown; a second one exits the
        process at once with status ``128 + signal``. Signal handlers are
        installed only in the main thread (elsewhere, stop it with ``stop_after``).

        Args:
            stop_after: shut down after this many seconds.
            ready: called once the signal handlers are in place and the socket
                listens (print the URL there: a signal sent after it is handled).
        """
        main = threading.current_thread() is threading.main_thread()
        asyncio.run(self._main(signals=main, stop_after=stop_after, ready=ready))
        flush_telemetry()

    async def _main(
        self, *, signals: bool, stop_after: float | None, ready: t.Callable[[], None] | None = None
    ) -> None:
        loop = self._loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, t.Any] = {}
        if signals:

            def on_signal(signum: int, frame: t.Any) -> None:
                self.signals.append(signum)
                name = signal.Signals(signum).name
                if len(self.signals) > 1:
                    sys.stderr.write(f"streamtap: {name} again: exiting now, without waiting for running answers\n")
                    sys.stderr.flush()
                    os._exit(128 + signum)
                log.warning(
                    "%s: shutting down; running answers get %s s to finish (send it again to exit at once)",
                    name,
                    self.shutdown_grace,
                )
                loop.call_soon_threadsafe(self._begin_shutdown, self.shutdown_grace)

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        # uvicorn does not log the address of sockets it is given; with port 0 the user needs it.
        logging.getLogger("uvicorn.error").info("streamtap: serving on %s (SIGTERM or Ctrl-C to stop)", self.url)
        timer = (
            loop.call_later(stop_after, self._begin_shutdown, self.shutdown_grace) if stop_after is not None else None
        )
        try:
            if ready is not None:
                ready()  # the socket already listens: connections made now wait in its backlog
            await self.server.serve(sockets=[self._sock])
        finally:
            if timer is not None:
                timer.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _begin_shutdown(self, grace: float) -> asyncio.Task[None]:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(grace))
        return self._draining

    async def _drain(self, grace: float) -> None:
        """Stop accepting, let the app's runs end (``grace``), then let uvicorn close the connections."""
        server = self.server
        try:
            for listener in getattr(server, "servers", ()):
                listener.close()  # no new connections; the open ones may still read their streams
            service = _drainable(self.config.app)
            if service is not None:
                await service.shutdown(grace)
                self.config.timeout_graceful_shutdown = (
                    _STREAM_ENDS_WAIT  # the runs have ended: only the last bytes are left
                )
        except Exception:
            log.exception("The graceful shutdown failed; the server stops now")
        finally:
            server.should_exit = True

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Serve in a daemon thread; returns once it accepts connections."""

        def serve() -> None:
            asyncio.run(self._main(signals=False, stop_after=None))

        self._thread = threading.Thread(target=serve, name="streamtap-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.server.started and self._thread.is_alive():
            time.sleep(0.005)  # polling uvicorn's own "started" flag; it offers no event to wait on
        if not self.server.started:
            msg = f"The web server did not start within {timeout} s on {self.url}."
            raise RuntimeError(msg)
        return self

    def stop(self, grace: float = 0.0) -> None:
        """Shut down gracefully and wait for the thread: runs get ``grace`` seconds (default 0), then are cancelled."""
        grace = check_grace(grace)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                future = asyncio.run_coroutine_threadsafe(self._wait_drained(grace), loop)
                future.result(grace + _STREAM_ENDS_WAIT + 10)
            except Exception:  # the loop is closing, or the drain outlived its bound
                log.debug("graceful stop did not complete", exc_info=True)
        self.server.should_exit = True
        if thread is not None:
            thread.join(grace + _STREAM_ENDS_WAIT + 10)
            self._thread = None

    async def _wait_drained(self, grace: float) -> None:
        await self._begin_shutdown(grace)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
