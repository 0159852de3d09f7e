"""``streamtap demo``: the seeds' streaming weather agent, in the browser or in the terminal.

``streamtap demo`` starts the embedded OpenAI-compatible model server (or
uses ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``--model`` when given), serves
the weather agent with the built-in page, prints the URL and runs until
SIGTERM or Ctrl-C, then shuts down gracefully: running answers get
``--shutdown-grace`` seconds (default 10) to finish, then are cancelled, and
the traces are flushed before it exits (a second signal exits at once). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (and ``streamtap-otlp``
installed) its traces go to Jaeger, Tempo or any OTLP collector.

``streamtap demo --terminal`` runs the same agent once in the terminal:
``output:`` lines carry the answer as it streams, ``trace:`` lines the steps
(tool calls, model calls), as the LazyLLM seed prints them; with
``streamtap-console`` installed and a terminal attached, the live run tree
is drawn too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import typing as t

from ..exporting import traces_from_env

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamtap demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; others need --token)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--token",
        default=os.environ.get("STREAMTAP_TOKEN"),
        help="access token required by the API (env STREAMTAP_TOKEN)",
    )
    p.add_argument(
        "--model", default=None, help="model name (default OPENAI_MODEL, else the embedded server's fake-gpt)"
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="an OpenAI-compatible endpoint (default OPENAI_BASE_URL, else the embedded server)",
    )
    p.add_argument(
        "--delay", type=float, default=0.03, help="embedded server: seconds per streamed token (default 0.03)"
    )
    p.add_argument("--no-reasoning", action="store_true", help="embedded server: no reasoning deltas")
    p.add_argument("--terminal", action="store_true", help="run the agent in the terminal instead of serving the page")
    p.add_argument("--question", default=None, help="--terminal: the question (default: the seed's weather question)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer to this Host name (repeatable; loopback names always)",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of this origin use the API, e.g. https://app.example.com (repeatable)",
    )
    p.add_argument(
        "--error-detail",
        choices=("short", "full"),
        default="short",
        help="what the browser is told of failures (default short; full is still redacted)",
    )
    p.add_argument(
        "--trace-url",
        default=os.environ.get("STREAMTAP_TRACE_URL"),
        metavar="TEMPLATE",
        help="link each answer to its trace, e.g. http://localhost:16686/trace/{trace_id} (env STREAMTAP_TRACE_URL)",
    )
    p.add_argument(
        "--exit-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop serving after this many seconds (smoke tests)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, seconds running answers may take to finish before they are cancelled (default 10)",
    )
    p.add_argument(
        "--cancel-on-disconnect",
        action="store_true",
        help="cancel an answer when its last reader disconnects (default: it goes on, so a reload resumes it)",
    )
    p.add_argument(
        "--detach-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cancel an answer nobody has read for this many seconds (default: never)",
    )
    p.add_argument(
        "--redis", default=None, metavar="URL",
        help="scale-out mode: the web process only enqueues and reads run logs in Redis; a worker process runs the agent",
    )  # fmt: skip
    return p


def worker_agent() -> t.Any:
    """The demo's agent for ``streamtap worker streamtap.demo:worker_agent`` (the model from ``OPENAI_BASE_URL``)."""
    from .weather import weather_agent

    return weather_agent(
        base_url=os.environ.get("OPENAI_BASE_URL"), model=os.environ.get("OPENAI_MODEL"), asynchronous=True
    )


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> t.Iterator[tuple[str, str]]:
    """Yield (base_url, description): the given endpoint, or a running embedded server."""
    url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if url:
        yield url, url
        return
    from ..testing import FakeOpenAI

    with FakeOpenAI(token_delay=args.delay, reasoning=not args.no_reasoning) as srv:
        yield srv.base_url, f"{srv.base_url} (embedded fake model)"


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.exit_after is not None and args.exit_after < 0:
        print(f"streamtap demo: --exit-after must be >= 0 seconds, got {args.exit_after}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            export = stack.enter_context(traces_from_env(service_name="streamtap-demo"))
            args.tracing = getattr(export, "tracing", None)  # the UI stream then links each answer to its trace
        except Exception as exc:  # a bad OTLP setting must not stop the demo
            print(f"streamtap demo: traces are not exported ({exc})", file=sys.stderr)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        with _endpoint(args) as (base_url, described):
            from .weather import weather_agent

            if args.terminal:
                return _terminal(weather_agent(base_url=base_url, model=args.model), args.question)

            factory = agent_factory(base_url, args.model)
            if args.redis:
                return _web_on_redis(factory, args, described, base_url)
            return _web(factory, args, described)
    except KeyboardInterrupt:
        return 130


def agent_factory(base_url: str, model: str | None = None) -> t.Callable[[], t.Any]:
    """The demo's per-conversation factory: a new weather agent per chat, all sharing one model client.

    The model (an :class:`~streamtap.llm.openai.AsyncOpenAIChat`, holding the
    ``openai`` client and its connection pool) is made once; each
    conversation's agent uses it. An idle conversation then costs an agent
    object (a few KB), and no socket or file descriptor.
    """
    from .weather import weather_agent

    # The web app runs each chat as a task: the async agent keeps them off threads.
    shared = weather_agent(base_url=base_url, model=model, asynchronous=True)
    llm = shared.llm

    def factory() -> t.Any:
        return weather_agent(llm, asynchronous=True)

    return factory


def _web(factory: t.Callable[[], t.Any], args: argparse.Namespace, described: str) -> int:
    from ..exceptions import UsageError
    from ..web import create_app
    from ..web.server import BackgroundServer, check_bind

    try:
        check_bind(args.host, args.token)
    except UsageError as exc:
        print(f"streamtap demo: {exc}", file=sys.stderr)
        return 2
    from ..web.security import allow_serving

    try:
        app = create_app(
            factory,
            token=args.token,
            title="streamtap demo",
            error_detail=args.error_detail,
            tracing=getattr(args, "tracing", None),
            trace_url=args.trace_url,
        )
        allow_serving(app, args.host, allowed_hosts=args.allowed_host, allowed_origins=args.allowed_origin)
        app.state.chat.configure(cancel_on_disconnect=args.cancel_on_disconnect, detach_timeout=args.detach_timeout)
        server = BackgroundServer(app, args.host, args.port, log_level="warning", shutdown_grace=args.shutdown_grace)
    except UsageError as exc:
        print(f"streamtap demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"streamtap demo: cannot listen on {args.host}:{args.port} ({exc.strerror}); try --port 0", file=sys.stderr
        )
        return 2
    # The token is not printed (terminal scrollback, CI logs): the user knows it, having given it.
    url = server.url + "/" + ("#token=<your token>" if args.token else "")

    def ready() -> None:  # printed once SIGTERM / Ctrl-C are handled: a signal sent after the URL shuts down gracefully
        print(f"streamtap demo: model at {described}", flush=True)
        print(f"streamtap demo: open {url}  (Ctrl-C to stop)", flush=True)

    # SIGTERM / Ctrl-C (or --exit-after) shut down gracefully; the traces are flushed when main() leaves its block.
    server.run(stop_after=args.exit_after, ready=ready)
    return 0


def _web_on_redis(factory: t.Callable[[], t.Any], args: argparse.Namespace, described: str, base_url: str) -> int:
    """The demo as two processes: this web process (enqueues, reads logs) and a ``streamtap worker`` running the agent."""
    import subprocess

    try:
        from streamtap_redis.connection import RedisUnavailable, connect
        from streamtap_redis.serve import create_redis_app
    except ImportError:
        print(
            "streamtap demo: --redis needs streamtap-redis: pip install 'streamtap[redis]' (and exporters/streamtap-redis)",
            file=sys.stderr,
        )
        return 2
    import asyncio

    from ..exceptions import UsageError
    from ..web.security import allow_serving
    from ..web.server import BackgroundServer, check_bind

    async def check() -> None:
        client = await connect(args.redis)
        await client.aclose()

    try:
        check_bind(args.host, args.token)
        asyncio.run(check())
    except (UsageError, RedisUnavailable) as exc:
        print(f"streamtap demo: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    env = {**os.environ, "OPENAI_BASE_URL": base_url}
    if args.model:
        env["OPENAI_MODEL"] = args.model
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamtap.cli", "worker", "streamtap.demo:worker_agent", "--redis", args.redis], env=env
    )
    try:
        app = create_redis_app(
            factory, args.redis, token=args.token, title="streamtap demo", error_detail=args.error_detail
        )
        allow_serving(app, args.host, allowed_hosts=args.allowed_host, allowed_origins=args.allowed_origin)
        server = BackgroundServer(app, args.host, args.port, log_level="warning")
        url = server.url + "/" + ("#token=<your token>" if args.token else "")
        print(f"streamtap demo: model at {described}; runs in worker process {worker.pid} via Redis", flush=True)
        print(f"streamtap demo: open {url}  (Ctrl-C to stop)", flush=True)
        if args.exit_after is None:
            server.run()
            return 0
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that the worker process is stopped too
        server.start()
        try:
            threading.Event().wait(args.exit_after)
        finally:
            server.stop()
            signal.signal(signal.SIGTERM, previous)
        return 0
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def _exit_on_sigterm(signum: int, frame: t.Any) -> None:
    raise SystemExit(128 + signum)


def _terminal(agent: t.Any, question: str | None) -> int:
    from .weather import QUERY

    question = question or QUERY
    view, console = None, None
    try:
        from rich.console import Console

        from streamtap_console import LiveView

        if sys.stdout.isatty():
            console = Console()
            view = LiveView(console)
    except ImportError:
        pass

    def say(line: str) -> None:
        if console is not None:
            console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    say(f"question: {question}")
    if view is not None:
        view.start()
    try:
        for ev in agent.stream(question):
            line = _line(ev, agent)
            if line:
                say(line)
    finally:
        if view is not None:
            view.stop()
    return 0


def _line(ev: t.Any, agent: t.Any) -> str | None:
    """An ``output:`` or ``trace:`` line for one event (or ``None``)."""
    run = ev.run
    if ev.kind == "chunk":
        if ev.channel == "text" and ev.delta:
            return f"output: {ev.delta}"
        return None
    if ev.kind == "tool":
        if ev.phase == "requested":
            return f"trace: tool {ev.name} requested {ev.arguments}"
        if ev.phase == "result":
            return f"trace: tool {ev.name} -> {ev.result}"
        return f"trace: tool {ev.name} failed: {ev.error.message if ev.error else ''}"
    if ev.kind == "start" and run.kind in ("llm", "tool"):
        return f"trace: {run.kind} {run.name} started"
    if ev.kind == "end":
        took = f" in {ev.timings.duration:.2f} s" if ev.timings else ""
        return f"trace: {run.kind} {run.name} {ev.status}{took}"
    return None
