"""Pause records (plain JSON), the Interrupt that carries them, and the Resume that answers them."""

from __future__ import annotations

import json
import time
import typing as t

from ..exceptions import StreamtapError, UsageError
from ..module import new_id
from .errors import AnswerValidationError, ResumeError, StalePauseError, UnknownInterruptError
from .schema import check_json, short, validate_answer

__all__ = [
    "RECORD_FORMAT",
    "RECORD_TYPE",
    "Interrupt",
    "Resume",
    "check_record",
    "make_record",
    "resolve_answers",
    "snapshot",
]

RECORD_TYPE = "streamtap.pause"
RECORD_FORMAT = 1

_MISSING: t.Any = object()


class Interrupt(StreamtapError):
    """Raised by :func:`interrupt` and by every flow on the way up: the run pauses.

    The run ends with status ``interrupted`` and :attr:`record` (the pause
    record, plain JSON) as its ``End.output``. Catch it around a synchronous
    call to get the record: ``except Interrupt as exc: save(exc.record)``.

    Attributes:
        record: the pause record (see :mod:`streamtap.interrupts`).
        entries: the pending interrupts (``record["interrupts"]``).
        state: where to continue (``record["state"]``).
    """

    __streamtap_status__ = "interrupted"

    def __init__(
        self, entries: list[dict[str, t.Any]], state: dict[str, t.Any], record: dict[str, t.Any] | None = None
    ) -> None:
        self.entries = entries
        self.state = state
        self.record = record if record is not None else make_record(entries, state, None, None, None)
        self.streamtap_output = self.record
        ids = ", ".join(e["id"] for e in entries)
        super().__init__(
            f"The run paused for human input (interrupt {ids}). Resume it with flow.resume(record, answer)."
        )


def make_record(
    entries: list[dict[str, t.Any]],
    state: dict[str, t.Any],
    flow: dict[str, t.Any] | None,
    shared: t.Any,
    run_id: str | None,
) -> dict[str, t.Any]:
    """Build a pause record (plain JSON); ``shared`` must already be JSON-safe."""
    return {
        "type": RECORD_TYPE,
        "format": RECORD_FORMAT,
        "id": new_id(),
        "run_id": run_id,
        "created_at": time.time(),
        "flow": flow,
        "shared": shared,
        "interrupts": entries,
        "state": state,
    }


def snapshot(value: t.Any, what: str) -> t.Any:
    """A deep JSON copy of ``value`` (what a pause record stores), or a UsageError naming the bad part."""
    check_json(value, what)
    return json.loads(json.dumps(value))


class Resume:
    """The input that resumes a paused flow: ``flow.stream(Resume(record, answer))``.

    Give ``answer`` when the record has exactly one pending interrupt, or
    ``answers={interrupt_id: answer, ...}`` for any of several. ``record`` may
    also be a pause id when the flow has a store.

    After the run, :attr:`shared` is the shared store the resumed flow worked on.
    """

    __slots__ = ("answers", "record", "shared")

    def __init__(
        self, record: dict[str, t.Any] | str, answer: t.Any = _MISSING, *, answers: t.Mapping[str, t.Any] | None = None
    ) -> None:
        if answer is not _MISSING and answers is not None:
            msg = "Give either one answer or answers={interrupt_id: answer}, not both."
            raise UsageError(msg)
        self.record = record
        self.answers: dict[str, t.Any] | None = dict(answers) if answers is not None else None
        if answer is not _MISSING:
            self.answers = {"": answer}  # resolved against the record's single pending interrupt
        self.shared: t.Any = None

    def to_dict(self) -> dict[str, t.Any]:
        """What a Start event shows for a resumed run: the pause id and the answered interrupt ids."""
        rec = self.record
        pid = rec if isinstance(rec, str) else rec.get("id") if isinstance(rec, dict) else None
        return {"resume": pid, "answers": sorted(self.answers or {})}

    def __repr__(self) -> str:
        return f"<Resume {self.to_dict()}>"


def check_record(record: t.Any) -> dict[str, t.Any]:
    """Check that ``record`` is a pause record; return it."""
    if not isinstance(record, dict) or record.get("type") != RECORD_TYPE:
        msg = f"Expected a pause record (a dict with type={RECORD_TYPE!r}, the End.output of an interrupted run), got {short(record)}."
        raise ResumeError(msg)
    if record.get("format") != RECORD_FORMAT:
        msg = f"Pause record format {record.get('format')!r} is not supported (this streamtap reads format {RECORD_FORMAT})."
        raise StalePauseError(msg)
    return record


def resolve_answers(record: dict[str, t.Any], answers: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """Match the answers to the record's pending interrupts and validate each against its schema."""
    entries = {e["id"]: e for e in record["interrupts"]}
    if not answers:
        msg = f"Resuming needs an answer; pending interrupts: {sorted(entries)}."
        raise ResumeError(msg)
    if "" in answers:
        if len(entries) != 1:
            msg = (
                f"This pause has {len(entries)} pending interrupts ({sorted(entries)}); a single answer is ambiguous. "
                "Pass answers={interrupt_id: answer, ...} instead."
            )
            raise ResumeError(msg)
        answers = {next(iter(entries)): answers[""]}
    for iid, value in answers.items():
        if iid not in entries:
            msg = f"Interrupt id {iid!r} is not pending in pause {record['id']}; pending: {sorted(entries)}."
            raise UnknownInterruptError(msg)
        problems = validate_answer(value, entries[iid].get("schema"))
        if problems:
            raise AnswerValidationError(iid, problems)
    return answers
