"""The shapes of a module's ``forward`` and what its items mean.

``forward`` returns a value, is a coroutine, a generator or an async
generator (:class:`Shape`, read once per class). A generator's ``str`` item is
a ``text`` chunk, a :class:`Delta` chooses another channel, anything else is
a ``data`` chunk; the call's output is built by :func:`output_of`.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
import typing as t

if t.TYPE_CHECKING:
    from .context import RunContext

__all__ = [
    "GENERATOR",
    "PLAIN",
    "Delta",
    "Shape",
    "capture",
    "discard",
    "emit_item",
    "inputs_of",
    "is_awaitable_type",
    "output_of",
    "returns_value",
    "shape_of",
]

GENERATOR = types.GeneratorType
"""The type of what a generator ``forward`` returns."""
PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple, bytes})
"""Types of return values that are never awaitable (no check needed)."""


class Delta(t.NamedTuple):
    """What a ``forward`` generator yields to stream on a channel other than ``text``.

    ``yield Delta("hmm, the user wants...", "reasoning")``
    """

    delta: t.Any
    channel: str = "text"
    call_id: str | None = None


def inputs_of(args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
    """A call's inputs as :attr:`Start.inputs <streamtap.events.Start.inputs>` shows them."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and not kwargs:
        return None
    return {"args": list(args), **kwargs} if args else dict(kwargs)


def output_of(parts: list[t.Any], returned: t.Any) -> t.Any:
    """A generator call's output: its return value, else the joined ``text`` items, else the last other item."""
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


def emit_item(ctx: RunContext, item: t.Any) -> bool:
    """Stream one yielded item on its channel; returns :meth:`RunContext.chunk <streamtap.RunContext.chunk>`'s answer."""
    cls = item.__class__
    if cls is str:
        return ctx.chunk(item)
    if cls is Delta:
        return ctx.chunk(item.delta, item.channel, item.call_id)
    return ctx.chunk(item, "data")


@functools.lru_cache(maxsize=512)
def is_awaitable_type(cls: type) -> bool:
    """Whether instances of ``cls`` can be awaited."""
    # Cached per type: hasattr() on a plain type costs an internal AttributeError on every call.
    return hasattr(cls, "__await__")


def discard(_: t.Any) -> None:
    """Take an item and keep nothing (``join_output = False``)."""


def capture(gen: t.Generator[t.Any, None, t.Any], box: list[t.Any]) -> t.Generator[t.Any, None, None]:
    """Yield ``gen``'s items, then append its return value to ``box``."""
    box.append((yield from gen))


class Shape:
    """The shape of a ``forward``: returns a value, a coroutine, a generator, an async generator."""

    SYNC = 0
    CORO = 1
    GEN = 2
    AGEN = 3
    ASYNC = 1
    """The bit the async shapes (``CORO``, ``AGEN``) share: ``shape & Shape.ASYNC``."""


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


def shape_of(fn: t.Callable[..., t.Any]) -> int:
    """The :class:`Shape` of a ``forward`` function."""
    if inspect.isasyncgenfunction(fn):
        return Shape.AGEN
    if inspect.iscoroutinefunction(fn):
        return Shape.CORO
    if inspect.isgeneratorfunction(fn):
        return Shape.GEN
    return Shape.SYNC
