"""The library's layout: what its modules import, and how long they are.

The demo (``streamtap.demo``) and the terminal view may use ``rich`` and the
exporters, but only lazily inside their functions; no library module pulls
them in when it is imported.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import streamtap

# Packages the library must never import at import time.
FORBIDDEN = ("streamtap.demo", "rich", "streamtap_otlp", "streamtap_console", "streamtap_redis")


def _library_modules() -> list[str]:
    """Every ``streamtap.*`` module, except the demo package and ``__main__`` entry points."""
    names = ["streamtap"]
    for info in pkgutil.walk_packages(streamtap.__path__, prefix="streamtap."):
        name = info.name
        if name == "streamtap.demo" or name.startswith("streamtap.demo.") or name.endswith(".__main__"):
            continue
        names.append(name)
    return sorted(names)


_PROBE = """
import importlib, json, sys
forbidden = {forbidden!r}
found = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    hit = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
    if hit:
        found[name] = hit
        for m in hit:
            del sys.modules[m]
print(json.dumps(found))
"""


def test_no_library_module_imports_the_demo_rich_or_an_exporter() -> None:
    modules = _library_modules()
    assert "streamtap.module" in modules and "streamtap.cli" in modules
    code = _PROBE.format(forbidden=FORBIDDEN, modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {}, f"imported at import time (module -> forbidden packages it pulled in): {found}"


def test_the_demo_package_holds_the_weather_agent() -> None:
    from streamtap.demo import main, worker_agent
    from streamtap.demo.weather import QUERY, weather_agent

    assert callable(main) and callable(worker_agent) and callable(weather_agent)
    assert "Tokyo" in QUERY
    assert not (Path(streamtap.__file__).parent / "weather.py").exists()


MAX_LINES = 600


def _lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_no_module_is_over_600_lines() -> None:
    root = Path(streamtap.__file__).parent
    sizes = {p.relative_to(root).as_posix(): _lines(p) for p in sorted(root.rglob("*.py"))}
    assert "llm/openai.py" in sizes and "testing/fake_openai.py" in sizes
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert over == {}, f"modules over {MAX_LINES} lines (split them along their concepts): {over}"
