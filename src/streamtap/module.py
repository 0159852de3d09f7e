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

import types
import typing as t

from .buffer import Policy
from .context import RunContext, default_executor
from .context import current_var as _current
from .events import RunKind
from .ids import new_id
from .options import RunOptions, check_metadata, check_name, check_tags, strip_options
from .runner import Call, Runner
from .shapes import Delta, Shape, returns_value, shape_of
from .streams import RunHandle, RunStream
from .views import Buffered, Configured, OpenRun

# Buffered, Configured, OpenRun (streamtap.views), Delta (streamtap.shapes), new_id (streamtap.ids) and
# default_executor (streamtap.context) live where their concept does; they are importable from here as before.
__all__ = ["Buffered", "Configured", "Delta", "ModuleBase", "OpenRun", "default_executor", "new_id", "returns_value"]

_tuple_new = tuple.__new__
_EMPTY_META: t.Mapping[str, t.Any] = types.MappingProxyType({})


class ModuleBase(Runner):
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
    _forward_shape: int = Shape.SYNC
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
            self.name = check_name(owner, name)
        if tags is not None:
            own = type(self).tags
            self.tags = tuple(dict.fromkeys((*own, *check_tags(owner, tags))))
        if metadata is not None:
            self.metadata = types.MappingProxyType({**type(self).metadata, **check_metadata(owner, metadata)})

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._forward_shape = shape_of(cls.forward)
        cls._forward_returns = None
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_streamtap_options", False):
            setattr(cls, "__init__", strip_options(init, ModuleBase._set_options))  # noqa: B010 - mypy refuses assigning a method

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

    def _merge_options(self, base: RunOptions | None, name: t.Any, tags: t.Any, metadata: t.Any) -> RunOptions:
        owner = f"{self._run_name()}.with_options()"
        new_name = check_name(owner, name) if name is not None else (base.name if base else None)
        old_tags = base.tags if base else self.tags
        new_tags = tuple(dict.fromkeys((*old_tags, *check_tags(owner, tags)))) if tags is not None else old_tags
        old_meta = base.metadata if base and base.metadata is not None else self.metadata
        new_meta = (
            types.MappingProxyType({**old_meta, **check_metadata(owner, metadata)})
            if metadata is not None
            else (base.metadata if base else None)
        )
        return RunOptions(new_name, new_tags, new_meta)

    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Do the module's work. Override this; never call it directly (call the module)."""
        msg = f"{type(self).__qualname__} must implement forward(); ModuleBase subclasses override it to do their work."
        raise NotImplementedError(msg)

    # -- run bookkeeping ------------------------------------------------------

    def _run_name(self) -> str:
        return self.name or type(self).__name__

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
        call = Call(args, kwargs, None, None, None)  # the constructor: fields added later keep their defaults
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
        if self._forward_shape & Shape.ASYNC:
            return self._call_async_from_sync(_tuple_new(Call, (args, kwargs, None, None, None, None)))
        return self._run(args, kwargs)

    # -- async --------------------------------------------------------------

    async def acall(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run the module from async code and return its output.

        A synchronous ``forward`` runs in the SDK's thread pool (unless the
        module sets ``blocking = False``), keeping the event loop free.
        """
        return await self._run_async(Call(args, kwargs))

    # -- streaming ------------------------------------------------------------

    def stream(self, *args: t.Any, **kwargs: t.Any) -> RunStream:
        """Start the call in the background and iterate its run tree's events.

        The arguments go to ``forward``. Iterate the result (or its
        ``.text()`` / ``.filter(...)`` views) from this or any other thread.
        Buffering defaults to 1,024 events with back-pressure; see
        :meth:`buffered` to change it.

        A synchronous generator ``forward`` is advanced by the reader itself
        (no thread hand-off); what a child module emits between two of its
        items then reaches the reader when the generator yields its next item.
        Where such a child's progress must show as it happens, read
        ``module.start(...).events()`` (see docs/guide/core.md, "Same-thread streams").
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
