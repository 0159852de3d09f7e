"""How a resumed run finds its way back: the answers, the frames handed down the flow, node scopes."""

from __future__ import annotations

import contextvars
import typing as t

from ..context import current
from ..module import new_id
from .errors import StalePauseError
from .records import _MISSING, Interrupt
from .schema import check_json, check_schema


class _Session:
    """The answers of one resume, shared by every container of the resumed run."""

    __slots__ = ("answers", "entries")

    def __init__(self, answers: dict[str, t.Any], entries: dict[str, dict[str, t.Any]]) -> None:
        self.answers = answers
        self.entries = entries  # id -> entry, of the record being resumed (to carry unanswered ones)


_session: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("streamtap_resume_session", default=None)
_frame: contextvars.ContextVar[dict[str, t.Any] | None] = contextvars.ContextVar("streamtap_resume_frame", default=None)
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("streamtap_interrupt_scope", default=None)


class _Scope:
    """The interrupt bookkeeping of one node execution (answers matched by order)."""

    __slots__ = ("answers", "name", "run_id", "used")

    def __init__(self, name: str, answers: list[t.Any], run_id: str | None = None) -> None:
        self.name = name
        self.answers = answers
        self.used = 0
        self.run_id = run_id  # set for the implicit scope of a plain module


def take_frame(kind: str) -> dict[str, t.Any] | None:
    """Return the resume frame handed to the module starting now (and hide it from its children).

    Used by containers (flows, batch nodes); ``kind`` guards against a record
    made for a different shape of flow.
    """
    frame = _frame.get()
    if frame is None:
        return None
    if kind == "node" and frame.get("kind") != "node":
        return None  # the frame of a flow that this node's exec calls: left for it
    _frame.set(None)
    if frame.get("kind") != kind:
        msg = f"The pause record expects a {frame.get('kind')!r} step here but the flow has a {kind!r}; the flow changed since it paused."
        raise StalePauseError(msg)
    return frame


class handing:  # noqa: N801 - used as a context manager, like contextlib helpers
    """``with handing(frame): child(x)`` -- give a resume frame to the child called in the block."""

    __slots__ = ("_frame", "_scope_token", "_token")

    def __init__(self, frame: dict[str, t.Any] | None) -> None:
        self._frame = frame
        self._token: contextvars.Token[t.Any] | None = None
        self._scope_token: contextvars.Token[t.Any] | None = None

    def __enter__(self) -> None:
        self._token = _frame.set(self._frame)
        self._scope_token = _scope.set(None)  # the child gets its own interrupt scope

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._scope_token is not None
        _scope.reset(self._scope_token)
        _frame.reset(self._token)


def answered(frame: dict[str, t.Any] | None) -> bool:
    """Whether the resume being run answers at least one interrupt under ``frame``."""
    session = _session.get()
    if session is None or frame is None:
        return False
    return any(i in session.answers for i in frame_ids(frame))


def frame_ids(frame: dict[str, t.Any]) -> t.Iterator[str]:
    """The ids of the pending interrupts under a resume frame."""
    stack = [frame]
    while stack:
        f = stack.pop()
        if f.get("kind") == "node":
            yield f["pending"]
        if f.get("child") is not None:
            stack.append(f["child"])
        stack.extend(f.get("pending_branches", {}).values())


def carried_entries(frame: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """The entries of the interrupts under ``frame``, carried unanswered into a new record."""
    session = _session.get()
    if session is None:
        return []
    return [session.entries[i] for i in frame_ids(frame) if i in session.entries]


def prefixed(entries: list[dict[str, t.Any]], step: str) -> list[dict[str, t.Any]]:
    """Entries with ``step`` put in front of their path (a container names itself on the way up)."""
    return [{**e, "path": [step, *e["path"]]} for e in entries]


class node_scope:  # noqa: N801
    """``with node_scope(name):`` around one execution of a node's work, so that :func:`interrupt` works.

    Takes the node's resume frame (if this execution resumes one) and the answers for it.
    """

    __slots__ = ("_name", "_token", "frame")

    def __init__(self, name: str, frame: dict[str, t.Any] | None = _MISSING) -> None:
        self._name = name
        self.frame = take_frame("node") if frame is _MISSING else frame
        self._token: contextvars.Token[t.Any] | None = None

    def __enter__(self) -> None:
        self._token = _scope.set(_scope_for(self._name, self.frame))

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _scope.reset(self._token)


def _scope_for(name: str, frame: dict[str, t.Any] | None) -> _Scope:
    answers: list[t.Any] = []
    if frame is not None:
        answers = list(frame.get("answers", []))
        session = _session.get()
        if session is not None and frame["pending"] in session.answers:
            answers.append(session.answers[frame["pending"]])
    return _Scope(name, answers)


def interrupt(payload: t.Any = None, schema: dict[str, t.Any] | None = None) -> t.Any:
    """Pause the flow here until a human answers; on resume, return the answer.

    Call it inside a node's ``prep``/``exec``/``post``. The first time it
    raises :class:`Interrupt` (the run ends ``interrupted`` with a pause
    record). When the flow is resumed with an answer, the node runs again from
    its start and this call returns the answer. Several calls in one node are
    matched by order.

    Args:
        payload: what the front end shows (a question, a tool call to approve). JSON.
        schema: optional JSON schema that the answer must match; front ends can
            render a form from it, and ``resume`` rejects answers that fail it.

    Returns:
        The answer given to ``resume``.

    Raises:
        Interrupt: to pause (do not catch it in your node).
        UsageError: when ``payload`` or ``schema`` is not JSON-serialisable.
    """
    scope = _scope.get()
    ctx = current()
    run_id = ctx.run.run_id if ctx is not None else None
    if scope is None or (scope.run_id is not None and scope.run_id != run_id):
        # a plain module (not a Node) run by a flow: its frame, if any, is still waiting
        frame = _frame.get()
        if frame is not None and frame.get("kind") == "node":
            _frame.set(None)
        else:
            frame = None
        scope = _scope_for(ctx.run.name if ctx is not None else "interrupt", frame)
        scope.run_id = run_id or "-"
        _scope.set(scope)
    if scope.used < len(scope.answers):
        value = scope.answers[scope.used]
        scope.used += 1
        return value
    if schema is not None:
        check_schema(schema)
    check_json(payload, "the interrupt payload")
    name = scope.name
    iid = new_id()
    entry = {
        "id": iid,
        "node": name,
        "path": [name],
        "run_id": run_id,
        "payload": payload,
        "schema": schema,
    }
    state = {"kind": "node", "answers": list(scope.answers[: scope.used]), "pending": iid}
    raise Interrupt([entry], state)


class resuming:  # noqa: N801
    """``with resuming(record, answers):`` -- the session a resumed flow runs in (set by flows)."""

    __slots__ = ("_session", "_token")

    def __init__(self, record: dict[str, t.Any], answers: dict[str, t.Any]) -> None:
        self._session = _Session(answers, {e["id"]: e for e in record["interrupts"]})
        self._token: contextvars.Token[t.Any] | None = None

    def __enter__(self) -> None:
        self._token = _session.set(self._session)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _session.reset(self._token)
