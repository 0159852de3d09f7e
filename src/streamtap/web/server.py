"""Run a streamtap web app with uvicorn: in the foreground, or in a background thread.

Binding anything but a loopback interface needs an access token, so a demo
started by mistake on ``0.0.0.0`` does not hand the model to the network.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import typing as t

from ..exceptions import MissingDependencyError, UsageError
from .security import allow_serving, is_loopback

__all__ = ["BackgroundServer", "check_bind", "serve"]


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


def serve(
    app: t.Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    log_level: str = "warning",
    allowed_hosts: t.Iterable[str] | None = None,
    allowed_origins: t.Iterable[str] | None = None,
) -> None:
    """Serve ``app`` until interrupted (Ctrl-C).

    Args:
        app: the ASGI app (from :func:`~streamtap.web.create_app`, made with the same ``token``).
        host: interface to listen on (default loopback only).
        port: TCP port.
        token: the access token the app was made with; required for a non-loopback ``host``.
        log_level: uvicorn's log level.
        allowed_hosts: ``Host`` names to serve besides the loopback names and ``host`` itself
            (added to the app's :class:`~streamtap.web.security.SecurityPolicy`).
        allowed_origins: origins whose pages may send state-changing requests, besides the app's own.
    """
    check_bind(host, token)
    allow_serving(app, host, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    server = BackgroundServer(app, host, port, log_level=log_level)
    server.run()


class BackgroundServer:
    """A uvicorn server for one app, on a port bound up front (port 0 picks a free one).

    ``start()`` runs it in a daemon thread (tests, benchmarks, the demo);
    ``run()`` in the calling thread until Ctrl-C. :attr:`url` is its base URL.

    Example::

        with BackgroundServer(create_app(agent)) as srv:
            httpx.get(srv.url + "/")
    """

    def __init__(self, app: t.Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        uvicorn = _uvicorn()
        self.host = host
        self._sock = _bind(host, port)
        self.port = self._sock.getsockname()[1]
        self.config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=2, access_log=False)
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until interrupted."""
        self.server.run(sockets=[self._sock])

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Serve in a daemon thread; returns once it accepts connections."""
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self._sock])), name="streamtap-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.server.started and self._thread.is_alive():
            time.sleep(0.005)  # polling uvicorn's own "started" flag; it offers no event to wait on
        if not self.server.started:
            msg = f"The web server did not start within {timeout} s on {self.url}."
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        """Shut down and wait for the thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
