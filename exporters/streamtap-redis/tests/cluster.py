"""Real processes for the cluster tests: `streamtap serve --redis` web processes and `streamtap worker`s."""

from __future__ import annotations

import json
import os
import pathlib
import selectors
import socket
import subprocess
import sys
import time
import typing as t

import httpx

from streamtap_redis.testing import free_port

HERE = pathlib.Path(__file__).parent


def env(base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a cluster process: the targets importable, the model server's URL."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(HERE), out.get("PYTHONPATH", "")])
    out["OPENAI_BASE_URL"] = base_url
    out["STREAMTAP_RECORD_KEY"] = "cluster-test-key-0123456789abcdef"  # every process verifies pause records alike
    out.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    out.update(extra)
    return out


class Proc:
    """One child process (a web process or a worker), killed at the end."""

    def __init__(self, args: list[str], environ: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_line(self, needle: bytes, timeout: float = 20.0) -> None:
        """Wait until stdout shows ``needle``."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                seen += line
                if needle in line:
                    return
                if not line and self.proc.poll() is not None:
                    break
        raise AssertionError(f"{self.args[3:5]} did not print {needle!r} in {timeout} s: {seen!r} {self.stderr()}")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def kill(self) -> None:
        """``kill -9``."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamtap.cli", *args]


def start_worker(
    redis_url: str,
    prefix: str,
    base_url: str,
    *extra: str,
    target: str = "cluster_targets:chat",
    environ: dict[str, str] | None = None,
) -> Proc:
    proc = Proc(
        cli("worker", target, "--redis", redis_url, "--prefix", prefix, *extra), {**env(base_url), **(environ or {})}
    )
    proc.wait_line(b"ready")
    return proc


def start_web(
    redis_url: str, prefix: str, base_url: str, *extra: str, target: str = "cluster_targets:chat"
) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        cli("serve", target, "--redis", redis_url, "--prefix", prefix, "--port", str(port), *extra), env(base_url)
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"streamtap serve exited: {proc.stderr()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except (OSError, httpx.HTTPError):
            time.sleep(0.05)  # the process is starting; its port is all there is to wait on
    proc.stop()
    raise AssertionError("streamtap serve did not start within 20 s")


def chat_body(chat_id: str, text: str, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        **extra,
    }


async def sse_data(lines: t.AsyncIterator[str]) -> t.AsyncIterator[tuple[str | None, str]]:
    """(id, data) of each SSE event."""
    ident: str | None = None
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield ident, "\n".join(data)
            ident, data = None, []
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def ui_parts(data: str) -> dict[str, t.Any] | None:
    return None if data == "[DONE]" else t.cast(dict, json.loads(data))
