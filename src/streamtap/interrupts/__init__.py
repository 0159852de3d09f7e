"""Human-in-the-loop: pause a flow inside a node, resume it later with the answer.

Inside a node, :func:`interrupt` asks a question::

    class Approve(Node):
        def exec(self, call):
            answer = interrupt({"question": "Run this tool?", "call": call},
                               schema={"type": "object", "required": ["approved"],
                                       "properties": {"approved": {"type": "boolean"}}})
            return answer["approved"]

The first time, ``interrupt`` raises :class:`Interrupt`: every run on the way
up ends with status ``interrupted``, and the flow's ``End.output`` (also
``exc.record``) is the **pause record**, a plain JSON dict::

    {"type": "streamtap.pause", "format": 1, "id": "…", "run_id": "…", "created_at": 1.7e9,
     "flow": {"name": "ApprovalFlow", "version": "…"},
     "shared": {…},                      # the shared store when the node paused
     "interrupts": [{"id": "…", "node": "Approve", "path": ["ApprovalFlow", "Approve"],
                     "run_id": "…", "payload": {…}, "schema": {…}}],
     "state": {…},                        # where to continue (opaque to front ends)
     "signature": {"alg": "HMAC-SHA256", "key_id": "…", "mac": "…", "members": {…}}}

``flow.resume(record, answer)`` (or ``flow.stream(Resume(record, answer))``)
continues from the interrupted node, in this process or another one: the node
runs again from its start and this time ``interrupt`` returns the answer (the
LangGraph model). Several ``interrupt`` calls in one node are matched by order.
A run can have several pending interrupts (parallel branches, batch items):
answer them with ``answers={interrupt_id: answer, ...}``; the ones left
unanswered stay pending in the next record.

Pause stores (:class:`MemoryPauseStore`, :class:`SQLitePauseStore`) keep the
records; a flow given ``store=`` saves each record and refuses to resume one
twice. Every bad resume is a clear :class:`ResumeError`, and nothing is lost:
the record stays pending.

Records are **tamper-evident**: the flow signs each one (HMAC-SHA256 over its
canonical JSON, member ``"signature"``) and a resume checks the signature
before anything runs. An edited, unsigned or foreign-key record raises
:class:`TamperedRecordError`. The key comes from the store's ``key=``, else
``STREAMTAP_RECORD_KEY``, else a key a :class:`SQLitePauseStore` keeps in its
file, else a random per-process key (see :mod:`streamtap.interrupts.signing`).
"""

from __future__ import annotations

from ._frames import interrupt
from .errors import AnswerValidationError, ResumeError, StalePauseError, TamperedRecordError, UnknownInterruptError
from .records import Interrupt, Resume
from .schema import validate_answer
from .signing import KEY_ENV, sign_record, verify_record
from .stores import MemoryPauseStore, PauseStore, SQLitePauseStore

__all__ = [
    "KEY_ENV",
    "AnswerValidationError",
    "Interrupt",
    "MemoryPauseStore",
    "PauseStore",
    "Resume",
    "ResumeError",
    "SQLitePauseStore",
    "StalePauseError",
    "TamperedRecordError",
    "UnknownInterruptError",
    "interrupt",
    "sign_record",
    "validate_answer",
    "verify_record",
]
