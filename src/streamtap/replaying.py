"""``streamtap record`` and ``streamtap replay``: record a program's runs, replay them into the page or a trace backend.

``streamtap record [-o FILE] -- CMD ARGS...``
    runs ``CMD`` with ``STREAMTAP_RECORD=FILE`` and, for Python programs, a
    ``sitecustomize`` that calls :func:`streamtap.recording.process_startup`
    first thing, so every run of the program is written to ``FILE`` (default
    ``streamtap-recording.jsonl``) with no code change. The exit status is the program's.

``streamtap replay FILE [--speed X] [--root ID]``
    serves the built-in page with the recorded runs published into its event
    store at the original pace (``--speed 4``: four times faster; ``--speed 0``:
    at once), and prints each run's read-only link ``/?run=<root id>``.

``streamtap replay FILE --otlp [ENDPOINT]``
    exports the recorded runs as OpenTelemetry spans over OTLP (to ENDPOINT, or
    as ``OTEL_EXPORTER_OTLP_*`` say), with their recorded times, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import typing as t

from .exceptions import UsageError
from .module import ModuleBase
from .recording import RECORD_ENV, Recording, RecordingError, event_from_dict, read_recording

__all__ = ["ReplayPublisher", "record_main", "replay_main", "replay_to_tracing"]

_SITECUSTOMIZE = '''\
"""Written by `streamtap record`: record this process's streamtap runs, then run the environment's own sitecustomize."""
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys

try:
    import streamtap.recording as _recording

    _recording.process_startup()
except Exception as _exc:  # the program runs anyway; say why nothing is recorded
    print(f"streamtap record: cannot record this process: {_exc}", file=_sys.stderr)
_here = _os.path.dirname(_os.path.abspath(__file__))
_spec = _machinery.PathFinder.find_spec("sitecustomize", [p for p in _sys.path if _os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _module = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
'''


def record_main(argv: t.Sequence[str]) -> int:
    """``streamtap record [-o FILE] -- CMD ARGS...``; returns the program's exit status."""
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        own, cmd = args[:cut], args[cut + 1 :]
    else:
        own, cmd = [], args
        while cmd and cmd[0].startswith("-"):
            own.append(cmd.pop(0))
            if own[-1] in ("-o", "--output") and cmd:
                own.append(cmd.pop(0))
    parser = argparse.ArgumentParser(
        prog="streamtap record", description="Record every streamtap run of a program as JSON lines."
    )
    parser.add_argument(
        "-o", "--output", default="streamtap-recording.jsonl", help="the recording file (default: %(default)s)"
    )
    ns = parser.parse_args(own)
    if not cmd:
        parser.error("give the program to run after --, e.g. streamtap record -o run.jsonl -- python app.py")
    out = pathlib.Path(ns.output).resolve()
    if out.is_dir():
        parser.error(f"--output {ns.output!r} is a directory; give a file name such as {str(out / 'run.jsonl')!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("", encoding="utf-8")  # a new recording; the processes append to it
    with tempfile.TemporaryDirectory(prefix="streamtap-record-") as hook:
        pathlib.Path(hook, "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
        env = dict(os.environ)
        env[RECORD_ENV] = str(out)
        env["PYTHONPATH"] = os.pathsep.join([hook, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        try:
            code = subprocess.call(cmd, env=env)
        except FileNotFoundError:
            print(f"streamtap record: no program {cmd[0]!r} (is it on PATH?)", file=sys.stderr)
            return 127
        except KeyboardInterrupt:
            code = 130
    try:
        rec = read_recording(out)
        print(f"streamtap record: {len(rec.lines)} events of {len(rec.roots())} runs in {out}", file=sys.stderr)
    except RecordingError:
        print(
            f"streamtap record: nothing was recorded in {out} (does the program use streamtap from Python?)",
            file=sys.stderr,
        )
    return code


# -- replay into the page ------------------------------------------------------------


class _ReplayOnly(ModuleBase):
    """The module of a replay server: it answers no chat."""

    name = "replay"

    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Refuse: a replay server shows recorded runs only."""
        raise UsageError("This server replays a recording and answers no chat; open the /?run=<id> links it printed.")


class ReplayPublisher:
    """Publishes a recording's runs into an :class:`~streamtap.web.store.EventStore`, at the recorded pace.

    Args:
        store: the event store the web app reads.
        lines: the recording's event lines (file order).
        speed: ``1`` the original pace, ``2`` twice as fast, ``0`` all at once.
    """

    def __init__(self, store: t.Any, lines: t.Sequence[t.Mapping[str, t.Any]], speed: float = 1.0) -> None:
        if not speed >= 0:
            raise UsageError(
                f"--speed must be 0 (at once) or a positive factor (1 = the original pace), got {speed!r}."
            )
        self.store = store
        self.lines = list(lines)
        self.speed = speed
        self.done = asyncio.Event()

    async def run(self) -> None:
        """Publish every line (create each root run at its first event, finish it after its last)."""
        last: dict[str, int] = {}
        for i, line in enumerate(self.lines):
            last[line["run"]["root_id"]] = i
        created: set[str] = set()
        t0 = self.lines[0].get("recorded_at", 0.0) if self.lines else 0.0
        start = time.monotonic()
        try:
            for i, line in enumerate(self.lines):
                root = line["run"]["root_id"]
                if self.speed > 0:
                    due = (float(line.get("recorded_at", t0)) - t0) / self.speed
                    wait = due - (time.monotonic() - start)
                    if wait > 0:
                        await asyncio.sleep(wait)
                if root not in created:
                    await self.store.create(root)
                    created.add(root)
                await self.store.append(root, {k: v for k, v in line.items() if k != "recorded_at"})
                if last[root] == i:
                    await self.store.finish(root)
        finally:
            self.done.set()


class _Publishing:
    """ASGI wrapper: starts the publisher on the server's loop when the app starts."""

    def __init__(self, app: t.Any, publisher: ReplayPublisher) -> None:
        self.app = app
        self.publisher = publisher
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] == "lifespan" and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.publisher.run())
        await self.app(scope, receive, send)


def _replay_page(rec: Recording, roots: list[str], speed: float, port: int, title: str) -> int:
    from .web import create_app
    from .web.server import BackgroundServer
    from .web.store import MemoryEventStore

    store = MemoryEventStore(ttl=7 * 24 * 3600.0, max_runs=max(1000, len(roots)))
    lines = [x for x in rec.lines if x["run"]["root_id"] in roots]
    publisher = ReplayPublisher(store, lines, speed)
    app = _Publishing(create_app(_ReplayOnly(), store=store, title=title), publisher)
    srv = BackgroundServer(app, port=port).start()
    try:
        pace = "at once" if speed == 0 else f"at {speed:g}x the recorded pace"
        print(f"streamtap replay: {len(roots)} run(s), {len(lines)} events, {pace}", flush=True)
        for root in roots:
            first = next(x for x in lines if x["run"]["root_id"] == root)
            print(f"  {first['run']['name']}: {srv.url}/?run={root}", flush=True)
        print("Ctrl-C to stop", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


# -- replay into a trace backend -------------------------------------------------------


def replay_to_tracing(tracing: t.Any, lines: t.Iterable[t.Mapping[str, t.Any]]) -> int:
    """Feed recorded event lines to a :class:`~streamtap.tracing.TracingSubscriber` (its :meth:`handle`); returns the runs.

    The spans get the recorded start times and durations; their ids are new.
    """
    runs = 0
    for line in lines:
        ev = event_from_dict(line)
        if ev.kind == "start":
            runs += 1
        tracing.handle(ev)
    return runs


def _replay_otlp(rec: Recording, roots: list[str], endpoint: str | None) -> int:
    try:
        import streamtap_otlp
    except ImportError:
        print(
            "streamtap replay --otlp needs the OTLP exporter: pip install streamtap-otlp (exporters/streamtap-otlp)",
            file=sys.stderr,
        )
        return 2
    export = streamtap_otlp.configure(endpoint=endpoint or None, metrics=False)
    if export.tracing is None:
        print(
            "streamtap replay: tracing is switched off (OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none); nothing exported",
            file=sys.stderr,
        )
        return 1
    export.tracing.unsubscribe()  # only the recording's runs, not this process's
    total = 0
    for root in roots:
        total += replay_to_tracing(export.tracing, rec.of(root))
    ok = export.force_flush()
    export.shutdown()
    where = (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "the default OTLP endpoint"
    )
    print(
        f"streamtap replay: {total} spans of {len(roots)} run(s) exported to {where}"
        + ("" if ok else " (the flush did not finish; see the log)")
    )
    return 0 if ok else 1


def replay_main(argv: t.Sequence[str]) -> int:
    """``streamtap replay FILE [--speed X] [--root ID] [--port N] [--otlp [ENDPOINT]]``."""
    parser = argparse.ArgumentParser(
        prog="streamtap replay", description="Replay a recording into the page, or into a trace backend over OTLP."
    )
    parser.add_argument("file", help="a recording (streamtap record, streamtap.recording.Recorder)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="1 = the recorded pace (default), 4 = four times faster, 0 = at once"
    )
    parser.add_argument("--root", action="append", help="replay only this root run id (repeatable; default: all)")
    parser.add_argument(
        "--port", type=int, default=8000, help="the page's port on 127.0.0.1 (default 8000; 0 = a free one)"
    )
    parser.add_argument("--title", default="streamtap replay", help="the page's title")
    parser.add_argument(
        "--otlp",
        nargs="?",
        const="",
        default=None,
        metavar="ENDPOINT",
        help="export spans over OTLP instead (default endpoint: OTEL_EXPORTER_OTLP_*)",
    )
    ns = parser.parse_args(list(argv))
    try:
        if ns.speed < 0:
            raise UsageError(f"--speed must be 0 (at once) or a positive factor, got {ns.speed!r}.")
        rec = read_recording(ns.file)
        roots = ns.root or rec.roots()
        for root in roots:
            rec.of(root)  # an unknown root is an error naming the ones there are
        if not roots:
            raise RecordingError(f"{ns.file!r} has a header but no events: nothing to replay.")
    except UsageError as exc:
        print(f"streamtap replay: {exc}", file=sys.stderr)
        return 2
    if ns.otlp is not None:
        return _replay_otlp(rec, roots, ns.otlp)
    return _replay_page(rec, roots, ns.speed, ns.port, ns.title)
