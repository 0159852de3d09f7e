"""Conversations and their runs: start, pump into the event store, stop, resume an interrupt.

One :class:`ChatService` serves one module (shared) or one module per
conversation (from a factory). Each chat request starts a root run with
``module.astart(...)`` as a task of the server's loop; a pump task copies its
events into the :class:`~streamtap.web.store.EventStore`, independent of any
HTTP connection, so a client that disconnects leaves the run going (unless
``cancel_on_disconnect``) and a reload can replay it.

The service counts each run's connected readers (chat streams, resumed
streams, the events endpoint): a new ``submit-message`` on a chat whose run
nobody reads supersedes that run (it is cancelled, the new one starts), and
``detach_timeout`` cancels a run nobody has read for that long. Every cancel
says why on the run's ``End`` (and so on its span): one of
:data:`CANCEL_REASONS`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import inspect
import logging
import secrets
import time
import typing as t

from ..exceptions import UsageError
from ..module import ModuleBase
from ..streams import RunHandle
from .chat import BadRequest, ChatRequest
from .store import EventStore

__all__ = [
    "CANCEL_REASONS",
    "CLIENT_GONE",
    "SHUTDOWN",
    "STOP_REQUEST",
    "SUPERSEDED",
    "ActiveRun",
    "ChatService",
    "Conversation",
    "FinishedRun",
    "resolved",
    "stop_answer",
]

log = logging.getLogger("streamtap.web")

STOP_REQUEST = "stop request"
"""Cancel reason: ``POST /api/chat/{id}/stop``."""
SUPERSEDED = "superseded by a new message"
"""Cancel reason: a new ``submit-message`` on a chat whose run nobody was reading."""
CLIENT_GONE = "client gone"
"""Cancel reason: the last reader left (``cancel_on_disconnect``) or nobody read for ``detach_timeout`` seconds."""
SHUTDOWN = "shutdown"
"""Cancel reason: the server is shutting down and the run outlived the grace period."""
CANCEL_REASONS = (STOP_REQUEST, SUPERSEDED, CLIENT_GONE, SHUTDOWN)
"""Why the web app cancels a run; the reason is on the run's ``End`` (``error.message``) and span."""

_READERS_LEAVE_WAIT = (
    0.5  # seconds a new message waits for the old run's readers to be seen gone (a just-aborted fetch)
)
_CANCELLED_END_WAIT = 10.0  # seconds a superseding message or a shutdown waits for a cancelled run's End

InputBuilder = t.Callable[[ChatRequest], t.Any]
Resumer = t.Callable[[ModuleBase, t.Any, t.Any], RunHandle]


@dataclasses.dataclass
class ActiveRun:
    """A run started by a chat request.

    Attributes:
        run_id: the root run id (unguessable; also the events endpoint's key).
        chat_id: the conversation it belongs to.
        message_id: the assistant message id of its UI stream.
        handle: the run's :class:`~streamtap.RunHandle`.
        verbose: map tool calls, reasoning and run progress into the UI stream.
        stream_text: stream text as it comes (``False``: whole parts).
        readers: clients reading its stream now (chat streams and the events endpoint).
    """

    run_id: str
    chat_id: str
    message_id: str
    handle: RunHandle
    verbose: bool = True
    stream_text: bool = True
    pump: asyncio.Task[None] | None = None
    finished: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    status: str | None = None
    resumed: dict[str, t.Any] | None = None
    readers: int = 0
    unread: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # set while nobody reads
    detach_timer: asyncio.TimerHandle | None = None

    @property
    def cancel_reason(self) -> str | None:
        """Why the run was cancelled (``None``: it was not)."""
        return self.handle.token.reason


@dataclasses.dataclass(frozen=True, slots=True)
class FinishedRun:
    """What is kept of a run once it ended, to replay it (``?run=``): its identity and how it ended.

    A few hundred bytes: the run's task, buffer and events (those are in the store) are let go.
    """

    run_id: str
    chat_id: str
    message_id: str
    verbose: bool
    stream_text: bool
    status: str | None
    cancel_reason: str | None


@dataclasses.dataclass
class Conversation:
    """One chat id's state: its module, its active run, a pending interrupt."""

    chat_id: str
    module: ModuleBase
    active: ActiveRun | None = None
    pending: dict[str, t.Any] | None = None
    starting: bool = False  # a run is being set up (its store entry is being created)
    last_used: float = dataclasses.field(default_factory=time.monotonic)


def default_input(request: ChatRequest) -> t.Any:
    """The module's input for a chat request: the last user message's text."""
    return request.last_user_text


def default_resume(module: ModuleBase, record: t.Any, answer: t.Any) -> RunHandle:
    """Resume an interrupted run with the user's answer: ``module.astart(Resume(record, answer))``.

    ``answer`` may be ``{"answers": {interrupt_id: answer, ...}}`` for a
    record with several pending interrupts (see :mod:`streamtap.interrupts`).
    """
    from ..interrupts import Resume

    if isinstance(answer, dict) and set(answer) == {"answers"} and isinstance(answer["answers"], dict):
        resume = Resume(record, answers=answer["answers"])
    else:
        resume = Resume(record, answer)
    return module.buffered(1024, "block").astart(resume)


class ChatService:
    """The runs behind the chat endpoints.

    Args:
        module_or_factory: a module shared by every conversation, or a
            zero-argument callable returning a new module per conversation
            (for modules with per-conversation state).
        store: where run events are buffered.
        to_input: builds the module's input from a :class:`ChatRequest`
            (default: the last user message's text).
        resume: resumes an interrupted run with the user's answer; returns its handle.
        max_conversations: conversations kept; idle ones beyond it are forgotten.
        conversation_ttl: seconds an idle conversation is kept.
        stream_buffer: events buffered between a run and its pump.
        cancel_on_disconnect: cancel a run (reason ``client gone``) when its last
            reader disconnects before the end.
        detach_timeout: seconds a run may go on with no reader before it is
            cancelled (reason ``client gone``); ``None`` (default): never.

    Raises:
        UsageError: a ``detach_timeout`` that is not a positive number of seconds.
    """

    def __init__(
        self,
        module_or_factory: ModuleBase | t.Callable[[], ModuleBase],
        store: EventStore,
        *,
        to_input: InputBuilder | None = None,
        resume: Resumer | None = None,
        max_conversations: int = 1000,
        conversation_ttl: float = 3600.0,
        stream_buffer: int = 1024,
        cancel_on_disconnect: bool = False,
        detach_timeout: float | None = None,
    ) -> None:
        if isinstance(module_or_factory, ModuleBase):
            shared: ModuleBase | None = module_or_factory
            factory: t.Callable[[], ModuleBase] | None = None
        elif callable(module_or_factory):
            shared, factory = None, module_or_factory
        else:
            msg = f"create_app() needs a ModuleBase or a function returning one, got {module_or_factory!r}."
            raise TypeError(msg)
        self._shared = shared
        self._factory = factory
        self.store = store
        self.to_input = to_input or default_input
        self.resume = resume or default_resume
        self.max_conversations = max_conversations
        self.conversation_ttl = conversation_ttl
        self.stream_buffer = stream_buffer
        self.conversations: dict[str, Conversation] = {}
        self.runs: dict[str, ActiveRun] = {}
        self.recent: collections.OrderedDict[str, FinishedRun] = collections.OrderedDict()  # finished runs, newest last
        self.max_recent = max_conversations
        self._tasks: set[asyncio.Task[t.Any]] = set()
        self.cancel_on_disconnect = False
        self.detach_timeout: float | None = None
        self.draining = False
        """Set by :meth:`shutdown`: new runs are refused (503)."""
        self.stop_wait = 10.0
        """Seconds a stop request waits for its run to end before answering (then: ``stopping``, 202)."""
        self.configure(cancel_on_disconnect=cancel_on_disconnect, detach_timeout=detach_timeout)

    def configure(self, *, cancel_on_disconnect: bool | None = None, detach_timeout: float | None = None) -> None:
        """Change how runs without readers are treated (``None`` leaves a setting as it is).

        Args:
            cancel_on_disconnect: cancel a run when its last reader disconnects before the end.
            detach_timeout: seconds a run may go on with no reader before it is cancelled.

        Raises:
            UsageError: a ``detach_timeout`` that is not a positive, finite number of seconds.
        """
        if cancel_on_disconnect is not None:
            if not isinstance(cancel_on_disconnect, bool):
                msg = f"cancel_on_disconnect must be True or False, got {cancel_on_disconnect!r}."
                raise UsageError(msg)
            self.cancel_on_disconnect = cancel_on_disconnect
        if detach_timeout is not None:
            ok = isinstance(detach_timeout, (int, float)) and not isinstance(detach_timeout, bool)
            if not ok or not 0 < detach_timeout < float("inf"):
                msg = (
                    f"detach_timeout must be a positive number of seconds (how long a run may go on with nobody "
                    f"reading it), got {detach_timeout!r}. Leave it unset (None) to never cancel unread runs."
                )
                raise UsageError(msg)
            self.detach_timeout = float(detach_timeout)

    # -- conversations ---------------------------------------------------------

    def _module(self) -> ModuleBase:
        if self._shared is not None:
            return self._shared
        assert self._factory is not None
        module = self._factory()
        if not isinstance(module, ModuleBase):
            msg = f"The module factory given to create_app() returned {module!r}, not a ModuleBase."
            raise TypeError(msg)
        return module

    def conversation(self, chat_id: str, *, create: bool = False) -> Conversation | None:
        """The conversation with this id (made when ``create``)."""
        conv = self.conversations.get(chat_id)
        if conv is None and create:
            self._evict()
            conv = Conversation(chat_id, self._module())
            self.conversations[chat_id] = conv
        if conv is not None:
            conv.last_used = time.monotonic()
        return conv

    def _evict(self) -> None:
        now = time.monotonic()
        idle = [c for c in self.conversations.values() if c.active is None]
        for conv in idle:
            if now - conv.last_used > self.conversation_ttl:
                del self.conversations[conv.chat_id]
        if len(self.conversations) >= self.max_conversations:
            idle = sorted((c for c in self.conversations.values() if c.active is None), key=lambda c: c.last_used)
            for conv in idle[: len(self.conversations) - self.max_conversations + 1]:
                del self.conversations[conv.chat_id]
        if len(self.conversations) >= self.max_conversations:
            msg = f"All {self.max_conversations} conversations have a run going; try again when one finishes."
            raise BadRequest(503, msg)

    def run_of(self, chat_id: str, run_id: str) -> ActiveRun | FinishedRun | None:
        """A run of this conversation, going or recently finished (``None`` for another conversation's)."""
        run = self.runs.get(run_id) or self.recent.get(run_id)
        return run if run is not None and run.chat_id == chat_id else None

    def active(self, chat_id: str) -> ActiveRun | None:
        """The run of this conversation that is still going, if any."""
        conv = self.conversations.get(chat_id)
        return conv.active if conv is not None else None

    # -- runs -------------------------------------------------------------------

    async def start(self, request: ChatRequest) -> ActiveRun:
        """Start the run answering ``request`` (or resume the conversation's pending interrupt).

        Raises:
            BadRequest: 409 when the conversation already has a run going.
        """
        if self.draining:
            raise BadRequest(
                503, "The server is shutting down; send the message again in a moment (to the server that replaces it)."
            )
        conv = self.conversation(request.chat_id, create=True)
        assert conv is not None
        if conv.starting:
            raise BadRequest(
                409,
                f"Chat {request.chat_id!r} is starting a run; wait for its stream, or stop it with POST /api/chat/{request.chat_id}/stop.",
            )
        conv.starting = True  # until conv.active is set: a concurrent POST gets 409, not a second run
        try:
            if conv.active is not None:
                await self._supersede(conv, request)
            return await self._start(conv, request)
        finally:
            conv.starting = False

    async def _supersede(self, conv: Conversation, request: ChatRequest) -> None:
        """Cancel the conversation's run for a new message when nobody reads it; else 409."""
        run = conv.active
        assert run is not None
        stop_hint = f"Stop it with POST /api/chat/{request.chat_id}/stop or wait for it to finish."
        if request.trigger != "submit-message" or "resume" in request.body:
            raise BadRequest(409, f"Chat {request.chat_id!r} already has a run going ({run.run_id}). {stop_hint}")
        if run.readers:  # a fetch aborted just now (useChat's stop()) may not have been seen closing yet
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(run.unread.wait(), _READERS_LEAVE_WAIT)
        if run.readers:
            msg = (
                f"Chat {request.chat_id!r} already has a run going ({run.run_id}) and a client is reading it. "
                f"{stop_hint}"
            )
            raise BadRequest(409, msg)
        run.handle.cancel(SUPERSEDED)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(run.finished.wait(), _CANCELLED_END_WAIT)
        if conv.active is run:
            raise BadRequest(
                409, f"Chat {request.chat_id!r}: its run {run.run_id} was cancelled but has not ended yet; try again."
            )

    async def _start(self, conv: Conversation, request: ChatRequest) -> ActiveRun:
        body = request.body
        module = conv.module
        if conv.pending is not None:
            record = conv.pending
            answer = body.get("resume", request.last_user_text)
            conv.pending = None
            handle = self.resume(module, record, answer)
            resumed: dict[str, t.Any] | None = record
        else:
            resumed = None
            handle = module.buffered(self.stream_buffer, "block").astart(self.to_input(request))
        run = ActiveRun(
            run_id=handle.run_id,
            chat_id=request.chat_id,
            message_id=request.message_id or "msg-" + secrets.token_hex(8),
            handle=handle,
            verbose=bool(body.get("verbose", True)),
            stream_text=bool(body.get("stream", True)),
            resumed=resumed,
        )
        try:
            await self.store.create(run.run_id)
        except Exception as exc:
            # Nobody could follow this run: stop it, and keep the pause it was answering.
            handle.cancel("the run's events could not be stored")
            if resumed is not None:
                conv.pending = resumed
            log.exception("Run %s: the event store could not create it", run.run_id)
            raise BadRequest(
                503, f"The event store failed ({type(exc).__name__}); try again. The details are in the server log."
            ) from None
        conv.active = run
        self.runs[run.run_id] = run
        run.pump = self._spawn(self._pump(conv, run))
        self._unread(run)  # until its stream is opened
        return run

    # -- readers ----------------------------------------------------------------

    def reader_joined(self, run: ActiveRun) -> None:
        """A client started reading ``run``'s stream."""
        run.readers += 1
        run.unread.clear()
        if run.detach_timer is not None:
            run.detach_timer.cancel()
            run.detach_timer = None

    def reader_left(self, run: ActiveRun, complete: bool) -> None:
        """A client stopped reading ``run``'s stream (``complete``: it read to the end)."""
        run.readers = max(0, run.readers - 1)
        if run.readers or run.finished.is_set():
            return
        if not complete and self.cancel_on_disconnect:
            run.handle.cancel(CLIENT_GONE)
            return
        self._unread(run)

    def _unread(self, run: ActiveRun) -> None:
        run.unread.set()
        if self.detach_timeout is not None and run.detach_timer is None and not run.finished.is_set():
            run.detach_timer = asyncio.get_running_loop().call_later(self.detach_timeout, self._detached, run)

    def _detached(self, run: ActiveRun) -> None:
        run.detach_timer = None
        if not run.readers and not run.finished.is_set():
            log.info("Run %s: nobody read it for detach_timeout=%s s; it is cancelled", run.run_id, self.detach_timeout)
            run.handle.cancel(CLIENT_GONE)

    def pending(self, chat_id: str) -> dict[str, t.Any] | None:
        """The interrupt record the conversation waits an answer for, while no run is going in it; else ``None``."""
        conv = self.conversations.get(chat_id)
        return conv.pending if conv is not None and conv.active is None else None

    def has_pending(self, chat_id: str) -> bool:
        """Whether the conversation waits for the answer to an interrupt (its next message answers it)."""
        conv = self.conversations.get(chat_id)
        return conv is not None and conv.pending is not None

    def dismiss_pending(self, chat_id: str) -> str | None:
        """Drop the conversation's pending interrupt when no run is going; returns its id.

        Stop on a chat that waits for an answer means "never mind": without this, every
        later message would be taken as the answer.
        """
        conv = self.conversation(chat_id)
        if conv is None or conv.active is not None or conv.pending is None:
            return None
        record, conv.pending = conv.pending, None
        return str(record.get("id") or record.get("pause_id") or "pending")

    def _spawn(self, coro: t.Coroutine[t.Any, t.Any, t.Any]) -> asyncio.Task[t.Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, conv: Conversation, run: ActiveRun) -> None:
        store = self.store
        rid = run.run_id
        complete = False
        try:
            async for ev in run.handle.events():
                if ev.kind == "end" and ev.run.run_id == rid:
                    run.status = ev.status
                    if ev.status == "interrupted":
                        out = ev.output
                        conv.pending = out if isinstance(out, dict) else {"value": out}
                    elif (
                        ev.status == "error"
                        and run.resumed is not None
                        and ev.error
                        and ".interrupts." in ev.error.type
                    ):
                        # The answer was refused (wrong shape, stale record): the pause is still pending.
                        conv.pending = run.resumed
                    if conv.active is run:  # free the chat before any reader can see the End and act on it
                        conv.active = None
                await store.append(rid, ev.to_dict())
            complete = True
        except Exception:
            log.exception("Run %s: its events could not be stored; the run is cancelled", rid)
        finally:
            if not complete:  # the store failed, or the server is shutting down: nobody could follow the run
                run.handle.cancel("the run's events could not be stored")
            run.handle.events().close()
            await store.finish(rid)
            if conv.active is run:
                conv.active = None
            self.runs.pop(rid, None)
            if run.detach_timer is not None:
                run.detach_timer.cancel()
                run.detach_timer = None
            self.recent[rid] = FinishedRun(
                rid, run.chat_id, run.message_id, run.verbose, run.stream_text, run.status, run.cancel_reason
            )
            while len(self.recent) > self.max_recent:
                self.recent.popitem(last=False)
            run.finished.set()
            # Collect the run's result so that its exception is not reported as never retrieved.
            try:
                await run.handle
            except BaseException:  # noqa: S110 - best effort: nothing useful to report here
                pass

    async def stop(self, chat_id: str, *, wait: float | None = None) -> ActiveRun | None:
        """Cancel the conversation's run (its model stream closes) and wait for it to end.

        Waits at most ``wait`` seconds (default :attr:`stop_wait`); the run
        returned has ended if its ``status`` is set (see :func:`stop_answer`).
        """
        run = self.active(chat_id)
        if run is None:
            return None
        run.handle.cancel(STOP_REQUEST)
        try:
            await asyncio.wait_for(run.finished.wait(), self.stop_wait if wait is None else wait)
        except asyncio.TimeoutError:
            pass
        return run

    async def shutdown(self, grace: float) -> None:
        """Drain for a server shutdown: refuse new runs, let the running ones finish, then cancel them.

        Runs still going after ``grace`` seconds are cancelled (reason
        ``shutdown``); this returns when every run has ended and its events
        are stored (so each reader gets the end of its stream), or after a
        further bounded wait for runs that do not stop.
        """
        self.draining = True
        going = list(self.runs.values())
        if going and grace > 0:
            waits = [asyncio.ensure_future(run.finished.wait()) for run in going]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
        left = list(self.runs.values())
        if left:
            log.warning("Shutdown: %d run(s) still going after the %s s grace period are cancelled", len(left), grace)
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every run (reason ``shutdown``) and wait, bounded, for their ends to be stored."""
        self.draining = True
        for run in list(self.runs.values()):
            run.handle.cancel(SHUTDOWN)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_CANCELLED_END_WAIT)


def stop_answer(run: ActiveRun) -> dict[str, t.Any]:
    """What a stop endpoint answers once it asked ``run`` to stop: ``stopped`` only if the run has ended.

    A run that did not end within the stop's wait (a module that ignores
    cancellation for a while) is ``{"stopped": false, "stopping": true, ...}``:
    it was asked to stop, its stream ends when it does.
    """
    if run.status is not None or run.finished.is_set():
        return {"stopped": True, "runId": run.run_id, "status": run.status}
    return {
        "stopped": False,
        "stopping": True,
        "runId": run.run_id,
        "status": None,
        "reason": "the run was asked to stop and has not ended yet; its stream ends when it does",
    }


async def resolved(value: t.Any) -> t.Any:
    """``value``, awaited when it is awaitable: what a chat service method returned.

    A service kept in another process (``streamtap_redis.RedisChatService``)
    answers ``active``, ``run_of``, ``pending``, ``has_pending``,
    ``dismiss_pending`` and ``stop`` with coroutines; :class:`ChatService`
    answers at once. Endpoints call them through this, so either serves.
    """
    return await value if inspect.isawaitable(value) else value
