"""``streamtap serve`` and ``streamtap worker``: serve a module on the web, or run its requests from Redis.

::

    streamtap serve TARGET [--host H] [--port P] [--workers N] [--token T] [--redis URL] [--run-in-process]
    streamtap worker TARGET --redis URL [--concurrency N]

``TARGET`` is ``package.module:attr`` (as uvicorn's ``app:app``): a
:class:`~streamtap.ModuleBase` instance, or a zero-argument callable returning
one (called per conversation, or per request in a worker).

Without ``--redis``, ``serve`` runs as :func:`streamtap.web.serve` does: the
runs in the web process, events and chats in its memory. With ``--redis``
(the ``streamtap-redis`` distribution, ``pip install 'streamtap[redis]'``), the
web process only enqueues run requests and reads run logs, so any number of
web processes (``--workers N``) and worker processes share the chats;
``--run-in-process`` also runs the requests in the web process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import typing as t

from .exceptions import MissingDependencyError, UsageError
from .module import ModuleBase

__all__ = ["load_target", "serve_main", "worker_main"]

Target = ModuleBase | t.Callable[[], ModuleBase]


def load_target(spec: str) -> Target:
    """The module (or zero-argument factory) named by ``package.module:attr``.

    Raises:
        UsageError: the spec is malformed, the module cannot be imported, the
            attribute is missing, or it is neither a ModuleBase nor callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        msg = f"TARGET must be 'package.module:attr' (a ModuleBase instance or a zero-argument factory), got {spec!r}."
        raise UsageError(msg)
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: TARGET may be a module of the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"TARGET {spec!r}: cannot import {module_name!r} ({exc}). Is it on PYTHONPATH (or in the current directory)?"
        raise UsageError(msg) from None
    value: t.Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            msg = f"TARGET {spec!r}: {module_name!r} has no attribute {attr!r}."
            raise UsageError(msg) from None
    if isinstance(value, ModuleBase):
        return value
    if isinstance(value, type) and issubclass(value, ModuleBase):
        return value  # the class is a zero-argument factory of instances
    if callable(value):
        return t.cast(t.Callable[[], ModuleBase], value)
    msg = f"TARGET {spec!r} is {type(value).__name__}, not a ModuleBase instance nor a zero-argument function returning one."
    raise UsageError(msg)


def _redis() -> t.Any:
    try:
        return importlib.import_module("streamtap_redis.serve")
    except ImportError as exc:
        raise MissingDependencyError("--redis (streamtap-redis)", "redis") from exc


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamtap serve",
        description="Serve a module with the streamtap web app (chat endpoints, event streams, the page).",
    )
    p.add_argument(
        "target", metavar="TARGET", help="package.module:attr -- a ModuleBase instance or a zero-argument factory"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; others need --token)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="web processes (more than 1 needs --redis)")
    p.add_argument(
        "--token",
        default=os.environ.get("STREAMTAP_TOKEN"),
        help="access token required by the API (env STREAMTAP_TOKEN)",
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("STREAMTAP_REDIS_URL"),
        metavar="URL",
        help="share run logs and chats through Redis; runs go to workers (env STREAMTAP_REDIS_URL)",
    )
    p.add_argument("--prefix", default="streamtap", help="Redis key prefix (default streamtap)")
    p.add_argument(
        "--run-in-process", action="store_true", help="with --redis: run the requests in the web process(es) too"
    )
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
        "--shutdown-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="one web process: on SIGTERM/Ctrl-C, seconds running answers may take before they are cancelled (default 10)",
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
    return p


def _serving_options(args: argparse.Namespace) -> dict[str, t.Any]:
    """The options of :func:`streamtap.web.serve` that ``streamtap serve`` takes from its command line."""
    return {
        "token": args.token,
        "allowed_hosts": args.allowed_host,
        "allowed_origins": args.allowed_origin,
        "shutdown_grace": args.shutdown_grace,
        "cancel_on_disconnect": True if args.cancel_on_disconnect else None,
        "detach_timeout": args.detach_timeout,
    }


def serve_main(argv: t.Sequence[str]) -> int:
    """``streamtap serve``; returns the exit status."""
    args = _serve_parser().parse_args(list(argv))
    try:
        return _serve(args)
    except UsageError as exc:
        print(f"streamtap serve: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"streamtap serve: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from .web.server import check_bind

    check_bind(args.host, args.token)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}.")
    if args.run_in_process and not args.redis:
        raise UsageError(
            "--run-in-process only applies with --redis URL (without it runs are always in the web process)."
        )
    target = load_target(args.target)
    if not args.redis:
        if args.workers > 1:
            raise UsageError(
                f"--workers {args.workers} needs --redis URL: without it each process keeps its own chats and run events, "
                "so a reload or a stop that lands on another process would miss them."
            )
        from .web import create_app, serve

        serve(create_app(target, token=args.token), args.host, args.port, **_serving_options(args))
        return 0
    served = _redis()
    from streamtap_redis.connection import RedisUnavailable, connect

    async def check() -> None:
        client = await connect(args.redis)
        await client.aclose()

    try:
        asyncio.run(check())
    except RedisUnavailable as exc:
        raise ConnectionError(str(exc)) from None
    if args.workers == 1:
        from .web import serve

        app = served.create_redis_app(
            target, args.redis, prefix=args.prefix, run_in_process=args.run_in_process, token=args.token
        )
        serve(app, args.host, args.port, **_serving_options(args))
        return 0
    import uvicorn

    os.environ.update(
        STREAMTAP_SERVE_TARGET=args.target,
        STREAMTAP_SERVE_REDIS=args.redis,
        STREAMTAP_SERVE_PREFIX=args.prefix,
        STREAMTAP_SERVE_TOKEN=args.token or "",
        STREAMTAP_SERVE_HOST=args.host,
        STREAMTAP_SERVE_IN_PROCESS="1" if args.run_in_process else "0",
        STREAMTAP_SERVE_ALLOWED_HOSTS=json.dumps(args.allowed_host),
        STREAMTAP_SERVE_ALLOWED_ORIGINS=json.dumps(args.allowed_origin),
    )
    uvicorn.run(
        "streamtap_redis.serve:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamtap worker", description="Run the requests of web processes started with --redis."
    )
    p.add_argument(
        "target", metavar="TARGET", help="package.module:attr -- a ModuleBase instance or a zero-argument factory"
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("STREAMTAP_REDIS_URL"),
        metavar="URL",
        help="the Redis URL (env STREAMTAP_REDIS_URL)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="runs going at once at most (default 8)")
    p.add_argument("--prefix", default="streamtap", help="Redis key prefix (default streamtap)")
    p.add_argument(
        "--claim-timeout",
        type=float,
        default=30.0,
        help="seconds before a dead worker's request is taken over (default 30)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds SIGTERM waits for runs going before cancelling them (default 10)",
    )
    return p


def worker_main(argv: t.Sequence[str]) -> int:
    """``streamtap worker``; returns the exit status."""
    from .exporting import traces_from_env

    args = _worker_parser().parse_args(list(argv))
    try:
        if not args.redis:
            raise UsageError(
                "streamtap worker needs --redis URL (or STREAMTAP_REDIS_URL): the Redis the web processes use."
            )
        if args.concurrency < 1 or not args.claim_timeout > 0:
            raise UsageError(
                f"--concurrency must be at least 1 and --claim-timeout positive, got {args.concurrency} and {args.claim_timeout}."
            )
        target = load_target(args.target)
        served = _redis()
        with traces_from_env():
            asyncio.run(
                served.run_worker(
                    target,
                    args.redis,
                    prefix=args.prefix,
                    concurrency=args.concurrency,
                    claim_timeout=args.claim_timeout,
                    grace=args.grace,
                    ready=lambda w: print(f"streamtap worker {w.consumer}: ready", flush=True),
                )
            )
    except UsageError as exc:
        print(f"streamtap worker: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"streamtap worker: {exc}", file=sys.stderr)
        return 1
    return 0
