"""Graceful shutdown: SIGTERM / SIGINT mid-run against real processes (``streamtap demo``, ``serve``), traces to a real OTLP receiver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import typing as t

import httpx
import pytest

from streamtap.exceptions import UsageError
from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

from .helpers import Talker, chat_body, check_ui_stream, parse_frames

pytest.importorskip("openai")
pytest.importorskip("streamtap_otlp")
from streamtap_otlp.testing import OtlpReceiver

QUESTION = {
    "id": "bye",
    "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "weather in Paris?"}]}],
}


def _env(receiver: OtlpReceiver | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    if receiver is not None:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_BSP_SCHEDULE_DELAY="60000",
        )
    return env


def _demo(receiver: OtlpReceiver | None, *options: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "demo", "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(receiver),
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "open http" in line:
            return proc, line.split("open ", 1)[1].split()[0].rstrip("/")
    proc.kill()
    raise AssertionError(f"the demo did not start: {proc.communicate(timeout=10)}")


class Signalled(t.NamedTuple):
    parts: list[dict[str, t.Any]]
    done: bool  # saw data: [DONE]
    exit_code: int
    seconds_to_exit: float  # from the (first) signal to the process's exit
    stderr: str


def _signal_mid_run(
    proc: subprocess.Popen[str],
    url: str,
    signals: t.Sequence[int],
    body: dict[str, t.Any] = QUESTION,
    when: str = '"text-delta"',
) -> Signalled:
    """POST a chat; once ``when`` (a part type) arrived send ``signals``; read the stream to its end; wait for the exit."""
    raw: list[str] = []
    try:
        return _read_and_signal(proc, url, signals, body, when, raw)
    finally:
        if proc.poll() is None:  # a failed test never leaves the process behind
            proc.kill()
            proc.wait(10)


def _read_and_signal(
    proc: subprocess.Popen[str], url: str, signals: t.Sequence[int], body: dict[str, t.Any], when: str, raw: list[str]
) -> Signalled:
    sent_at = 0.0
    try:
        with httpx.Client(timeout=30) as client, client.stream("POST", url + "/api/chat", json=body) as r:
            for chunk in r.iter_text():
                raw.append(chunk)
                if not sent_at and when in "".join(raw):
                    sent_at = time.monotonic()
                    for sig in signals:
                        proc.send_signal(sig)
    except httpx.HTTPError as exc:  # a stream cut without its end is what this test must not see
        raise AssertionError(f"the stream broke: {exc!r}; read {''.join(raw)[-500:]!r}") from None
    assert sent_at, f"the answer ended before {when}: nothing to interrupt"
    code = proc.wait(30)
    took = time.monotonic() - sent_at
    frames = parse_frames("".join(raw))
    parts = [json.loads(f["data"]) for f in frames if f.get("data") not in (None, "[DONE]")]
    return Signalled(
        parts, any(f.get("data") == "[DONE]" for f in frames), code, took, proc.stderr.read() if proc.stderr else ""
    )


def _root_and_children(receiver: OtlpReceiver, run_id: str) -> tuple[t.Any, list[t.Any]]:
    spans = receiver.wait_for_spans(2, timeout=10)
    [root] = [s for s in spans if s.attributes.get("streamtap.run.id") == run_id]
    children = [s for s in spans if s.attributes.get("streamtap.root.id") == run_id and s is not root]
    return root, children


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_signal_mid_run_cancels_after_the_grace_ends_the_stream_and_flushes_the_spans(sig):
    with OtlpReceiver() as receiver:
        proc, url = _demo(receiver, "--delay", "0.1", "--no-reasoning", "--shutdown-grace", "1")
        res = _signal_mid_run(
            proc, url, [sig], when='"tool-input-start"'
        )  # mid-run: the second model call is still to come
        check_ui_stream(res.parts)
        assert res.parts[-1] == {"type": "abort", "reason": "shutdown"} and res.done, res.parts[-3:]
        assert res.exit_code == 0, res.stderr
        assert 1.0 <= res.seconds_to_exit < 6, res.seconds_to_exit
        root, children = _root_and_children(receiver, res.parts[0]["messageMetadata"]["runId"])
    assert root.name == "invoke_agent weather_agent" and root.parent_span_id is None
    assert (
        root.attributes["streamtap.status"] == "cancelled" and root.attributes["streamtap.cancel.reason"] == "shutdown"
    )
    names = sorted(s.name for s in children)
    assert any(n.startswith("chat ") for n in names) and any(n.startswith("execute_tool ") for n in names), names
    assert all(s.parent_span_id for s in children)
    print(
        f"\n{sig.name}: {1 + len(children)} spans received (root included), exit {res.seconds_to_exit:.2f} s after the signal"
    )


def test_demo_sigterm_lets_a_run_finish_within_the_grace():
    with OtlpReceiver() as receiver:
        proc, url = _demo(receiver, "--delay", "0.02", "--shutdown-grace", "10")
        res = _signal_mid_run(proc, url, [signal.SIGTERM])
        check_ui_stream(res.parts)
        assert res.parts[-1]["type"] == "finish" and res.done
        assert "Paris" in "".join(p["delta"] for p in res.parts if p["type"] == "text-delta")
        assert res.exit_code == 0, res.stderr
        assert res.seconds_to_exit < 6, res.seconds_to_exit  # the run's end, not the 10 s grace
        root, children = _root_and_children(receiver, res.parts[0]["messageMetadata"]["runId"])
    assert root.attributes["streamtap.status"] == "ok" and len(children) >= 3


def test_demo_second_signal_exits_at_once():
    proc, url = _demo(None, "--delay", "0.1", "--shutdown-grace", "60")
    res = _signal_mid_run_expecting_a_cut(proc, url)
    assert res.exit_code == 128 + signal.SIGTERM, res.stderr
    assert res.seconds_to_exit < 3, res.seconds_to_exit
    assert "again: exiting now" in res.stderr


def _signal_mid_run_expecting_a_cut(proc: subprocess.Popen[str], url: str) -> Signalled:
    """As :func:`_signal_mid_run` with two SIGTERMs, where the stream is cut by the process exiting."""
    try:
        return _two_signals(proc, url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _two_signals(proc: subprocess.Popen[str], url: str) -> Signalled:
    sent_at = 0.0
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", url + "/api/chat", json=QUESTION) as r,
        pytest.raises(httpx.HTTPError),  # the process is gone: the stream is cut, as asked
    ):
        for chunk in r.iter_text():
            if not sent_at and '"start-step"' in chunk:
                sent_at = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                _wait_for_line(proc, "shutting down")
                proc.send_signal(signal.SIGTERM)
    code = proc.wait(10)
    return Signalled([], False, code, time.monotonic() - sent_at, proc.stderr.read() if proc.stderr else "")


def _wait_for_line(proc: subprocess.Popen[str], needle: str) -> None:
    """Read the process's stderr until a line holds ``needle`` (the first signal was handled)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} line on stderr")


SERVE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import streamtap_otlp
    from streamtap.web import create_app, serve
    from web.helpers import Talker

    export = streamtap_otlp.configure(endpoint=sys.argv[2], protocol="grpc", service_name="serve-test")
    app = create_app(Talker(delay=0.05, reasoning=False))
    serve(app, port=0, log_level="info", shutdown_grace=0.5, detach_timeout=30, cancel_on_disconnect=True)
    print("serve returned", app.state.chat.detach_timeout, app.state.chat.cancel_on_disconnect, flush=True)
    """
)


def test_serve_sigterm_mid_run_ends_the_stream_and_flushes_the_spans():
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with OtlpReceiver() as receiver:
        env = _env(None) | {"OTEL_BSP_SCHEDULE_DELAY": "60000"}
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_SCRIPT, tests_dir, receiver.grpc_endpoint],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            url = None
            for line in proc.stderr:
                if "serving on " in line:
                    url = line.split("serving on ", 1)[1].split()[0]
                    break
            assert url is not None and url.startswith("http://127.0.0.1:") and not url.endswith(":8000")
            words = " ".join(f"w{i}" for i in range(200))
            res = _signal_mid_run(proc, url, [signal.SIGTERM], chat_body(words, chat_id="served"))
        finally:
            if proc.poll() is None:  # never leave the served process behind
                proc.kill()
                proc.wait(10)
        check_ui_stream(res.parts)
        assert res.parts[-1] == {"type": "abort", "reason": "shutdown"} and res.done
        assert res.exit_code == 0 and proc.stdout is not None and "serve returned 30.0 True" in proc.stdout.read()
        assert res.seconds_to_exit < 5
        [root] = [
            s
            for s in receiver.wait_for_spans(1)
            if s.attributes.get("streamtap.run.id") == res.parts[0]["messageMetadata"]["runId"]
        ]
    assert root.attributes["streamtap.cancel.reason"] == "shutdown" and root.resource["service.name"] == "serve-test"


# -- in a thread: stop(grace) ---------------------------------------------------------------------


async def test_stop_ends_every_connected_stream_properly(client):
    srv = BackgroundServer(create_app(Talker(delay=0.05, reasoning=False))).start()
    words = " ".join(f"w{i}" for i in range(200))
    raw: list[str] = []
    events: list[str] = []
    async with client.stream("POST", srv.url + "/api/chat", json=chat_body(words, chat_id="s1")) as r:
        reading = r.aiter_text()
        async for chunk in reading:
            raw.append(chunk)
            if '"text-delta"' in chunk:
                break
        run_id = json.loads(parse_frames("".join(raw))[1]["data"])["messageMetadata"]["runId"]
        async with client.stream("GET", f"{srv.url}/api/runs/{run_id}/events") as ev:
            it = ev.aiter_text()
            events.append(await it.__anext__())
            stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop, 0.2)
            events += [chunk async for chunk in it]
            raw += [chunk async for chunk in reading]
            await stopping
    parts = [json.loads(f["data"]) for f in parse_frames("".join(raw)) if f.get("data") not in (None, "[DONE]")]
    check_ui_stream(parts)
    assert parts[-1] == {"type": "abort", "reason": "shutdown"} and "data: [DONE]" in "".join(raw)
    last = json.loads(parse_frames("".join(events))[-1]["data"])
    assert last["kind"] == "end" and last["run"]["run_id"] == run_id and last["status"] == "cancelled"
    with pytest.raises(httpx.ConnectError):  # no longer accepting
        await client.get(srv.url + "/")


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "10", None])
def test_shutdown_grace_must_be_seconds(bad):
    with pytest.raises(UsageError, match="shutdown_grace must be a number of seconds") as info:
        BackgroundServer(create_app(Talker()), shutdown_grace=bad)
    assert repr(bad) in str(info.value)


def test_demo_refuses_a_bad_grace_or_detach_timeout(capsys):
    from streamtap.demo import main

    assert main(["--port", "0", "--shutdown-grace", "-1", "--exit-after", "0"]) == 2
    assert "shutdown_grace must be a number of seconds >= 0" in capsys.readouterr().err
    assert main(["--port", "0", "--detach-timeout", "0", "--exit-after", "0"]) == 2
    assert "detach_timeout must be a positive number of seconds" in capsys.readouterr().err


def test_demo_sigterm_as_soon_as_the_url_is_printed_exits_cleanly():
    """The URL is printed once the signal handlers are in place: a SIGTERM right after it is a graceful stop."""
    proc, _ = _demo(None, "--delay", "0")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - started < 5


def test_serve_refuses_run_options_for_an_app_it_cannot_set_them_on():
    from streamtap.web import serve

    async def plain_asgi(scope: t.Any, receive: t.Any, send: t.Any) -> None:  # not made by create_app
        raise AssertionError("never served")

    with pytest.raises(UsageError, match="need an app made by streamtap.web.create_app"):
        serve(plain_asgi, port=0, detach_timeout=5)
    with pytest.raises(UsageError, match="shutdown_grace must be a number of seconds"):
        serve(create_app(Talker()), port=0, shutdown_grace=-2)
