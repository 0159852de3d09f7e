"""A real ``redis-server`` on a free loopback port, for tests and benchmarks.

::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

No persistence (``--save '' --appendonly no``): a restart starts empty, as
after a crash of a Redis without persistence.

``RedisServer(tls=True)`` serves TLS only (``--tls-port``, no plain port)
with a certificate for ``127.0.0.1``/``localhost`` signed by a throw-away CA
(made with the ``trustme`` package, a test dependency); its :attr:`~RedisServer.url`
is ``rediss://...?ssl_ca_certs=<that CA>``, so a client trusts it and nothing else.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
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
        tls: serve TLS only, with a certificate from a CA made for this server (see :attr:`ca_file`).

    Raises:
        RuntimeError: ``redis-server`` is not installed (install the Debian package ``redis-server``),
            or ``tls`` without the ``trustme`` package.
    """

    def __init__(self, port: int | None = None, *, password: str | None = None, tls: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            msg = "redis-server is not installed; install it (apt-get install redis-server, or run scripts/test.sh, which does)."
            raise RuntimeError(msg)
        self.exe = exe
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="streamtap-redis-")
        self.tls = tls
        self.ca_file: str | None = None
        """The CA certificate (PEM) that signed the server's certificate (``tls`` only)."""
        if tls:
            self._make_certificates()

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``; with ``tls``, ``rediss://...?ssl_ca_certs=<CA file>``."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _make_certificates(self) -> None:
        try:
            import trustme
        except ImportError:
            msg = "RedisServer(tls=True) makes its certificates with the trustme package: pip install trustme."
            raise RuntimeError(msg) from None
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        folder = self._dir.name
        self.ca_file = os.path.join(folder, "ca.pem")
        self._cert_file = os.path.join(folder, "server.pem")
        self._key_file = os.path.join(folder, "server.key")
        ca.cert_pem.write_to_path(self.ca_file)
        cert.cert_chain_pems[0].write_to_path(self._cert_file)
        cert.private_key_pem.write_to_path(self._key_file)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it accepts connections."""
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self._cert_file]
            listen += ["--tls-key-file", self._key_file, "--tls-ca-cert-file", str(self.ca_file)]
            listen += ["--tls-auth-clients", "no"]
        args = [
            self.exe,
            *listen,
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
                if self._answers():
                    return self
            except OSError:
                time.sleep(0.01)  # the server is starting; nothing to wait on but its port
        self.stop()
        msg = f"redis-server did not accept connections on port {self.port} within {timeout} s."
        raise RuntimeError(msg)

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
            sock = raw
            if self.tls:
                sock = ssl.create_default_context(cafile=self.ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            return bool(sock.recv(100))  # +PONG, or -NOAUTH with a password: it answers

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
        return f"<RedisServer port={self.port} tls={self.tls} running={self.proc is not None}>"
