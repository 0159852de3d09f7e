"""JSON values for pause records, and the JSON-schema subset that checks answers."""

from __future__ import annotations

import json
import math
import operator
import re
import typing as t

from ..exceptions import UsageError

__all__ = ["check_json", "check_schema", "short", "validate_answer"]


def short(value: t.Any) -> str:
    """``repr(value)``, cut to 80 characters (for error messages)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_json(value: t.Any, what: str) -> None:
    """Raise UsageError, naming the offending part, when ``value`` is not plain JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        where = _find_bad(value, "")
        msg = (
            f"{what} must be plain JSON to go into a pause record, but {where or 'it'} is not ({exc}). "
            "Keep non-JSON objects (clients, events, files) out of the shared store, or store an id for them."
        )
        raise UsageError(msg) from None


def _find_bad(value: t.Any, path: str) -> str | None:
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "the value")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path}[{k!r}] (a non-string key)"
            bad = _find_bad(v, f"{path}[{k!r}]")
            if bad:
                return bad
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _find_bad(v, f"{path}[{i}]")
            if bad:
                return bad
        return None
    return f"{path or 'the value'} (a {type(value).__name__})"


_TYPES: dict[str, t.Callable[[t.Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_KNOWN = {
    "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern",
    "anyOf", "oneOf", "allOf", "not", "title", "description", "default", "examples", "$schema", "format",
}  # fmt: skip


def check_schema(schema: t.Any) -> None:
    """Raise UsageError when ``schema`` uses something the built-in validator cannot check."""
    if not isinstance(schema, dict):
        msg = f"An interrupt schema must be a JSON-schema dict, got {short(schema)}."
        raise UsageError(msg)
    check_json(schema, "the interrupt schema")
    unknown = set(schema) - _KNOWN
    if unknown:
        msg = f"Interrupt schema keyword(s) {sorted(unknown)} are not supported; use {sorted(_KNOWN - {'$schema'})}."
        raise UsageError(msg)
    types = schema.get("type")
    for ty in [types] if isinstance(types, str) else types or []:
        if ty not in _TYPES:
            msg = f"Unknown JSON-schema type {ty!r}; use one of {sorted(_TYPES)}."
            raise UsageError(msg)
    for key in ("properties",):
        for sub in (schema.get(key) or {}).values():
            check_schema(sub)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            check_schema(sub)
    for key in ("items", "not"):
        if isinstance(schema.get(key), dict):
            check_schema(schema[key])
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(schema["additionalProperties"])


def validate_answer(value: t.Any, schema: dict[str, t.Any] | None) -> list[str]:
    """Check ``value`` against a JSON-schema subset; return the problems (empty when it matches).

    Supported: ``type``, ``enum``, ``const``, ``properties``, ``required``,
    ``additionalProperties``, ``items``, ``minItems``/``maxItems``,
    ``minLength``/``maxLength``, ``minimum``/``maximum`` (and exclusive),
    ``pattern``, ``anyOf``/``oneOf``/``allOf``/``not``.
    """
    if schema is None:
        return []
    problems: list[str] = []
    _validate(value, schema, "answer", problems)
    return problems


def _validate(v: t.Any, s: dict[str, t.Any], at: str, out: list[str]) -> None:
    ty = s.get("type")
    if ty is not None:
        tys = [ty] if isinstance(ty, str) else list(ty)
        if not any(_TYPES[x](v) for x in tys):
            out.append(f"{at} should be of type {' or '.join(tys)}, got {short(v)}")
            return
    if "enum" in s and v not in s["enum"]:
        out.append(f"{at} should be one of {s['enum']}, got {short(v)}")
    if "const" in s and v != s["const"]:
        out.append(f"{at} should be {s['const']!r}, got {short(v)}")
    if isinstance(v, str):
        _check_length(v, s, at, out, "Length", "characters")
        if "pattern" in s and not re.search(s["pattern"], v):
            out.append(f"{at} should match {s['pattern']!r}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        bounds: tuple[tuple[str, t.Callable[[float, float], bool], str], ...] = (
            ("minimum", operator.ge, ">="),
            ("maximum", operator.le, "<="),
            ("exclusiveMinimum", operator.gt, ">"),
            ("exclusiveMaximum", operator.lt, "<"),
        )
        for key, ok, word in bounds:
            if key in s and not ok(v, s[key]):
                out.append(f"{at} should be {word} {s[key]}, got {v}")
    if isinstance(v, list):
        _check_length(v, s, at, out, "Items", "items")
        if isinstance(s.get("items"), dict):
            for i, item in enumerate(v):
                _validate(item, s["items"], f"{at}[{i}]", out)
    if isinstance(v, dict):
        props = s.get("properties") or {}
        for name in s.get("required") or []:
            if name not in v:
                out.append(f"{at} is missing required property {name!r}")  # noqa: PERF401 - a loop reads more plainly here
        for name, item in v.items():
            if name in props:
                _validate(item, props[name], f"{at}.{name}", out)
            elif s.get("additionalProperties") is False:
                out.append(f"{at} has unexpected property {name!r}")
            elif isinstance(s.get("additionalProperties"), dict):
                _validate(item, s["additionalProperties"], f"{at}.{name}", out)
    for sub in s.get("allOf") or []:
        _validate(v, sub, at, out)
    if "anyOf" in s and not any(not validate_answer(v, sub) for sub in s["anyOf"]):
        out.append(f"{at} matches none of anyOf")
    if "oneOf" in s and sum(not validate_answer(v, sub) for sub in s["oneOf"]) != 1:
        out.append(f"{at} should match exactly one of oneOf")
    if isinstance(s.get("not"), dict) and not validate_answer(v, s["not"]):
        out.append(f"{at} should not match {s['not']}")


def _check_length(v: t.Sized, s: dict[str, t.Any], at: str, out: list[str], key: str, unit: str) -> None:
    """Apply ``min<key>``/``max<key>`` (``minLength``, ``maxItems``, ...) to ``len(v)``."""
    low, high = f"min{key}", f"max{key}"
    if low in s and len(v) < s[low]:
        out.append(f"{at} should have at least {s[low]} {unit}")
    if high in s and len(v) > s[high]:
        out.append(f"{at} should have at most {s[high]} {unit}")
