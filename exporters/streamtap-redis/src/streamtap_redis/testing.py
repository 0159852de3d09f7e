"""A real ``redis-server`` on a free loopback port, for tests and benchmarks.

::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

No persistence (``--save '' --appendonly no``): a restart starts empty, as
after a crash of a Redis without persistence.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1``.

    Args:
        port: the port (default: a free one).
        password: ``requirepass`` (the URL then carries it).

    Raises:
        RuntimeError: ``redis-server`` is not installed (install the Debian package ``redis-server``).
    """

    def __init__(self, port: int | None = None, *, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            msg = "redis-server is not installed; install it (apt-get install redis-server, or run scripts/test.sh, which does)."
            raise RuntimeError(msg)
        self.exe = exe
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="streamtap-redis-")

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it accepts connections."""
        args = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"redis-server exited with status {self.proc.returncode} on port {self.port}."
                raise RuntimeError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(100):  # +PONG, or -NOAUTH with a password: it answers
                        return self
            except OSError:
                time.sleep(0.01)  # the server is starting; nothing to wait on but its port
        self.stop()
        msg = f"redis-server did not accept connections on port {self.port} within {timeout} s."
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """``kill -9`` the server (its data is gone)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        """Kill it and start it again on the same port, empty."""
        self.kill()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()

    def __repr__(self) -> str:
        return f"<RedisServer port={self.port} running={self.proc is not None}>"
