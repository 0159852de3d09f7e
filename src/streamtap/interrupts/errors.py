"""The errors of a resume that cannot start; the pause record is untouched in each case."""

from __future__ import annotations

import typing as t

from ..exceptions import StreamtapError

__all__ = ["AnswerValidationError", "ResumeError", "StalePauseError", "TamperedRecordError", "UnknownInterruptError"]


class ResumeError(StreamtapError, ValueError):
    """A resume could not start. The pause record is untouched and still pending."""


class UnknownInterruptError(ResumeError):
    """An answer names an interrupt id (or pause id) that the record (or store) does not have."""


class StalePauseError(ResumeError):
    """The record was already resumed, or was made by another version of the flow."""


class AnswerValidationError(ResumeError):
    """An answer does not match the schema the interrupt asked for."""

    def __init__(self, interrupt_id: str, problems: list[str]) -> None:
        self.interrupt_id = interrupt_id
        self.problems = problems
        super().__init__(
            f"The answer to interrupt {interrupt_id} does not match its schema: {'; '.join(problems)}. "
            "Send an answer that matches the interrupt's 'schema'; the pause is still pending."
        )


class TamperedRecordError(ResumeError):
    """A pause record's signature does not check out: it was edited, signed with another key, or never signed.

    Nothing of the resume ran and a stored record is still pending, unchanged.

    Attributes:
        pause_id: the record's ``id`` (as the record claims it).
        reason: ``"unsigned"`` (no valid signature), ``"wrong_key"`` (signed
            with another key: another process or store), or ``"changed"`` (its
            content was edited after signing; the message names the members).
    """

    def __init__(self, pause_id: t.Any, reason: t.Literal["unsigned", "wrong_key", "changed"], message: str) -> None:
        self.pause_id = pause_id
        self.reason = reason
        super().__init__(message)
