"""Every ```python block of the guide pages below runs, top to bottom, in one namespace per page.

Blocks fenced as ```py (another library's code, shown for comparison) are not run.
"""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [DOCS / "guide" / "composing.md", *sorted((DOCS / "migrating").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[str]:
    """The runnable blocks of a page."""
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_page_snippets_run(page: Path) -> None:
    """The page's snippets run as written (their asserts are the page's claims)."""
    namespace: dict[str, t.Any] = {"__name__": f"docs_{page.stem}"}
    try:
        for i, code in enumerate(blocks(page), 1):
            exec(compile(code, f"{page.relative_to(DOCS)} block {i}", "exec"), namespace)
    finally:
        server = namespace.get("server")
        if server is not None and getattr(server, "_thread", None) is not None:
            server.stop()


def test_the_pages_are_listed() -> None:
    """The migration pages exist and the snippet test finds code in each."""
    names = {p.name for p in PAGES}
    assert {"composing.md", "langchain.md", "lazyllm.md", "pocketflow.md"} <= names
    assert all(blocks(p) for p in PAGES if p.name != "index.md")
