"""The published fault table (docs/reliability.md) names tests that exist.

A row's test cell names one or more tests as ``path::[Class::]name[param]``;
``...::name`` means the same file (and class) as the name before it in the cell.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reliability.md"


def _names(path: pathlib.Path) -> set[str]:
    """``name`` and ``Class::name`` of every test function in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            out.update(
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
    return out


def _referenced() -> list[tuple[str, str]]:
    """(file, [Class::]name) for every test the table's rows name."""
    refs: list[tuple[str, str]] = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cell = line.rstrip().rstrip("|").rsplit("|", 1)[-1]
        where, scope = "", ""
        for ref in re.findall(r"`([^`]+)`", cell):
            ref = re.sub(r"\[.*\]$", "", ref)
            parts = ref.split("::")
            if parts[0] == "...":
                parts = [where, *([scope] if scope else []), parts[-1]]
            where, scope = parts[0], "::".join(parts[1:-1])
            refs.append((where, "::".join(parts[1:])))
    return refs


def test_every_row_names_a_test_that_exists() -> None:
    refs = _referenced()
    assert len(refs) >= 60, len(refs)
    missing = [f"{f}::{n}" for f, n in refs if not (ROOT / f).is_file() or n not in _names(ROOT / f)]
    assert missing == [], missing
