"""What a client is told about a failure, and what only the server log gets.

An exception's message can carry what a browser must never see: an upstream
error body that echoes the API key, an internal model URL, a database DSN.
Every message the web layer sends -- the UI stream's ``errorText``, the
events endpoint's ``error`` fields, HTTP error bodies -- goes through
:class:`ClientErrors`:

* ``detail="short"`` (the default): the client gets what failed, the run id
  and what to do ("The model call failed (LLMError) in run 3f2a...: try
  again; if it keeps failing, give the run id to whoever runs this server").
  Messages streamtap writes for the user (a refused interrupt answer, a
  cancel reason) are kept, redacted.
* ``detail="full"``: the client gets ``Type: message``, redacted.

Either way the text passes the same :class:`~streamtap.redaction.Redactor`
as spans, and the full (redacted) detail is logged once on the
``streamtap.web`` logger when the run's events are stored; the run's span
records it as well.

A paused run's pause record (its ``End.output``) is the server's: the flow's
``shared`` store, where to continue, the signature. A client is shown only
:func:`public_record` of it (the pause id and the questions), on every endpoint.
"""

from __future__ import annotations

import logging
import typing as t

from ..events import ERROR_DETAIL_PREFIX
from ..exceptions import UsageError
from ..redaction import Redactor

__all__ = ["ClientErrors", "ErrorDetail", "public_record"]

ErrorDetail = t.Literal["short", "full"]

log = logging.getLogger("streamtap.web")

_OWN_WORDS = (".interrupts.", "RunCancelled")  # messages streamtap writes for the user: safe to show, redacted

_PAUSE_RECORD = "streamtap.pause"  # streamtap.interrupts.records.RECORD_TYPE
_PUBLIC_ENTRY = ("id", "node", "path", "payload", "schema", "expires_at")


def public_record(record: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """What a client may see of a pause record: its id and the questions, never the flow's state.

    The ``shared`` store, ``state``, ``signature`` and the rest stay in the
    process; each interrupt keeps its ``id``, ``node``, ``path``, ``payload``,
    ``schema`` and ``expires_at``. Anything that is not a pause record comes back as a plain copy.
    """
    if record.get("type") != _PAUSE_RECORD:
        return dict(record)
    entries = [
        {k: e[k] for k in _PUBLIC_ENTRY if k in e} for e in record.get("interrupts") or () if isinstance(e, t.Mapping)
    ]
    return {"id": record.get("id"), "type": _PAUSE_RECORD, "interrupts": entries}


class ClientErrors:
    """Turns run failures into client messages, and logs their full detail.

    Args:
        detail: ``"short"`` or ``"full"`` (see the module docs).
        redactor: the redactor (default: :class:`~streamtap.redaction.Redactor` with
            the built-in patterns; pass the tracing subscriber's ``redact`` to use the spans' one).

    Raises:
        UsageError: ``detail`` is neither ``"short"`` nor ``"full"``.
    """

    def __init__(self, detail: ErrorDetail = "short", redactor: Redactor | None = None) -> None:
        if detail not in ("short", "full"):
            msg = f"error_detail must be 'short' or 'full', got {detail!r}."
            raise UsageError(msg)
        self.detail: ErrorDetail = detail
        self.redact = redactor if redactor is not None else Redactor()

    def describe(self, error: t.Mapping[str, t.Any] | None, *, run_id: str, kind: str = "", name: str = "") -> str:
        """The text a client is shown for ``error`` (an ``ErrorInfo.to_dict()``) of a run.

        Args:
            error: ``{"type", "message"}``, or ``None`` when the run gave none.
            run_id: the id the user can quote (the root run's).
            kind: the failed run's kind (``tool``, ``llm``...), to say what failed.
            name: the failed run's (or tool's) name.
        """
        typ = str((error or {}).get("type") or "Error")
        message = str((error or {}).get("message") or "")
        short_type = typ.rsplit(".", 1)[-1]
        if self.detail == "full" or any(w in typ for w in _OWN_WORDS):
            return self.redact(f"{short_type}: {message}" if message else short_type)
        if kind == "tool":
            tool = f"The tool {name!r}" if name else "A tool"
            return self.redact(f"{tool} failed ({short_type}); the details are in the server log (run {run_id}).")
        if kind == "llm" or short_type == "LLMError" or typ.startswith("openai."):
            what = "The model call"
        else:
            what = f"The step {name!r}" if name and kind not in ("agent", "flow") else "The run"
        return self.redact(
            f"{what} failed ({short_type}) in run {run_id}. Try again; if it keeps failing, give the run id "
            "to whoever runs this server (the details are in its log)."
        )

    def event(self, ev: t.Mapping[str, t.Any], root_id: str) -> t.Mapping[str, t.Any]:
        """``ev`` (an ``Event.to_dict()``) as a client may see it.

        Its ``error`` is described, not copied; the pause record of an
        interrupted run's ``End`` (the root's or any child's) becomes its :func:`public_record`.
        """
        output = ev.get("output")
        if ev.get("kind") == "end" and ev.get("status") == "interrupted" and isinstance(output, t.Mapping):
            ev = {**ev, "output": public_record(output)}
        error = ev.get("error")
        if not error:
            return ev
        attributes = ev.get("attributes")
        if isinstance(attributes, t.Mapping) and any(str(k).startswith(ERROR_DETAIL_PREFIX) for k in attributes):
            ev = {
                **ev,
                "attributes": {k: v for k, v in attributes.items() if not str(k).startswith(ERROR_DETAIL_PREFIX)},
            }
        run = ev.get("run") or {}
        if ev.get("kind") == "tool":
            kind, name = "tool", str(ev.get("name") or "")
        else:
            kind, name = str(run.get("kind") or ""), str(run.get("name") or "")
        text = self.describe(error, run_id=root_id, kind=kind, name=name)
        return {**ev, "error": {"type": str(error.get("type") or "Error").rsplit(".", 1)[-1], "message": text}}

    def message(self, text: str) -> str:
        """An HTTP error body's message, redacted."""
        return self.redact(text)

    def log_event(self, ev: t.Mapping[str, t.Any]) -> None:
        """Log a failed run or tool call of ``ev`` with its full (redacted) detail; other events pass."""
        error = ev.get("error")
        if not error or ev.get("kind") not in ("end", "tool"):
            return
        run = ev.get("run") or {}
        what = f"tool {ev.get('name')!r}" if ev.get("kind") == "tool" else f"{run.get('kind')} {run.get('name')!r}"
        level = (
            logging.ERROR if ev.get("kind") == "end" and run.get("run_id") == run.get("root_id") else logging.WARNING
        )
        verb = "failed"
        if ev.get("status") == "cancelled":
            level, verb = logging.INFO, "was cancelled"
        attributes = ev.get("attributes")
        detail = ""
        if isinstance(attributes, t.Mapping):
            facts = [
                f"{k[len(ERROR_DETAIL_PREFIX) :]}={v}"
                for k, v in attributes.items()
                if str(k).startswith(ERROR_DETAIL_PREFIX)
            ]
            detail = f" [{', '.join(facts)}]" if facts else ""
        log.log(
            level,
            "Run %s (%s, root %s) %s: %s: %s%s",
            run.get("run_id"),
            what,
            run.get("root_id"),
            verb,
            error.get("type"),
            self.redact(str(error.get("message") or "")),
            self.redact(detail),
        )


class LoggingStore:
    """An event store that logs each failure's detail (via :meth:`ClientErrors.log_event`) as it stores it.

    Everything else is the wrapped store's: attributes not defined here are its own.
    """

    def __init__(self, store: t.Any, errors: ClientErrors) -> None:
        self.store = store
        self.errors = errors

    async def create(self, run_id: str) -> None:
        """See :meth:`EventStore.create`."""
        await self.store.create(run_id)

    async def append(self, run_id: str, event: t.Mapping[str, t.Any]) -> None:
        """Log a failure, then store the event unchanged."""
        try:
            self.errors.log_event(event)
        except Exception:
            log.debug("could not log a failure of run %s", run_id, exc_info=True)
        await self.store.append(run_id, event)

    async def finish(self, run_id: str) -> None:
        """See :meth:`EventStore.finish`."""
        await self.store.finish(run_id)

    async def read(self, run_id: str, after: int = -1, limit: int = 1000) -> t.Any:
        """See :meth:`EventStore.read`."""
        return await self.store.read(run_id, after, limit)

    async def wait(self, run_id: str, after: int, timeout: float) -> bool:
        """See :meth:`EventStore.wait`."""
        return bool(await self.store.wait(run_id, after, timeout))

    async def expire(self, now: float | None = None) -> int:
        """See :meth:`EventStore.expire`."""
        return int(await self.store.expire(now))

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.store, name)

    def __len__(self) -> int:
        return len(self.store)
