"""Typed, immutable events: the wire format of everything streamtap emits.

Every module run produces exactly one :class:`Start`, any number of
:class:`Chunk`, :class:`Tool` and :class:`Custom` events, and exactly one
:class:`End`. Every event carries the :class:`Run` it belongs to and ``seq``,
a number that is strictly increasing and gap-free within one root run, across
threads and tasks, so a consumer can order, de-duplicate and resume.

Events are slotted subclasses of :class:`typing.NamedTuple` field sets rather
than frozen dataclasses. They are just as immutable (no ``__dict__``,
assignment raises ``AttributeError``), but are built about five times faster,
which matters on the per-chunk hot path (see ``bench/bench_core.py`` and
``docs/guide/events.md``). Each has a class-level ``kind`` discriminator typed
as a :data:`typing.Literal` (``Chunk.kind: ClassVar[Literal["chunk"]]``), so a
type checker narrows :data:`Event` by ``ev.kind == "chunk"``, by
``isinstance`` or by ``match``. :meth:`to_dict` is generated once per class
from its fields; its output is a stable wire format, and
:func:`event_from_dict` is its inverse.

This module imports nothing else from streamtap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing as t
from collections import abc

__all__ = [
    "ERROR_DETAIL_PREFIX",
    "Chunk",
    "Custom",
    "End",
    "ErrorInfo",
    "Event",
    "Run",
    "RunKind",
    "Start",
    "Status",
    "Timings",
    "Tool",
    "ToolPhase",
    "Usage",
    "event_from_dict",
    "to_jsonable",
]

RunKind = t.Literal["llm", "tool", "agent", "flow", "node", "module"]
"""What a run is: an LLM call, a tool, an agent, a flow, a node of a flow, or any other module."""

Status = t.Literal["ok", "error", "cancelled", "interrupted"]
"""How a run ended."""

ToolPhase = t.Literal["requested", "result", "error"]
"""Where a tool call is: asked for by a model, answered, or failed."""

ERROR_DETAIL_PREFIX = "error.detail."
"""Prefix of the ``End.attributes`` keys that hold a failure's redacted detail (an exception's ``detail`` mapping,
such as :attr:`streamtap.llm.LLMError.detail`): spans and server logs show them; what is sent to clients leaves them out."""

_EMPTY: t.Mapping[str, t.Any] = types.MappingProxyType({})
_SCALARS = (str, bool, int)


def to_jsonable(value: t.Any, _depth: int = 0) -> t.Any:
    """Return a JSON-safe copy of ``value``.

    Strings, numbers, booleans and ``None`` pass through (non-finite floats
    become strings); mappings, sequences and sets become dicts and lists;
    dataclasses, pydantic models and named tuples become dicts; anything else
    becomes its ``repr``. Nesting deeper than 32 levels is cut with a repr, so
    a cyclic structure cannot hang a serialiser.
    """
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth > 32:
        return repr(value)
    d = _depth + 1
    tp = type(value)
    # Exact built-in containers first: they are most of what is converted, and the
    # abstract-class checks below cost several times more than the conversion itself.
    if tp is dict or tp is types.MappingProxyType:
        return {str(k): to_jsonable(v, d) for k, v in value.items()}
    if tp is list or tp is tuple:
        return [to_jsonable(v, d) for v in value]
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: to_jsonable(v, d) for k, v in value._asdict().items()}
    if isinstance(value, abc.Mapping):
        return {str(k): to_jsonable(v, d) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, d) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), d) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_jsonable(dump(mode="json"), d)
        except Exception:  # noqa: S110 - an exotic model that cannot dump falls back to its repr  # pragma: no cover
            pass
    return repr(value)


class Run(t.NamedTuple):
    """The identity of one module call.

    A run is created by :class:`~streamtap.ModuleBase` when a call starts and
    is carried by every event of that call. ``parent_id`` links it to the run
    that was current when it started, ``root_id`` to the top of its tree.
    """

    run_id: str
    """Random, unguessable id of this run (16 hex digits)."""
    name: str
    """The module's name: its ``name`` attribute, or its class name."""
    kind: RunKind
    """What the module is (``llm``, ``tool``, ``agent``, ``flow``, ``node``, ``module``)."""
    parent_id: str | None
    """Id of the enclosing run, or ``None`` for a root run."""
    root_id: str
    """Id of the root run of this tree (equal to ``run_id`` for a root)."""
    tags: tuple[str, ...] = ()
    """Tags of this run and every run above it (inherited, as LangChain does)."""
    metadata: t.Mapping[str, t.Any] = _EMPTY
    """Free-form metadata given to the module (read-only mapping)."""
    path: tuple[str, ...] = ()
    """The names of the runs from the root down to this one, this run's own name last:
    ``("plan_act", "Plan", "OpenAIChat")``. Label a chunk with the node it came from
    (``ev.run.path[1]``) or keep a subtree (``stream.filter(under="Plan")``) without
    rebuilding the tree from ``Start`` events. Empty only for a hand-made ``Run``."""

    def to_dict(self) -> dict[str, t.Any]:
        """Return the run as a JSON-safe dict (keys in field order)."""
        return _run_to_dict(self)


class ErrorInfo(t.NamedTuple):
    """A failure, reduced to what can cross a wire: the exception type and its message."""

    type: str
    """Qualified name of the exception class, e.g. ``ValueError`` or ``openai.APIError``."""
    message: str
    """``str()`` of the exception."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Describe ``exc``."""
        tp = type(exc)
        mod = tp.__module__
        name = tp.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{tp.__qualname__}"
        return cls(name, str(exc))

    def to_dict(self) -> dict[str, t.Any]:
        """Return the error as a JSON-safe dict."""
        return {"type": self.type, "message": self.message}


class Usage(t.NamedTuple):
    """Token usage of a model call (OpenTelemetry GenAI names)."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None

    def __add__(self, other: object) -> Usage:
        """Add two usages field by field (``None`` counts as absent)."""
        if not isinstance(other, Usage):
            return NotImplemented

        def _opt(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _opt(self.reasoning_tokens, other.reasoning_tokens),
            _opt(self.cached_input_tokens, other.cached_input_tokens),
        )

    def to_dict(self) -> dict[str, t.Any]:
        """Return the usage as a JSON-safe dict (absent fields left out)."""
        return {k: v for k, v in self._asdict().items() if v is not None}


class Timings(t.NamedTuple):
    """When a run started and how long it took, in seconds."""

    started_at: float
    """Wall-clock start (seconds since the epoch)."""
    duration: float
    """Monotonic duration of the run."""
    time_to_first_chunk: float | None = None
    """Monotonic time from start to the first chunk, or ``None`` when there was none."""

    def to_dict(self) -> dict[str, t.Any]:
        """Return the timings as a JSON-safe dict."""
        return self._asdict()


class _StartFields(t.NamedTuple):
    run: Run
    seq: int
    inputs: t.Any = None
    """The call's arguments: the single positional argument, or a dict of them."""
    started_at: float = 0.0
    """Wall-clock start (seconds since the epoch)."""


class _ChunkFields(t.NamedTuple):
    run: Run
    seq: int
    delta: t.Any
    """The new piece: usually a string; any object for custom channels."""
    channel: str = "text"
    call_id: str | None = None
    """For ``tool_args`` chunks: the tool call the fragment belongs to."""


class _ToolFields(t.NamedTuple):
    run: Run
    seq: int
    call_id: str
    name: str
    phase: ToolPhase
    arguments: t.Any = None
    """Parsed arguments (``requested``), or the raw text when they did not parse."""
    result: t.Any = None
    """The tool's return value (``result``)."""
    error: ErrorInfo | None = None
    """What went wrong (``error``)."""


class _CustomFields(t.NamedTuple):
    run: Run
    seq: int
    name: str
    data: t.Any = None


class _EndFields(t.NamedTuple):
    run: Run
    seq: int
    status: Status
    output: t.Any = None
    """The call's return value (``ok``), the pause record (``interrupted``), or what a failed call had produced
    (``error``, when its exception carries it: the partial answer of a broken model stream)."""
    error: ErrorInfo | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    attributes: t.Mapping[str, t.Any] = _EMPTY
    """What the module recorded with :meth:`RunContext.annotate` (model, finish reasons, ...)."""


# -- the wire format, generated once from the fields ------------------------------

Convert = t.Callable[[t.Any], t.Any]


def _same(value: t.Any) -> t.Any:
    return value


def _optional_dict(value: t.Any) -> t.Any:
    return value.to_dict() if value else None


def _run_dict(value: Run) -> dict[str, t.Any]:
    return _run_to_dict(value)


def _metadata_dict(value: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return to_jsonable(value) if value else {}


def _compile_to_dict(
    kind: str | None, wire: t.Iterable[tuple[str, int, Convert]]
) -> t.Callable[[t.Any], dict[str, t.Any]]:
    """Generate ``to_dict`` for a tuple whose fields cross the wire as ``wire`` says (key, index, converter).

    The function is written out once per class, as :mod:`dataclasses` writes
    ``__init__``: one dict display, a converter call only for the fields that
    need one. A loop over ``wire`` at each call cost three times as much, and
    every event that leaves the process (web stream, store, recording) pays it.
    """
    env: dict[str, t.Any] = {}
    items = [f"'kind': {kind!r}"] if kind is not None else []
    for key, index, convert in wire:
        if convert is _same:
            items.append(f"{key!r}: self[{index}]")
        else:
            env[f"_convert{index}"] = convert
            items.append(f"{key!r}: _convert{index}(self[{index}])")
    source = f"def to_dict(self):\n    return {{{', '.join(items)}}}\n"
    exec(source, env)  # noqa: S102 - the source is built from the class's own field names above
    fn: t.Callable[[t.Any], dict[str, t.Any]] = env["to_dict"]
    return fn


_RUN_CONVERT: dict[str, Convert] = {"tags": list, "path": list, "metadata": _metadata_dict}
_run_to_dict = _compile_to_dict(
    None, [(name, index, _RUN_CONVERT.get(name, _same)) for index, name in enumerate(Run._fields)]
)

# How each field crosses the wire; a field not named here is already JSON-safe (str, int, float, None).
_CONVERT: dict[str, Convert] = {
    "run": _run_dict,
    "inputs": to_jsonable,
    "delta": to_jsonable,
    "arguments": to_jsonable,
    "result": to_jsonable,
    "data": to_jsonable,
    "output": to_jsonable,
    "attributes": to_jsonable,
    "error": _optional_dict,
    "usage": _optional_dict,
    "timings": _optional_dict,
}


def _wire_format(fields: tuple[str, ...]) -> tuple[tuple[str, int, Convert], ...]:
    """``(key, field index, converter)`` in wire order: ``seq``, ``run``, then the other fields as declared."""
    order = ("seq", "run", *(f for f in fields if f not in ("seq", "run")))
    return tuple((name, fields.index(name), _CONVERT.get(name, _same)) for name in order)


class _Wire:
    """The generated :meth:`to_dict` shared by every event class (a mixin without state)."""

    __slots__ = ()
    _wire: t.ClassVar[tuple[tuple[str, int, Convert], ...]]
    kind: t.ClassVar[str]

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_wire" in cls.__dict__:  # an event class: its to_dict, generated from its fields
            to_dict = _compile_to_dict(cls.kind, cls._wire)
            to_dict.__doc__ = _Wire.to_dict.__doc__
            to_dict.__qualname__ = f"{cls.__qualname__}.to_dict"
            setattr(cls, "to_dict", to_dict)  # noqa: B010 - mypy keeps the declared signature below

    def to_dict(self) -> dict[str, t.Any]:
        """Return the event as a JSON-safe dict: ``kind``, ``seq``, ``run``, then its own fields."""
        raise NotImplementedError  # every event class gets its generated one in __init_subclass__


class Start(_Wire, _StartFields):
    """A run has started."""

    __slots__ = ()
    kind: t.ClassVar[t.Literal["start"]] = "start"
    _wire = _wire_format(_StartFields._fields)


class Chunk(_Wire, _ChunkFields):
    """A piece of a run's output, as it is produced.

    ``channel`` says who it is for: ``text`` is user-facing, ``reasoning`` is
    the model's thinking, ``tool_args`` is a fragment of a tool call's
    arguments (with ``call_id``). Any other channel name is allowed for custom
    streams. Empty deltas are legal.

    **Adding chunks.** ``a + b`` is *not* tuple concatenation (a chunk is a
    named tuple, but ``+`` is redefined): it joins two *string* deltas of the
    same run, channel and call into one chunk, as LangChain's
    ``AIMessageChunk`` does -- ``chunks[0] + chunks[1] + chunks[2]`` is the
    text so far, with the ``seq`` of the last one. Chunks of different runs,
    channels or calls raise ``ValueError``; non-string deltas (the ``data``
    channel's partial objects, where each one is already the whole value so
    far) raise ``TypeError``: keep the last one instead.
    """

    __slots__ = ()
    kind: t.ClassVar[t.Literal["chunk"]] = "chunk"
    _wire = _wire_format(_ChunkFields._fields)

    def __add__(self, other: object) -> Chunk:
        """Join two chunks of the same run, channel and call into one."""
        if not isinstance(other, Chunk):
            return NotImplemented
        if (other.run.run_id, other.channel, other.call_id) != (self.run.run_id, self.channel, self.call_id):
            msg = (
                f"Cannot add chunks of different streams: run {self.run.run_id!r} channel {self.channel!r} "
                f"and run {other.run.run_id!r} channel {other.channel!r}. Filter by run and channel first."
            )
            raise ValueError(msg)
        if not (isinstance(self.delta, str) and isinstance(other.delta, str)):
            msg = (
                f"Chunk + Chunk joins text deltas, but these are {type(self.delta).__name__} and "
                f"{type(other.delta).__name__} (channel {self.channel!r}). A data chunk's delta is the whole value "
                "so far (a partial object): keep the last one rather than adding them."
            )
            raise TypeError(msg)
        return Chunk(self.run, other.seq, self.delta + other.delta, self.channel, self.call_id)


class Tool(_Wire, _ToolFields):
    """A tool call's progress: ``requested`` by a model, then ``result`` or ``error``.

    The event belongs to the run that asked for the tool (an agent). The
    tool's own execution is a child run with its own start and end.
    """

    __slots__ = ()
    kind: t.ClassVar[t.Literal["tool"]] = "tool"
    _wire = _wire_format(_ToolFields._fields)


class Custom(_Wire, _CustomFields):
    """A user-defined progress event, sent with :func:`streamtap.emit`."""

    __slots__ = ()
    kind: t.ClassVar[t.Literal["custom"]] = "custom"
    _wire = _wire_format(_CustomFields._fields)


class End(_Wire, _EndFields):
    """A run has ended. Exactly one per :class:`Start`, on every path."""

    __slots__ = ()
    kind: t.ClassVar[t.Literal["end"]] = "end"
    _wire = _wire_format(_EndFields._fields)


Event: t.TypeAlias = Start | Chunk | Tool | Custom | End
"""Any streamtap event; ``event.kind`` (a literal per class) tells which, and narrows the type."""


# -- the inverse of to_dict --------------------------------------------------------------


def _run_from(d: t.Mapping[str, t.Any]) -> Run:
    return Run(
        str(d["run_id"]),
        str(d.get("name", "")),
        d.get("kind", "module"),
        d.get("parent_id"),
        str(d.get("root_id") or d["run_id"]),
        tuple(d.get("tags") or ()),
        types.MappingProxyType(dict(d.get("metadata") or {})),
        tuple(d.get("path") or ()),
    )


def _error_from(d: t.Mapping[str, t.Any] | None) -> ErrorInfo | None:
    return ErrorInfo(str(d.get("type", "")), str(d.get("message", ""))) if d else None


def event_from_dict(data: t.Mapping[str, t.Any]) -> Event:
    """The typed event of a wire dict (the output of ``Event.to_dict()``); the inverse of :meth:`to_dict`.

    Extra keys (such as a recording's ``recorded_at``) are ignored. Values that
    ``to_dict`` made JSON-safe stay as JSON gave them (a tuple delta comes back
    a list).

    Raises:
        ValueError: an unknown ``kind`` or a missing or malformed field, naming it.

    .. versionadded:: 0.2
    """
    try:
        kind = data["kind"]
        run = _run_from(data["run"])
        seq = int(data["seq"])
        if kind == "start":
            return Start._make((run, seq, data.get("inputs"), float(data.get("started_at") or 0.0)))
        if kind == "chunk":
            return Chunk._make((run, seq, data.get("delta"), str(data.get("channel", "text")), data.get("call_id")))
        if kind == "tool":
            return Tool._make((
                run, seq, str(data["call_id"]), str(data["name"]), data["phase"],
                data.get("arguments"), data.get("result"), _error_from(data.get("error")),
            ))  # fmt: skip
        if kind == "custom":
            return Custom._make((run, seq, str(data["name"]), data.get("data")))
        if kind == "end":
            usage = data.get("usage")
            timings = data.get("timings")
            return End._make(
                (
                    run,
                    seq,
                    data["status"],
                    data.get("output"),
                    _error_from(data.get("error")),
                    Usage(**usage) if usage else None,
                    Timings(**timings) if timings else None,
                    types.MappingProxyType(dict(data.get("attributes") or {})),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"Not a streamtap event: {exc!r} in {_short(data)}."
        raise ValueError(msg) from None
    msg = f"Unknown event kind {kind!r} in {_short(data)}; expected start, chunk, tool, custom or end."
    raise ValueError(msg)


def _short(data: t.Any) -> str:
    text = json.dumps(data, default=repr)
    return text if len(text) <= 200 else text[:200] + "..."
