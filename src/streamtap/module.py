"""ModuleBase: subclass it, implement ``forward()``, get streaming and tracing.

``forward`` may have any of four shapes:

* return a value: ``def forward(self, x): return ...``
* be a coroutine: ``async def forward(self, x): return ...``
* be a generator: ``def forward(self, x): yield ...`` -- each item is a chunk
* be an async generator: ``async def forward(self, x): yield ...``

A yielded ``str`` is a chunk on the user-facing ``text`` channel; a
:class:`Delta` chooses another channel (``reasoning``, ``tool_args``...); any
other object goes on the ``data`` channel (partial JSON objects, say). The
call's output is the generator's return value when it has one, else the
joined ``text`` chunks, else the last item yielded.

The base class alone emits :class:`~streamtap.events.Start` and
:class:`~streamtap.events.End`, exactly one each, on every path: return,
exception (status ``error``; the exception reaches the caller unchanged),
cancellation (``cancelled``), interruption (``interrupted``), a consumer that
stops reading early, an abandoned stream collected by the garbage collector.
"""

from __future__ import annotations

import ast
import asyncio
import collections.abc
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import textwrap
import threading
import types
import typing as t

from . import bus
from .buffer import Policy, StreamBuffer
from .context import CancelToken, Executor, RunContext
from .context import current_var as _current
from .dispatch import Tree
from .driven import ClaimTimer, DrivenRun
from .events import ERROR_DETAIL_PREFIX, ErrorInfo, Run, RunKind, Status
from .exceptions import RunCancelled, UsageError
from .streams import RunHandle, RunStream

__all__ = ["Configured", "Delta", "ModuleBase", "default_executor", "new_id", "returns_value"]

_chunk_receivers = bus.signals["chunk"].receivers
_start_receivers = bus.signals["start"].receivers
_registry = bus.registry
_tuple_new = tuple.__new__
_GEN = types.GeneratorType
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple, bytes})  # never awaitable
_scope_signal = bus.scope_signal
_EMPTY_META: t.Mapping[str, t.Any] = types.MappingProxyType({})
_BATCH = 64  # a same-thread stream hands its reader at most this many items at once...
_BATCH_S = 0.001  # ...or what one millisecond produced, whichever comes first

# -- ids ----------------------------------------------------------------------

_id_pool: list[str] = []


def new_id() -> str:
    """A random, unguessable id of 16 hex digits (64 bits from ``os.urandom``).

    Randomness is read in blocks so that an id costs about as much as a list pop.
    """
    try:
        return _id_pool.pop()
    except IndexError:
        block = os.urandom(8 * 256).hex()
        _id_pool.extend(block[i : i + 16] for i in range(0, len(block), 16))
        return _id_pool.pop()


if hasattr(os, "register_at_fork"):  # a forked child must not reuse its parent's ids
    os.register_at_fork(after_in_child=_id_pool.clear)


@functools.lru_cache(maxsize=1)
def default_executor() -> Executor:
    """The SDK's thread pool (created on first use), whose tasks keep the submitter's context.

    Background runs of synchronous modules (``start``, ``stream``, and
    ``acall`` of a blocking module) run here.
    """
    return Executor(max_workers=max(32, (os.cpu_count() or 1) * 8), thread_name_prefix="streamtap")


@functools.lru_cache(maxsize=1)
def default_claims() -> ClaimTimer:
    """The timer that hands a same-thread stream's run to :func:`default_executor` when nobody reads it."""
    return ClaimTimer(default_executor().submit)


class Delta(t.NamedTuple):
    """What a ``forward`` generator yields to stream on a channel other than ``text``.

    ``yield Delta("hmm, the user wants...", "reasoning")``
    """

    delta: t.Any
    channel: str = "text"
    call_id: str | None = None


def _status_of(exc: BaseException) -> Status:
    status = getattr(type(exc), "__streamtap_status__", None)
    if status in ("cancelled", "interrupted", "error"):
        return t.cast(Status, status)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)):
        return "cancelled"
    return "error"


def _inputs_of(args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and not kwargs:
        return None
    return {"args": list(args), **kwargs} if args else dict(kwargs)


def _output_of(parts: list[t.Any], returned: t.Any) -> t.Any:
    if returned is not None:
        return returned
    if not parts:
        return None
    try:
        return "".join(parts)  # the common case: every chunk is text
    except TypeError:
        pass
    texts = [
        p if isinstance(p, str) else p.delta
        for p in parts
        if isinstance(p, str) or (isinstance(p, Delta) and p.channel == "text" and isinstance(p.delta, str))
    ]
    if texts:
        return "".join(texts)
    others = [p for p in parts if p.__class__ is not Delta]
    return others[-1] if others else None


def _emit_item(ctx: RunContext, item: t.Any) -> None:
    cls = item.__class__
    if cls is str:
        ctx.chunk(item)
    elif cls is Delta:
        ctx.chunk(item.delta, item.channel, item.call_id)
    else:
        ctx.chunk(item, "data")


@functools.lru_cache(maxsize=512)
def _is_awaitable_type(cls: type) -> bool:
    # Cached per type: hasattr() on a plain type costs an internal AttributeError on every call.
    return hasattr(cls, "__await__")


def _discard(_: t.Any) -> None:
    pass


def _capture(gen: t.Generator[t.Any, None, t.Any], box: list[t.Any]) -> t.Generator[t.Any, None, None]:
    box.append((yield from gen))


class _Shape:
    SYNC = 0
    CORO = 1
    GEN = 2
    AGEN = 3


class _ReturnFinder(ast.NodeVisitor):
    """Finds a ``return <value>`` in a function body, not looking into nested functions, lambdas or classes."""

    def __init__(self) -> None:
        self.found = False

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            self.found = True

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        pass

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        pass

    def visit_Lambda(self, node: ast.Lambda) -> None:
        pass

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        pass


def returns_value(fn: t.Callable[..., t.Any]) -> bool:
    """Whether a generator function may ``return`` a value: it has a ``return <expr>`` other than ``return None``.

    Read once per class from the function's *source*, with :mod:`ast` (whose
    ``Return`` node is the same on every supported Python), so that a module
    whose generator cannot return a value is consumed at C speed when nobody
    listens. ``True`` (the safe answer: the return value is captured) when
    the source is not available, e.g. for a function made by ``exec``.
    """
    func = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return True
    body = tree.body[0] if tree.body else None
    if not isinstance(body, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True  # a lambda or something else: be safe
    finder = _ReturnFinder()
    for stmt in body.body:
        finder.visit(stmt)
    return finder.found


def _shape_of(fn: t.Callable[..., t.Any]) -> int:
    if inspect.isasyncgenfunction(fn):
        return _Shape.AGEN
    if inspect.iscoroutinefunction(fn):
        return _Shape.CORO
    if inspect.isgeneratorfunction(fn):
        return _Shape.GEN
    return _Shape.SYNC


_OPTION_KEYS = ("name", "tags", "metadata")


class _Options(t.NamedTuple):
    """What :meth:`ModuleBase.with_options` sets for one call site (``None``: the module's own)."""

    name: str | None
    tags: tuple[str, ...]
    metadata: t.Mapping[str, t.Any] | None


def _check_name(owner: str, name: t.Any) -> str:
    if not isinstance(name, str) or not name:
        msg = f"{owner}: name= must be a non-empty string (the run name), got {name!r}."
        raise UsageError(msg)
    return name


def _check_tags(owner: str, tags: t.Any) -> tuple[str, ...]:
    if isinstance(tags, str):
        return (tags,)  # one tag
    try:
        items = tuple(tags)
    except TypeError:
        items = None
    if items is None or not all(isinstance(x, str) and x for x in items):
        msg = f"{owner}: tags= must be a string or an iterable of non-empty strings, such as tags=['retrieval'], got {tags!r}."
        raise UsageError(msg)
    return tuple(dict.fromkeys(items))  # no duplicates, order kept


def _check_metadata(owner: str, metadata: t.Any) -> t.Mapping[str, t.Any]:
    if not isinstance(metadata, t.Mapping) or not all(isinstance(k, str) for k in metadata):
        msg = f"{owner}: metadata= must be a mapping with string keys, such as metadata={{'user': 'u1'}}, got {metadata!r}."
        raise UsageError(msg)
    return types.MappingProxyType(dict(metadata))


def _strip_options(init: t.Callable[..., None]) -> t.Callable[..., None]:
    """Wrap a subclass ``__init__`` so that ``name=``, ``tags=``, ``metadata=`` work whatever it accepts.

    The options it does not name in its signature are taken out before it runs; every option given is
    applied after it returns (so it wins over an ``__init__`` that sets ``self.name`` itself).
    Construction only: the call path is untouched.
    """
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C or exotic __init__
        return init
    strip = tuple(k for k in _OPTION_KEYS if k not in params or params[k].kind is inspect.Parameter.VAR_KEYWORD)

    @functools.wraps(init)
    def __init__(self: ModuleBase, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: N807 - a module/class-level dunder hook by design
        if not kwargs or not ("name" in kwargs or "tags" in kwargs or "metadata" in kwargs):
            init(self, *args, **kwargs)
            return
        given = {k: kwargs[k] for k in _OPTION_KEYS if k in kwargs}
        for k in strip:
            kwargs.pop(k, None)
        init(self, *args, **kwargs)
        ModuleBase._set_options(self, **given)

    __init__._streamtap_options = True  # type: ignore[attr-defined]
    return __init__


class _Call(t.NamedTuple):
    """One call of a module: its arguments, and how it was started (stream buffer, cancel token, run id, options)."""

    args: tuple[t.Any, ...]
    kwargs: dict[str, t.Any]
    sink: StreamBuffer | None = None
    token: CancelToken | None = None
    run_id: str | None = None
    options: _Options | None = None


class _Running:
    """One run's lifecycle around ``forward``: current run, scopes (OTel span), then exactly one End.

    Shared by the sync and async paths; the caller stores the output in ``output``.
    """

    __slots__ = ("ctx", "output", "scopes", "stack", "var")

    def __init__(self, ctx: RunContext, scopes: list[t.Callable[[], t.ContextManager[t.Any]]]) -> None:
        self.ctx = ctx
        self.scopes = scopes
        self.output: t.Any = None
        self.stack: contextlib.ExitStack | None = None

    def __enter__(self) -> _Running:
        self.var = _current.set(self.ctx)
        if self.scopes:
            stack = self.stack = contextlib.ExitStack()
            try:
                for factory in self.scopes:
                    stack.enter_context(factory())
            except BaseException as exc:
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        try:
            if self.stack is not None:
                self.stack.__exit__(tp, exc, tb)
        finally:
            _current.reset(self.var)
            if exc is None:
                ModuleBase._close(self.ctx, "ok", self.output, None)
            else:
                ModuleBase._close(self.ctx, _status_of(exc), self.output, exc)


class ModuleBase:
    """Base class of every module: an LLM call, a tool, an agent, a flow, a node, anything.

    Subclasses implement :meth:`forward` only. Every module, a subclass of
    your own included (with or without an ``__init__``, calling
    ``super().__init__()`` or not), takes the keyword arguments ``name=``,
    ``tags=`` and ``metadata=``: ``Echo(name="E2", tags=["demo"])``.
    :meth:`with_options` sets them for one call site instead. Class
    attributes (overridable per instance) describe the runs:

    Attributes:
        name: the run name (default: the class name).
        kind: ``llm``, ``tool``, ``agent``, ``flow``, ``node`` or ``module``.
        tags: tags of every run of this module (inherited by child runs).
        metadata: free-form metadata for the runs.
        blocking: a synchronous ``forward`` may block, so ``await acall()``
            runs it in the SDK's thread pool. Set ``False`` for cheap CPU-only
            modules to run them inline on the event loop.
        join_output: collect the chunks of a generator ``forward`` to build
            the output. ``False`` keeps memory flat for endless streams; the
            output is then the generator's return value.

    Example::

        class Echo(ModuleBase):
            def forward(self, text: str):
                for word in text.split():
                    yield word + " "

        Echo()("hello world")                  # 'hello world '
        for piece in Echo().stream("hi").text():
            print(piece)
    """

    name: str | None = None
    kind: RunKind = "module"
    tags: tuple[str, ...] = ()
    metadata: t.Mapping[str, t.Any] = _EMPTY_META
    blocking: bool = True
    join_output: bool = True
    _forward_shape: int = _Shape.SYNC
    _forward_returns: bool | None = None  # read from the source on the first generator call (see returns_value)

    def __init__(
        self,
        *,
        name: str | None = None,
        tags: str | t.Iterable[str] | None = None,
        metadata: t.Mapping[str, t.Any] | None = None,
    ) -> None:
        """Set the run name, tags and metadata of this module's runs (each optional).

        Args:
            name: the run name (default: the class's ``name``, else the class name).
            tags: tags of every run of this module, inherited by the runs it calls
                (a string is one tag); they add to the class's ``tags``.
            metadata: free-form metadata of its runs; merged over the class's ``metadata``.

        Raises:
            UsageError: a name that is not a non-empty string, tags that are not
                strings, metadata that is not a mapping with string keys.
        """
        if name is not None or tags is not None or metadata is not None:
            self._set_options(name=name, tags=tags, metadata=metadata)

    def _set_options(self, name: t.Any = None, tags: t.Any = None, metadata: t.Any = None) -> None:
        owner = type(self).__qualname__
        if name is not None:
            self.name = _check_name(owner, name)
        if tags is not None:
            own = type(self).tags
            self.tags = tuple(dict.fromkeys((*own, *_check_tags(owner, tags))))
        if metadata is not None:
            self.metadata = types.MappingProxyType({**type(self).metadata, **_check_metadata(owner, metadata)})

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._forward_shape = _shape_of(cls.forward)
        cls._forward_returns = None
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_streamtap_options", False):
            setattr(cls, "__init__", _strip_options(init))  # noqa: B010 - mypy refuses assigning a method

    def with_options(
        self,
        *,
        name: str | None = None,
        tags: str | t.Iterable[str] | None = None,
        metadata: t.Mapping[str, t.Any] | None = None,
    ) -> Configured:
        """This module with another run name, more tags or more metadata, for one call site.

        Nothing is copied and the module is not changed: the view calls it
        with these options (LangChain's ``with_config(run_name=..., tags=...)``)::

            summarise = llm.with_options(name="summarise", tags=["final"])
            Sequential(retrieve, summarise)

        ``name`` replaces the run name, ``tags`` add to the module's tags,
        ``metadata`` is merged over the module's metadata.

        Raises:
            UsageError: as for the constructor's options.
        """
        return Configured(self, self._merge_options(None, name, tags, metadata))

    def _merge_options(self, base: _Options | None, name: t.Any, tags: t.Any, metadata: t.Any) -> _Options:
        owner = f"{self._run_name()}.with_options()"
        new_name = _check_name(owner, name) if name is not None else (base.name if base else None)
        old_tags = base.tags if base else self.tags
        new_tags = tuple(dict.fromkeys((*old_tags, *_check_tags(owner, tags)))) if tags is not None else old_tags
        old_meta = base.metadata if base and base.metadata is not None else self.metadata
        new_meta = (
            types.MappingProxyType({**old_meta, **_check_metadata(owner, metadata)})
            if metadata is not None
            else (base.metadata if base else None)
        )
        return _Options(new_name, new_tags, new_meta)

    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Do the module's work. Override this; never call it directly (call the module)."""
        msg = f"{type(self).__qualname__} must implement forward(); ModuleBase subclasses override it to do their work."
        raise NotImplementedError(msg)

    # -- run bookkeeping ------------------------------------------------------

    def _run_name(self) -> str:
        return self.name or type(self).__name__

    def _open(
        self,
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
        sink: StreamBuffer | None = None,
        token: CancelToken | None = None,
        run_id: str | None = None,
        options: _Options | None = None,
    ) -> tuple[RunContext, t.Sequence[t.Callable[[], t.ContextManager[t.Any]]]]:
        parent = _current.get()
        try:
            rid = run_id or _id_pool.pop()  # new_id(), inlined: this is the per-run hot path
        except IndexError:
            rid = new_id()
        if options is None:
            name = self.name or type(self).__name__
            tags = self.tags
            meta = self.metadata
        else:
            name = options.name or self.name or type(self).__name__
            tags = options.tags
            meta = self.metadata if options.metadata is None else options.metadata
        if parent is None:
            run = _tuple_new(Run, (rid, name, self.kind, None, rid, tags, meta, (name,)))
            root = Tree() if sink is not None else None  # else made on first use
            sinks: tuple[t.Any, ...] = (sink,) if sink is not None else ()
            tok = token  # None: made on first use; until then nobody can cancel this call
        else:
            prun = parent.run
            tags = prun.tags + tuple(x for x in tags if x not in prun.tags) if tags else prun.tags
            run = _tuple_new(Run, (rid, name, self.kind, prun.run_id, prun.root_id, tags, meta, (*prun.path, name)))
            root = parent.tree()
            sinks = (*parent.sinks, sink) if sink is not None else parent.sinks
            tok = token or parent.token
        ctx = RunContext(run, self, root, sinks, tok)  # starts the run's clocks
        if sinks or _registry.start or _start_receivers:  # the inputs are only built for someone who will see them
            ctx.send_start(_inputs_of(args, kwargs))
        if not _scope_signal.receivers:
            return ctx, ()
        scopes: list[t.Callable[[], t.ContextManager[t.Any]]] = []
        try:
            for _, factory in _scope_signal.send(self, run=run, context=ctx):
                if factory is not None:
                    scopes.append(factory)
        except BaseException as exc:  # the run has started: it must still end
            self._close(ctx, _status_of(exc), None, exc)
            raise
        return ctx, scopes

    @staticmethod
    def _close(ctx: RunContext, status: Status, output: t.Any, exc: BaseException | None) -> None:
        if exc is None:
            ctx.send_end(status, output, None)
            return
        error = ErrorInfo.from_exception(exc) if exc is not None and status == "error" else None
        if exc is not None and status == "cancelled" and not isinstance(exc, GeneratorExit):
            error = ErrorInfo.from_exception(exc)
            if not error.message and ctx.cancelled and ctx.token.reason:
                # A task cancelled through its token raises a bare CancelledError: the End says why, as RunCancelled does.
                error = ErrorInfo.from_exception(RunCancelled(ctx.token.reason))
        if exc is not None and status in ("interrupted", "error"):
            # the pause record of an interrupt; the partial answer of a broken model stream (LLMError.partial)
            output = getattr(exc, "streamtap_output", output)
        detail = getattr(exc, "detail", None) if error is not None else None
        if detail is not None and isinstance(detail, collections.abc.Mapping) and detail:
            # an exception's redacted detail (LLMError.detail): kept for spans and server logs, not for clients
            ctx.annotate(**{f"{ERROR_DETAIL_PREFIX}{key}": value for key, value in detail.items()})
        ctx.send_end(status, output, error)

    def _running(self, call: _Call) -> _Running:
        ctx, scopes = self._open(*call)
        return _Running(ctx, scopes)

    def begin(
        self, *args: t.Any, parent: RunContext | t.Literal["current"] | None = "current", **kwargs: t.Any
    ) -> OpenRun:
        """Start a run of this module without ``forward()``; end it later with :meth:`OpenRun.end`.

        For bridges that see another framework's runs as separate start and end
        callbacks (LangChain's ``on_chain_start`` / ``on_chain_end``, a tracing
        processor's ``on_span_start`` / ``on_span_end``): the run nests, streams
        and is traced like any module's. Its ``Start`` is emitted now.

        Args:
            *args: the run's inputs (``Start.inputs``), as for a call.
            parent: the run to nest under: ``"current"`` (default) the run
                current here (:func:`streamtap.current`), a
                :class:`~streamtap.RunContext`, or ``None`` for a new root run.
            **kwargs: keyword inputs.
        """
        call = _Call(args, kwargs, None, None, None)  # the constructor: fields added later keep their defaults
        if parent == "current":
            ctx, _ = self._open(*call)
        else:
            var = _current.set(parent)
            try:
                ctx, _ = self._open(*call)
            finally:
                _current.reset(var)
        return OpenRun(ctx)

    # -- sync ---------------------------------------------------------------

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run the module and return its output; chunks still reach streams and subscribers.

        An async ``forward`` is run with ``asyncio.run`` when no loop is
        running in this thread; inside a loop, use ``await module.acall(...)``.
        """
        if self._forward_shape in (_Shape.CORO, _Shape.AGEN):
            return self._call_async_from_sync(_tuple_new(_Call, (args, kwargs, None, None, None, None)))
        return self._run(args, kwargs)

    def _call_async_from_sync(self, call: _Call) -> t.Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            msg = (
                f"{self._run_name()}.forward is async and an event loop is running in this thread, so it cannot be "
                f"called synchronously. Use 'await module.acall(...)' instead of 'module(...)'."
            )
            raise UsageError(msg)

        async def main() -> t.Any:
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            assert task is not None
            token = call.token
            remove = token.add_callback(lambda: loop.call_soon_threadsafe(task.cancel)) if token else None
            try:
                return await self._run_async(call)
            except asyncio.CancelledError:
                if token is not None and token.cancelled:
                    # Sync callers get the same exception whatever the forward's shape.
                    raise RunCancelled(token.reason or "cancelled") from None
                raise
            finally:
                if remove:
                    remove()

        return asyncio.run(main())

    def _run_sync(self, call: _Call) -> t.Any:
        return self._run(*call)

    def _run(
        self,
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
        sink: StreamBuffer | None = None,
        token: CancelToken | None = None,
        run_id: str | None = None,
        options: _Options | None = None,
    ) -> t.Any:
        """One synchronous run: the per-run hot path (the lifecycle of :class:`_Running`, inlined)."""
        ctx, scopes = self._open(args, kwargs, sink, token, run_id, options)
        if scopes:  # an OpenTelemetry span to make current, say
            with _Running(ctx, scopes) as running:
                running.output = self._forward_sync(ctx, args, kwargs)
                return running.output
        var = _current.set(ctx)
        try:
            output = self.forward(*args, **kwargs)
            if output.__class__ is _GEN:
                output = self._drive(ctx, output)
            elif output.__class__ not in _PLAIN:
                output = self._returned(output)
        except BaseException as exc:
            _current.reset(var)
            ModuleBase._close(ctx, _status_of(exc), None, exc)
            raise
        _current.reset(var)
        ctx.send_end("ok", output, None)
        return output

    def _steps(
        self, call: _Call, future: concurrent.futures.Future[t.Any], finish: t.Callable[[], None]
    ) -> t.Generator[None, None, None]:
        """The run of a generator ``forward`` as steps: one yield per batch of items (see :mod:`streamtap.driven`).

        Records the output or the exception in ``future`` instead of raising it (the stream's
        reader learns of a failure from the ``End`` event, the caller from the handle).
        """
        try:
            with self._running(call) as running:
                ctx = running.ctx
                gen = self.forward(*call.args, **call.kwargs)
                parts: list[t.Any] = []
                box: list[t.Any] = []
                returns = self._forward_returns
                if returns is None:
                    returns = type(self)._forward_returns = returns_value(type(self).forward)
                try:
                    yield from ctx.chunks(
                        _capture(gen, box) if returns else gen,
                        parts.append if self.join_output else None,
                        _emit_item,
                        _BATCH,
                        _BATCH_S,
                    )
                finally:
                    gen.close()
                running.output = _output_of(parts, box[0] if box else None)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, (GeneratorExit, KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not future.done():
                future.set_result(running.output)
        finally:
            finish()

    def _forward_sync(self, ctx: RunContext, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
        result = self.forward(*args, **kwargs)
        cls = result.__class__
        if cls is _GEN:
            return self._drive(ctx, result)
        if cls in _PLAIN:
            return result
        return self._returned(result)

    def _returned(self, result: t.Any) -> t.Any:
        """What a synchronous ``forward`` returned that is neither a generator nor a plain value: refuse an awaitable."""
        if _is_awaitable_type(result.__class__):
            if inspect.iscoroutine(result):
                result.close()
            msg = (
                f"{self._run_name()}.forward returned an awaitable from a synchronous call. Declare it "
                "'async def forward' (then module(...) runs it with asyncio.run, or use 'await module.acall(...)')."
            )
            raise UsageError(msg)
        return result

    def _drive(self, ctx: RunContext, gen: t.Generator[t.Any, None, t.Any]) -> t.Any:
        parts: list[t.Any] = []
        join = self.join_output
        append = parts.append if join else _discard
        sinks = ctx.sinks
        recv = _chunk_receivers
        try:
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            ctx.chunk_first()
            returns = self._forward_returns
            if returns is None:
                returns = type(self)._forward_returns = returns_value(type(self).forward)
            if not (sinks or recv or _registry.chunk_calls or ctx.cancellable):
                # Nobody listens and nobody can cancel this call: let C consume the rest.
                append(item)
                if not returns:
                    if join:
                        parts.extend(gen)
                    else:
                        for _ in gen:
                            pass
                    return _output_of(parts, None)
                box: list[t.Any] = []  # the generator's return value, if any
                if join:
                    parts.extend(_capture(gen, box))
                else:
                    for _ in _capture(gen, box):
                        pass
                return _output_of(parts, box[0] if box else None)
            append(item)
            _emit_item(ctx, item)
            box = []
            for _ in ctx.chunks(_capture(gen, box) if returns else gen, parts.append if join else None, _emit_item):
                pass
            return _output_of(parts, box[0] if box else None)
        finally:
            gen.close()

    # -- async --------------------------------------------------------------

    async def acall(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run the module from async code and return its output.

        A synchronous ``forward`` runs in the SDK's thread pool (unless the
        module sets ``blocking = False``), keeping the event loop free.
        """
        return await self._run_async(_Call(args, kwargs))

    async def _run_async(self, call: _Call) -> t.Any:
        shape = self._forward_shape
        if shape in (_Shape.SYNC, _Shape.GEN) and self.blocking:
            return await self._offload(call)
        args, kwargs = call.args, call.kwargs
        with self._running(call) as running:
            ctx = running.ctx
            if shape == _Shape.AGEN:
                running.output = await self._adrive(ctx, self.forward(*args, **kwargs))
            elif shape == _Shape.CORO:
                running.output = await self.forward(*args, **kwargs)
            else:
                running.output = self._forward_sync(ctx, args, kwargs)
            return running.output

    async def _offload(self, call: _Call) -> t.Any:
        parent = _current.get()
        token = call.token
        # Our own token, so that cancelling this await stops the thread's run without
        # cancelling the rest of the tree; cancelling the tree still reaches it.
        base = token or (parent.token if parent is not None else None)
        own = base.child() if base is not None else CancelToken()
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(default_executor(), ctx.run, self._run_sync, call._replace(token=own))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            own.cancel("the awaiting task was cancelled")
            # The thread stops at its next chunk; wait for its End so that it stays last.
            with contextlib.suppress(BaseException):
                await asyncio.wait({fut})
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "Future exception was never retrieved" log
            raise
        finally:
            if base is not None:
                base.discard_child(own)

    async def _adrive(self, ctx: RunContext, agen: t.AsyncGenerator[t.Any, None]) -> t.Any:
        parts: list[t.Any] = []
        append = parts.append if self.join_output else _discard
        sinks = ctx.sinks
        first = True
        try:
            async for item in agen:
                if first:
                    ctx.chunk_first()
                    first = False
                append(item)
                _emit_item(ctx, item)  # checks for listeners and cancellation itself
                for sink in sinks:  # ctx.wait_for_room(), inlined: this runs per chunk
                    waiter = sink.room()
                    if waiter is not None:
                        await waiter
        finally:
            await agen.aclose()
        return _output_of(parts, None)

    # -- streaming ------------------------------------------------------------

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """Start the call in the background and iterate its run tree's events.

        The arguments go to ``forward``. Iterate the result (or its
        ``.text()`` / ``.filter(...)`` views) from this or any other thread.
        Buffering defaults to 1,024 events with back-pressure; see
        :meth:`buffered` to change it.
        """
        return self.buffered().stream(*args, **kwargs)

    def astream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """Like :meth:`stream`, for ``async for``; call it inside a running event loop."""
        return self.buffered().astream(*args, **kwargs)

    def start(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """Start the call in the background (a thread) and return its :class:`RunHandle`.

        ``handle.events()`` streams its events (buffered from the start);
        the run goes on whether or not anyone reads them, until it ends or
        ``handle.cancel()``. If nobody reads, a ``"block"`` buffer makes the
        run wait once full: use ``buffered(policy="drop_oldest")`` for
        fire-and-forget runs.
        """
        return self.buffered().start(*args, **kwargs)

    def astart(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """Start the call as a task of the running loop and return its :class:`RunHandle`, with a stream."""
        return self.buffered().astart(*args, **kwargs)

    def buffered(self, maxsize: int = 1024, policy: Policy = "block", *, run_id: str | None = None) -> Buffered:
        """Choose the stream buffer for the next call: ``module.buffered(64, "drop_oldest").stream(x)``.

        Args:
            maxsize: events held at most while the consumer lags.
            policy: ``"block"`` (back-pressure), ``"drop_oldest"`` (counted),
                or ``"error"`` (the consumer gets StreamOverflowError).
            run_id: the id the call's run gets (default: a new random one). For a
                run whose id was handed out before it started, e.g. a request a
                worker process picks up; it must be unique, like the random ids.
        """
        return Buffered(self, maxsize, policy, run_id=run_id)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._run_name()!r} kind={self.kind}>"


class Configured:
    """A module seen through :meth:`ModuleBase.with_options`: the same module, other run options.

    Call it like the module (``view(x)``, ``await view.acall(x)``,
    ``view.stream(x)``...) and put it wherever a module goes (flows'
    steps and branches). Its runs carry the options; the module itself is
    neither copied nor changed, so other call sites keep their own.
    """

    __slots__ = ("module", "options")

    def __init__(self, module: ModuleBase, options: _Options) -> None:
        self.module = module
        """The module being called."""
        self.options = options
        """The options the view's runs get."""

    @property
    def name(self) -> str:
        """The run name of the view's runs."""
        return self.options.name or self.module._run_name()

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags of the view's runs."""
        return self.options.tags

    @property
    def metadata(self) -> t.Mapping[str, t.Any]:
        """The metadata of the view's runs."""
        meta = self.options.metadata
        return self.module.metadata if meta is None else meta

    @property
    def kind(self) -> RunKind:
        """The module's run kind."""
        return self.module.kind

    def _run_name(self) -> str:
        return self.name

    def with_options(
        self,
        *,
        name: str | None = None,
        tags: str | t.Iterable[str] | None = None,
        metadata: t.Mapping[str, t.Any] | None = None,
    ) -> Configured:
        """These options, then the given ones on top (see :meth:`ModuleBase.with_options`)."""
        return Configured(self.module, self.module._merge_options(self.options, name, tags, metadata))

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call the module with these options (see :meth:`ModuleBase.__call__`)."""
        module = self.module
        call = _Call(args, kwargs, None, None, None, self.options)
        if module._forward_shape in (_Shape.CORO, _Shape.AGEN):
            return module._call_async_from_sync(call)
        return module._run_sync(call)

    async def acall(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """See :meth:`ModuleBase.acall`."""
        return await self.module._run_async(_Call(args, kwargs, None, None, None, self.options))

    def buffered(self, maxsize: int = 1024, policy: Policy = "block", *, run_id: str | None = None) -> Buffered:
        """See :meth:`ModuleBase.buffered`."""
        return Buffered(self.module, maxsize, policy, self.options, run_id=run_id)

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.stream`."""
        return self.buffered().stream(*args, **kwargs)

    def astream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.astream`."""
        return self.buffered().astream(*args, **kwargs)

    def start(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.start`."""
        return self.buffered().start(*args, **kwargs)

    def astart(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.astart`."""
        return self.buffered().astart(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self.module).__qualname__} {self.name!r} kind={self.kind} tags={list(self.tags)}>"


class Buffered:
    """A module with a chosen stream buffer; made by :meth:`ModuleBase.buffered`."""

    __slots__ = ("maxsize", "module", "options", "policy", "run_id")

    def __init__(
        self,
        module: ModuleBase,
        maxsize: int,
        policy: Policy,
        options: _Options | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        StreamBuffer.validate(maxsize, policy)  # now, with a clear error
        if run_id is not None and not (isinstance(run_id, str) and 0 < len(run_id) <= 128 and run_id.isprintable()):
            msg = f"run_id must be a non-empty printable string of at most 128 characters, got {run_id!r}."
            raise UsageError(msg)
        self.module = module
        self.maxsize = maxsize
        self.policy = policy
        self.options = options
        self.run_id = run_id

    def _prepare(self) -> tuple[StreamBuffer, RunHandle, CancelToken, t.Callable[[], None]]:
        parent = _current.get()
        buf = StreamBuffer(self.maxsize, self.policy)
        if parent is not None:
            token = parent.token.child()
            ptoken = parent.token

            def finish() -> None:
                buf.finish()
                ptoken.discard_child(token)

            token.add_callback(buf.release)
        else:
            token = CancelToken(buf.release)
            finish = buf.finish
        handle = RunHandle(self.run_id or new_id(), token, buf)
        return buf, handle, token, finish

    def start(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.start`."""
        buf, handle, token, finish = self._prepare()
        module = self.module
        target = (
            module._call_async_from_sync if module._forward_shape in (_Shape.CORO, _Shape.AGEN) else module._run_sync
        )
        run_id = handle.run_id  # the work must not hold the handle, or a dropped stream could never be collected
        options = self.options

        def work() -> t.Any:
            try:
                return target(_Call(args, kwargs, buf, token, run_id, options))
            finally:
                finish()

        handle._future = default_executor().submit(work)
        return handle

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.stream`.

        A synchronous generator ``forward`` is driven by the stream's reader
        when it reads first (see :mod:`streamtap.driven`); any other shape runs
        in the SDK's pool.
        """
        module = self.module
        if module._forward_shape != _Shape.GEN:
            handle = self.start(*args, **kwargs)
            return RunStream(handle.buffer, handle)
        buf, handle, token, finish = self._prepare()
        future: concurrent.futures.Future[t.Any] = concurrent.futures.Future()
        call = _Call(args, kwargs, buf, token, handle.run_id, self.options)
        driven = DrivenRun(module._steps(call, future, finish), future)
        buf.driver = driven
        handle._future = future
        handle._driven = driven
        default_claims().add(driven)
        return RunStream(buf, handle)

    def astart(self, *args: t.Any, **kwargs: t.Any) -> RunHandle:
        """See :meth:`ModuleBase.astart`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = "astart()/astream() need a running event loop; from synchronous code use start()/stream()."
            raise UsageError(msg) from None
        buf, handle, token, finish = self._prepare()
        buf.bind_loop(loop)

        run_id = handle.run_id
        module = self.module
        options = self.options

        async def work() -> t.Any:
            try:
                return await module._run_async(_Call(args, kwargs, buf, token, run_id, options))
            finally:
                finish()

        task = loop.create_task(work())
        task.add_done_callback(lambda _: finish())  # also when cancelled before its first step
        thread = threading.get_ident()

        def cancel_task() -> None:
            if threading.get_ident() == thread:
                task.cancel()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to cancel
                    loop.call_soon_threadsafe(task.cancel)

        remove = token.add_callback(cancel_task)
        task.add_done_callback(lambda _: remove())
        handle._future = task
        return handle

    def astream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """See :meth:`ModuleBase.astream`."""
        handle = self.astart(*args, **kwargs)
        return RunStream(handle.buffer, handle)


class OpenRun:
    """A run begun with :meth:`ModuleBase.begin`; it ends exactly once, with :meth:`end`.

    Stream through :attr:`context` (``chunk``, ``tool``, ``emit``,
    ``annotate``, ``add_usage``). :meth:`activate` makes it the current run in
    a ``with`` block, so that modules called there nest under it.
    """

    __slots__ = ("context", "ended")

    def __init__(self, context: RunContext) -> None:
        self.context = context
        """The run's :class:`~streamtap.RunContext`."""
        self.ended = False
        """Whether :meth:`end` was called."""

    @property
    def run(self) -> Run:
        """The run's identity."""
        return self.context.run

    @contextlib.contextmanager
    def activate(self) -> t.Iterator[RunContext]:
        """Make this the current run inside the block (:func:`streamtap.current` returns it)."""
        var = _current.set(self.context)
        try:
            yield self.context
        finally:
            _current.reset(var)

    def end(self, output: t.Any = None, *, error: BaseException | None = None, status: Status | None = None) -> bool:
        """Emit the run's ``End``; later calls do nothing. Returns whether this call ended it.

        Args:
            output: the run's output.
            error: the exception it failed with; its status (``error``,
                ``cancelled`` for :class:`~streamtap.RunCancelled`,
                ``interrupted``) is derived as for a module.
            status: force a status (default ``ok``, or derived from ``error``).
        """
        if self.ended:
            return False
        self.ended = True
        ModuleBase._close(self.context, status or (_status_of(error) if error is not None else "ok"), output, error)
        return True

    def __repr__(self) -> str:
        return f"<OpenRun {self.run.kind} {self.run.name!r} {self.run.run_id}{' ended' if self.ended else ''}>"
