"""The public surface: a small sorted __all__, documented, and an import without side effects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import streamtap


def test_all_is_sorted_and_complete():
    """__all__ is sorted and lists exactly the public names of the package namespace."""
    assert streamtap.__all__ == sorted(streamtap.__all__)
    public = {n for n in vars(streamtap) if not n.startswith("_") and n != "annotations"}  # __future__ feature
    modules = {n for n in public if type(getattr(streamtap, n)).__name__ == "module"}
    assert set(streamtap.__all__) == public - modules
    assert 15 <= len(streamtap.__all__) <= 25


def test_every_public_object_is_documented():
    """Every exported object has a docstring."""
    import inspect
    import typing

    missing = []
    for name in streamtap.__all__:
        obj = getattr(streamtap, name)
        if typing.get_origin(obj) is typing.Union:  # a type alias: documented by the string under it
            source = inspect.getsource(streamtap.events)
            documented = f"{name}: t.TypeAlias" in source and '"""' in source.split(f"{name}: t.TypeAlias")[1][:200]
        else:
            documented = bool((obj.__doc__ or "").strip())
        if not documented:
            missing.append(name)
    assert missing == []


def test_import_has_no_side_effects():
    """Importing streamtap starts no thread, configures no logging, connects no receiver."""
    code = textwrap.dedent(
        """
        import logging, threading, sys
        before = threading.active_count()
        handlers = list(logging.getLogger().handlers)
        import streamtap
        from streamtap import bus
        assert threading.active_count() == before, "a thread was started"
        assert logging.getLogger().handlers == handlers, "logging was configured"
        assert not any(s.receivers for s in bus.signals.values()), "a receiver was connected"
        assert "openai" not in sys.modules and "starlette" not in sys.modules, "an optional dependency was imported"
        assert "opentelemetry.sdk" not in sys.modules, "the OpenTelemetry SDK was imported"
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "clean", out.stderr
