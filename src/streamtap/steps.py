"""Plain functions as steps: a function becomes a run named after it.

Wherever a module goes (a :class:`~streamtap.flows.Sequential` step, a
:class:`~streamtap.flows.Parallel` branch, a graph node), a plain callable
goes too, and :func:`step` makes one a module by hand::

    def retrieve(question: str) -> list[str]: ...          # returns: one value
    def shout(text: str) -> Iterator[str]: yield ...        # a generator: streams
    async def fetch(url: str) -> str: ...                   # async: awaited
    async def tokens(q: str) -> AsyncIterator[str]: ...     # an async generator: streams

    Sequential(retrieve, llm, shout)

**Stream transforms.** A step whose *first parameter* is annotated as an
iterator -- ``Iterator[...]``, ``Iterable[...]`` or ``Generator[...]`` for a
sync function, ``AsyncIterator[...]``, ``AsyncIterable[...]`` or
``AsyncGenerator[...]`` for an async one -- is a *transform*: in a
``Sequential`` it receives the previous step's live stream (that step's text
deltas and ``data`` objects, as they arrive) instead of its final output,
and what it yields streams on at once. ``@step(transform=True)`` says the
same without an annotation; ``transform=False`` turns the annotation's
meaning off. A function without either is a value step, even when it is a
generator: it gets the previous step's output and streams what it yields.
"""

from __future__ import annotations

import collections.abc as c
import inspect
import typing as t

from .events import RunKind
from .exceptions import UsageError
from .module import Configured, ModuleBase

__all__ = ["FunctionStep", "as_step", "step", "transform_input"]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

_SYNC_STREAMS = (c.Iterator, c.Iterable, c.Generator)
_ASYNC_STREAMS = (c.AsyncIterator, c.AsyncIterable, c.AsyncGenerator)
_KINDS = ("llm", "tool", "agent", "flow", "node", "module")

TransformInput = t.Literal["sync", "async"]
"""How a transform reads its upstream: a sync iterator or an async one."""


def _first_parameter_stream(fn: t.Callable[..., t.Any]) -> TransformInput | None:
    """``"sync"`` / ``"async"`` when ``fn``'s first parameter is annotated as a (async) iterator, else ``None``."""
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    first = params[0]
    try:
        hints = t.get_type_hints(fn)
        annotation = hints.get(first.name, first.annotation)
    except (NameError, TypeError, AttributeError):  # an annotation that does not resolve: read it as written
        annotation = first.annotation
    if isinstance(annotation, str):
        head = annotation.split("[", 1)[0].rsplit(".", 1)[-1]
        if head in ("Iterator", "Iterable", "Generator"):
            return "sync"
        if head in ("AsyncIterator", "AsyncIterable", "AsyncGenerator"):
            return "async"
        return None
    origin = t.get_origin(annotation) or annotation
    if origin in _ASYNC_STREAMS:
        return "async"
    if origin in _SYNC_STREAMS:
        return "sync"
    return None


def _is_async(fn: t.Callable[..., t.Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


class FunctionStep(ModuleBase):
    """A plain function run as a module: its runs are named after it (``fn.__name__``).

    Made by :func:`step` or by a flow given a function. Calling it calls the
    function inside a run; a generator (or async generator) function
    streams what it yields, as a ``forward`` does.

    Attributes:
        fn: the wrapped function.
        transform: ``"sync"`` / ``"async"`` when the step is a stream transform
            (it reads its upstream's live stream), else ``None``.
    """

    fn: t.Callable[..., t.Any]
    transform: TransformInput | None = None

    def __init__(
        self,
        fn: t.Callable[..., t.Any],
        *,
        name: str | None = None,
        kind: RunKind = "module",
        tags: str | t.Iterable[str] | None = None,
        metadata: t.Mapping[str, t.Any] | None = None,
        transform: bool | None = None,
    ) -> None:
        if kind not in _KINDS:
            msg = f"step(kind={kind!r}): the kind must be one of {list(_KINDS)}."
            raise UsageError(msg)
        self.fn = fn
        self.kind = kind
        self.__doc__ = getattr(fn, "__doc__", None) or type(self).__doc__
        self.__wrapped__ = fn
        if transform is None:
            self.transform = _first_parameter_stream(fn)
        elif transform:
            self.transform = _first_parameter_stream(fn) or ("async" if _is_async(fn) else "sync")
        else:
            self.transform = None
        default = getattr(fn, "__name__", None) or type(fn).__name__
        super().__init__(name=name or default, tags=tags, metadata=metadata)

    def __repr__(self) -> str:
        what = f" transform={self.transform}" if self.transform else ""
        return f"<step {self._run_name()!r} kind={self.kind}{what}>"


class _SyncStep(FunctionStep):
    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call the function."""
        return self.fn(*args, **kwargs)


class _GenStep(FunctionStep):
    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Generator[t.Any, None, t.Any]:
        """Run the generator function; each item is a chunk."""
        return (yield from self.fn(*args, **kwargs))


class _CoroStep(FunctionStep):
    async def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Await the coroutine function."""
        return await self.fn(*args, **kwargs)


class _AgenStep(FunctionStep):
    async def forward(self, *args: t.Any, **kwargs: t.Any) -> t.AsyncGenerator[t.Any, None]:
        """Run the async generator function; each item is a chunk."""
        agen = self.fn(*args, **kwargs)
        try:
            async for item in agen:
                yield item
        finally:
            await agen.aclose()


def _step_class(fn: t.Callable[..., t.Any]) -> type[FunctionStep]:
    # A function or a functools.partial of one is probed itself; any other callable object by its __call__.
    probe = fn if inspect.isroutine(fn) or hasattr(fn, "func") else type(fn).__call__
    if inspect.isasyncgenfunction(probe):
        return _AgenStep
    if inspect.iscoroutinefunction(probe):
        return _CoroStep
    if inspect.isgeneratorfunction(probe):
        return _GenStep
    return _SyncStep


@t.overload
def step(fn: t.Callable[..., t.Any], /) -> FunctionStep: ...


@t.overload
def step(
    *,
    name: str | None = None,
    kind: RunKind = "module",
    tags: str | t.Iterable[str] | None = None,
    metadata: t.Mapping[str, t.Any] | None = None,
    transform: bool | None = None,
) -> t.Callable[[t.Callable[..., t.Any]], FunctionStep]: ...


def step(
    fn: t.Callable[..., t.Any] | None = None,
    /,
    *,
    name: str | None = None,
    kind: RunKind = "module",
    tags: str | t.Iterable[str] | None = None,
    metadata: t.Mapping[str, t.Any] | None = None,
    transform: bool | None = None,
) -> FunctionStep | t.Callable[[t.Callable[..., t.Any]], FunctionStep]:
    """Make a function a module: ``@step`` or ``@step(name=..., kind=..., tags=...)``.

    The result is a :class:`FunctionStep`: call it and it runs as a run of its
    own (named after the function unless ``name`` is given), streams what a
    generator function yields, and goes wherever a module goes::

        @step(name="Retrieve", kind="tool", tags=["rag"])
        def retrieve(question: str) -> list[str]:
            return index.search(question)

    Args:
        fn: the function (when used as ``@step`` with no arguments).
        name: the run name (default: the function's ``__name__``).
        kind: the run kind (``module`` by default; ``tool``, ``llm``...).
        tags: tags of its runs (inherited by the runs it calls).
        metadata: metadata of its runs.
        transform: ``True`` makes it a stream transform without an iterator
            annotation on its first parameter, ``False`` never one (see the module docs).

    Raises:
        UsageError: ``fn`` is not callable, or a bad option.
    """

    def make(f: t.Callable[..., t.Any]) -> FunctionStep:
        if not callable(f) or isinstance(f, (type, ModuleBase)):
            msg = f"@step decorates a function, not {f!r}."
            raise UsageError(msg)
        return _step_class(f)(f, name=name, kind=kind, tags=tags, metadata=metadata, transform=transform)

    return make(fn) if fn is not None else make


def as_step(obj: t.Any, owner: str) -> ModuleBase | Configured:
    """``obj`` as something a flow can run: a module as is, a plain callable as a :class:`FunctionStep`.

    Raises:
        UsageError: ``obj`` is a class (instantiate it) or not callable.
    """
    if isinstance(obj, (ModuleBase, Configured)):
        return obj
    if isinstance(obj, type):
        msg = f"{owner} got the class {obj.__qualname__}; pass an instance ({obj.__qualname__}()) or a function."
        raise UsageError(msg)
    if callable(obj):
        return step(obj)
    msg = f"{owner} got {obj!r}; a step is a module (ModuleBase: nodes, flows, LLMs, tools) or a plain function."
    raise UsageError(msg)


def transform_input(obj: t.Any) -> TransformInput | None:
    """``"sync"`` / ``"async"`` when ``obj`` (a step, or a view of one) is a stream transform, else ``None``."""
    if isinstance(obj, Configured):
        obj = obj.module
    return t.cast("TransformInput | None", getattr(obj, "transform", None)) if isinstance(obj, ModuleBase) else None
