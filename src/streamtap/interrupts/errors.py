"""The errors of a resume that cannot start; the pause record is untouched in each case."""

from __future__ import annotations

from ..exceptions import StreamtapError

__all__ = ["AnswerValidationError", "ResumeError", "StalePauseError", "UnknownInterruptError"]


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
