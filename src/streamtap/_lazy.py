"""Lazy package attributes: a package's public names imported from its submodules on first use.

Packages whose submodules need optional dependencies (``streamtap.llm``,
``streamtap.web``) import nothing at import time; each submodule raises
:class:`streamtap.exceptions.MissingDependencyError` itself when its extra is missing.
"""

from __future__ import annotations

import importlib
import typing as t

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: t.Mapping[str, str]) -> t.Callable[[str], t.Any]:
    """Build a module ``__getattr__`` that imports ``names[name]`` (relative to ``package``) on first use.

    Args:
        package: the package's ``__name__``.
        names: public name -> relative submodule that defines it (``".openai"``).

    Returns:
        The ``__getattr__`` function; unknown names raise :class:`AttributeError`.
    """

    def __getattr__(name: str) -> t.Any:  # noqa: N807 - a module/class-level dunder hook by design
        module = names.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(module, package), name)

    return __getattr__
