"""Run options of a module or a call site: ``name=``, ``tags=``, ``metadata=``, checked with clear errors."""

from __future__ import annotations

import functools
import inspect
import types
import typing as t

from .exceptions import UsageError

__all__ = ["OPTION_KEYS", "RunOptions", "check_metadata", "check_name", "check_tags", "strip_options"]


OPTION_KEYS = ("name", "tags", "metadata")
"""The keyword arguments every module takes."""


class RunOptions(t.NamedTuple):
    """What :meth:`ModuleBase.with_options` sets for one call site (``None``: the module's own)."""

    name: str | None
    tags: tuple[str, ...]
    metadata: t.Mapping[str, t.Any] | None


def check_name(owner: str, name: t.Any) -> str:
    """``name`` if it is a non-empty string, else a :class:`UsageError` naming ``owner`` and the value."""
    if not isinstance(name, str) or not name:
        msg = f"{owner}: name= must be a non-empty string (the run name), got {name!r}."
        raise UsageError(msg)
    return name


def check_tags(owner: str, tags: t.Any) -> tuple[str, ...]:
    """``tags`` (a string is one tag) as a tuple without duplicates, else a :class:`UsageError` naming the value."""
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


def check_metadata(owner: str, metadata: t.Any) -> t.Mapping[str, t.Any]:
    """A read-only copy of ``metadata`` (a mapping with string keys), else a :class:`UsageError` naming the value."""
    if not isinstance(metadata, t.Mapping) or not all(isinstance(k, str) for k in metadata):
        msg = f"{owner}: metadata= must be a mapping with string keys, such as metadata={{'user': 'u1'}}, got {metadata!r}."
        raise UsageError(msg)
    return types.MappingProxyType(dict(metadata))


def strip_options(init: t.Callable[..., None], apply: t.Callable[..., None]) -> t.Callable[..., None]:
    """Wrap a subclass ``__init__`` so that ``name=``, ``tags=``, ``metadata=`` work whatever it accepts.

    The options it does not name in its signature are taken out before it runs; every option given is
    applied after it returns (so it wins over an ``__init__`` that sets ``self.name`` itself).
    Construction only: the call path is untouched.

    Args:
        init: the subclass's own ``__init__``.
        apply: ``apply(module, name=..., tags=..., metadata=...)`` sets the given options on the module.
    """
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C or exotic __init__
        return init
    strip = tuple(k for k in OPTION_KEYS if k not in params or params[k].kind is inspect.Parameter.VAR_KEYWORD)

    @functools.wraps(init)
    def __init__(self: t.Any, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: N807 - a module/class-level dunder hook by design
        if not kwargs or not ("name" in kwargs or "tags" in kwargs or "metadata" in kwargs):
            init(self, *args, **kwargs)
            return
        given = {k: kwargs[k] for k in OPTION_KEYS if k in kwargs}
        for k in strip:
            kwargs.pop(k, None)
        init(self, *args, **kwargs)
        apply(self, **given)

    __init__._streamtap_options = True  # type: ignore[attr-defined]
    return __init__
