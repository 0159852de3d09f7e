"""Record runs as JSON lines, read them back as typed events.

A :class:`Recorder` is a subscriber writing every event of every root run to
one file, one JSON object a line, in the wire format (``Event.to_dict()``),
after a header line naming the format and its version::

    {"schema": "streamtap.recording", "version": 1, "created_at": 1764810000.5, "streamtap": "0.1.0"}
    {"kind": "start", "seq": 0, "run": {...}, "inputs": "...", "started_at": ..., "recorded_at": 1764810000.51}
    {"kind": "chunk", "seq": 1, "run": {...}, "delta": "The", "channel": "text", "call_id": null, "recorded_at": ...}

Each event line is exactly the event's ``to_dict()`` plus ``recorded_at``
(wall-clock seconds when the recorder saw it), which replays use to keep the
original pace. Events of concurrent root runs interleave; each carries its
``run.root_id``. Every line is flushed as it is written, so a process that
dies leaves a readable file up to its last event. Secrets are redacted
(:class:`~streamtap.redaction.Redactor`) before anything is written.

Turn it on in code::

    with Recorder("run.jsonl").subscribe():
        agent("What's the weather in Paris?")

or from the outside, with no code change: ``streamtap record -o run.jsonl --
python app.py``, or ``STREAMTAP_RECORD=run.jsonl`` in the environment of a
program that calls :func:`process_startup` (``streamtap record`` arranges
that call for Python programs it starts).

:func:`read_recording` reads a file back (checking the header), and
:func:`event_from_dict` turns one wire dict back into its typed event.
``streamtap replay FILE`` replays a recording into the page or a trace
backend; :func:`streamtap.testing.replay` and
:class:`streamtap.llm.replay.ReplayChat` replay it in tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
import typing as t

from . import events
from .bus import Subscription, subscribe
from .events import Chunk, Custom, End, Event, Start, Tool
from .exceptions import UsageError
from .redaction import Redactor

__all__ = [
    "RECORD_ENV",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Recorder",
    "Recording",
    "RecordingError",
    "as_events",
    "event_from_dict",
    "is_event",
    "process_startup",
    "read_recording",
]

if t.TYPE_CHECKING:
    from typing_extensions import Self

SCHEMA = "streamtap.recording"
"""The ``schema`` of a recording's header line."""

SCHEMA_VERSION = 1
"""The recording format's version; readers refuse newer versions with a clear error."""

RECORD_ENV = "STREAMTAP_RECORD"
"""The environment variable naming the file :func:`process_startup` records to."""


class RecordingError(UsageError):
    """A file that is not a streamtap recording, or one of a version this streamtap cannot read."""


class Recorder:
    """Writes every event of every root run to ``path`` as JSON lines (see the module docstring).

    Args:
        path: the file to write; created with its parent directories.
        append: add to an existing recording instead of replacing it (a header
            is written only when the file is empty).
        redact: extra redaction patterns; API keys, bearer tokens and
            credential-named keys are always redacted.

    Use :meth:`subscribe` (or the recorder as a context manager) to start
    recording and :meth:`close` to stop. Safe to call from any thread.

    Raises:
        UsageError: ``path`` is a directory or cannot be opened for writing.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, append: bool = False, redact: t.Iterable[str | t.Any] = ()
    ) -> None:
        self.path = pathlib.Path(path)
        """Where the events go."""
        if self.path.is_dir():
            msg = f"Cannot record to {str(self.path)!r}: it is a directory; give a file name such as {str(self.path / 'run.jsonl')!r}."
            raise UsageError(msg)
        self.redact = Redactor(redact)
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None
        self.events = 0
        """How many events were written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: t.TextIO | None = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            msg = f"Cannot record to {str(self.path)!r}: {exc.strerror or exc}. Choose a writable file."
            raise UsageError(msg) from None
        if self._file.tell() == 0:
            from . import __version__

            header = {"schema": SCHEMA, "version": SCHEMA_VERSION, "created_at": time.time(), "streamtap": __version__}
            self._write(header)

    def _write(self, obj: t.Mapping[str, t.Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()

    def __call__(self, event: Event) -> None:
        """Write one event (the bus calls this for every event while subscribed)."""
        line = self.redact.scrub(event.to_dict())
        line["recorded_at"] = time.time()
        with self._lock:
            if self._file is None:
                return
            self._write(line)
            self.events += 1

    def subscribe(self) -> Self:
        """Start recording every run; returns ``self``."""
        if self._subscription is None:
            self._subscription = subscribe(self)
        return self

    def close(self) -> None:
        """Stop recording and close the file (idempotent)."""
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self.subscribe()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def process_startup() -> Recorder | None:
    """Record the whole process when ``STREAMTAP_RECORD`` names a file; returns the recorder (else ``None``).

    Call it first thing in a program (``streamtap record`` makes Python
    programs it starts call it). The recorder appends (so several processes
    started by one ``streamtap record`` share the file) and closes at exit.
    """
    target = os.environ.get(RECORD_ENV, "").strip()
    if not target:
        return None
    import atexit

    recorder = Recorder(target, append=True).subscribe()
    atexit.register(recorder.close)
    return recorder


# -- reading -------------------------------------------------------------------------


def is_event(value: object) -> bool:
    """Whether ``value`` is a typed streamtap event (not a wire dict)."""
    return isinstance(value, (Start, Chunk, Tool, Custom, End))


def as_events(items: t.Iterable[Event | t.Mapping[str, t.Any]]) -> list[Event]:
    """Typed events from typed events or wire dicts (as a recording holds them)."""
    return [x if isinstance(x, (Start, Chunk, Tool, Custom, End)) else event_from_dict(x) for x in items]


def event_from_dict(data: t.Mapping[str, t.Any]) -> Event:
    """The typed event of a wire dict: :func:`streamtap.events.event_from_dict`, with a recording's error.

    Raises:
        RecordingError: an unknown ``kind`` or a missing field, naming it.
    """
    try:
        return events.event_from_dict(data)
    except ValueError as exc:
        raise RecordingError(str(exc)) from None


class Recording(t.NamedTuple):
    """A recording read back: its header and its event lines (wire dicts, in file order)."""

    header: dict[str, t.Any]
    lines: list[dict[str, t.Any]]

    def roots(self) -> list[str]:
        """The root run ids, in the order their first event was recorded."""
        seen: dict[str, None] = {}
        for line in self.lines:
            seen.setdefault(line["run"]["root_id"], None)
        return list(seen)

    def of(self, root_id: str) -> list[dict[str, t.Any]]:
        """The event lines of one root run, in ``seq`` order.

        Raises:
            RecordingError: the recording has no such root run (naming those it has).
        """
        lines = [x for x in self.lines if x["run"]["root_id"] == root_id]
        if not lines:
            raise RecordingError(f"The recording has no root run {root_id!r}; it has {self.roots()}.")
        return sorted(lines, key=lambda x: x["seq"])

    def events(self, root_id: str | None = None) -> list[Event]:
        """Typed events: of one root run (``seq`` order), or of all (file order)."""
        lines = self.of(root_id) if root_id is not None else self.lines
        return [event_from_dict(x) for x in lines]


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a recording written by :class:`Recorder`.

    A last line cut short (the process died while writing it) is skipped;
    any other line that is not JSON is an error.

    Raises:
        RecordingError: no such file, no header, a header of another format or
            a newer version, or a broken line (naming the line number).
    """
    p = pathlib.Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"Cannot read the recording {str(p)!r}: {exc.strerror or exc}.") from None
    rows = text.splitlines()
    header: dict[str, t.Any] | None = None
    lines: list[dict[str, t.Any]] = []
    for number, raw in enumerate(rows, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            if number == len(rows) and not text.endswith("\n"):
                break  # the writer died mid-line
            raise RecordingError(f"{str(p)!r} line {number} is not JSON: {raw[:80]!r}.") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"{str(p)!r} line {number} is not a JSON object: {raw[:80]!r}.")
        if "schema" in obj:
            _check_header(p, number, obj)
            header = header or obj
            continue
        if header is None:
            raise RecordingError(
                f"{str(p)!r} is not a streamtap recording: line {number} comes before a "
                f'{{"schema": "{SCHEMA}", ...}} header. Record with streamtap.recording.Recorder or `streamtap record`.'
            )
        if not isinstance(obj.get("run"), dict) or "seq" not in obj:
            raise RecordingError(f"{str(p)!r} line {number} is not a streamtap event (no 'run' or 'seq').")
        lines.append(obj)
    if header is None:
        raise RecordingError(f"{str(p)!r} is empty or has no streamtap recording header.")
    return Recording(header, lines)


def _check_header(path: pathlib.Path, number: int, obj: t.Mapping[str, t.Any]) -> None:
    if obj.get("schema") != SCHEMA:
        raise RecordingError(f"{str(path)!r} line {number}: schema {obj.get('schema')!r} is not {SCHEMA!r}.")
    version = obj.get("version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise RecordingError(
            f"{str(path)!r} is a recording of version {version!r}; this streamtap reads versions 1 to {SCHEMA_VERSION}. "
            "Upgrade streamtap to replay it."
        )
