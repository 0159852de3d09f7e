"""Validate span content against the GenAI semantic conventions' JSON schemas (v1.41.1), strictly.

The schemas in ``tests/genai_schemas/`` are copied unchanged from
open-telemetry/semantic-conventions v1.41.1 ``docs/gen-ai/*.json`` (Apache-2.0).
They are permissive on purpose (any ``{"type": ...}`` object is a valid
``GenericPart``, any string a valid role or finish reason), which would let a
malformed ``tool_call`` part pass as a generic one. The strict variant used here
drops the generic alternatives: every part must be one of the parts the
conventions define, with its required fields, every role one of
``system``/``user``/``assistant``/``tool`` and every finish reason one of the
enumerated ones.
"""

from __future__ import annotations

import copy
import functools
import json
import pathlib
import typing as t

import jsonschema

_DIR = pathlib.Path(__file__).parent / "genai_schemas"
SCHEMAS = {
    "gen_ai.input.messages": "gen-ai-input-messages.json",
    "gen_ai.output.messages": "gen-ai-output-messages.json",
    "gen_ai.system_instructions": "gen-ai-system-instructions.json",
    "gen_ai.tool.definitions": "gen-ai-tool-definitions.json",
}
_GENERIC = {"#/$defs/GenericPart", "#/$defs/GenericServerToolCall", "#/$defs/GenericServerToolCallResponse",
            "#/$defs/GenericToolDefinition"}  # fmt: skip


def _strict(node: t.Any) -> t.Any:
    if isinstance(node, dict):
        if "anyOf" in node:
            kept = [
                alt
                for alt in node["anyOf"]
                if alt.get("$ref") not in _GENERIC
                # Role / FinishReason: "an enum value, or any string" -> the enum value only
                and not (alt == {"type": "string"} and any("$ref" in a for a in node["anyOf"]))
            ]
            node = {**node, "anyOf": kept}
        return {k: _strict(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def validator(attribute: str) -> jsonschema.protocols.Validator:
    """A strict validator for the content attribute ``attribute`` (``gen_ai.input.messages``...)."""
    schema = json.loads((_DIR / SCHEMAS[attribute]).read_text())
    strict = _strict(copy.deepcopy(schema))
    cls = jsonschema.validators.validator_for(strict, default=jsonschema.Draft202012Validator)
    cls.check_schema(strict)
    return t.cast(jsonschema.protocols.Validator, cls(strict))


def check(attribute: str, value: t.Any) -> t.Any:
    """Decode ``value`` (the JSON string a span carries) and validate it; return the decoded value.

    Raises:
        AssertionError: it is not a JSON string, or it breaks the strict schema (the message says where).
    """
    assert isinstance(value, str), f"{attribute} must be a JSON string on the span, got {type(value).__name__}"
    decoded = json.loads(value)
    errors = sorted(validator(attribute).iter_errors(decoded), key=lambda e: list(e.absolute_path))
    assert not errors, f"{attribute} breaks the GenAI schema: " + "; ".join(
        f"at {list(e.absolute_path)}: {e.message}" for e in errors[:5]
    )
    if attribute in ("gen_ai.input.messages", "gen_ai.output.messages"):
        for i, msg in enumerate(decoded):
            for j, part in enumerate(msg["parts"]):
                if part["type"] == "tool_call":
                    assert part.get("id") and part["name"], (
                        f"{attribute}[{i}].parts[{j}]: a tool call needs id and name"
                    )
                if part["type"] == "text":
                    assert part["content"], f"{attribute}[{i}].parts[{j}]: an empty text part says nothing"
    return decoded


def check_all(attributes: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Check every GenAI content attribute present in ``attributes``; return the decoded values by attribute."""
    return {name: check(name, attributes[name]) for name in SCHEMAS if name in attributes}
