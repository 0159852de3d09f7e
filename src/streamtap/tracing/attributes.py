"""How runs, modules and annotations become span attributes named by the GenAI semantic conventions."""

from __future__ import annotations

import types
import typing as t

from opentelemetry.trace import SpanKind

from .. import genai_messages as genai
from ..redaction import REDACTED, Redactor

if t.TYPE_CHECKING:
    from ..events import End, Run
    from .content import ContentWriter

__all__ = [
    "ANNOTATIONS",
    "OPERATIONS",
    "ModuleAttributes",
    "annotation_attributes",
    "coerce",
    "end_attributes",
    "module_attributes",
    "run_attributes",
    "str_attr",
]

OPERATIONS: t.Mapping[str, tuple[str, SpanKind, str | None]] = {
    "llm": ("chat", SpanKind.CLIENT, None),
    "tool": ("execute_tool", SpanKind.INTERNAL, "gen_ai.tool.name"),
    "agent": ("invoke_agent", SpanKind.INTERNAL, "gen_ai.agent.name"),
    "flow": ("invoke_workflow", SpanKind.INTERNAL, "gen_ai.workflow.name"),
}
"""Run kind -> (``gen_ai.operation.name``, span kind, the attribute naming the run)."""

ANNOTATIONS: t.Mapping[str, tuple[str, type]] = {
    "operation_name": ("gen_ai.operation.name", str),
    "operation": ("gen_ai.operation.name", str),
    "provider_name": ("gen_ai.provider.name", str),
    "provider": ("gen_ai.provider.name", str),
    "request_model": ("gen_ai.request.model", str),
    "response_model": ("gen_ai.response.model", str),
    "response_id": ("gen_ai.response.id", str),
    "finish_reasons": ("gen_ai.response.finish_reasons", list),
    "server_address": ("server.address", str),
    "server_port": ("server.port", int),
    "temperature": ("gen_ai.request.temperature", float),
    "top_p": ("gen_ai.request.top_p", float),
    "top_k": ("gen_ai.request.top_k", float),
    "frequency_penalty": ("gen_ai.request.frequency_penalty", float),
    "presence_penalty": ("gen_ai.request.presence_penalty", float),
    "max_tokens": ("gen_ai.request.max_tokens", int),
    "seed": ("gen_ai.request.seed", int),
    "stop_sequences": ("gen_ai.request.stop_sequences", list),
    "stop": ("gen_ai.request.stop_sequences", list),
    "choice_count": ("gen_ai.request.choice.count", int),
    "stream": ("gen_ai.request.stream", bool),
    "output_type": ("gen_ai.output.type", str),
    "conversation_id": ("gen_ai.conversation.id", str),
    "agent_id": ("gen_ai.agent.id", str),
    "agent_description": ("gen_ai.agent.description", str),
    "agent_version": ("gen_ai.agent.version", str),
    "tool_call_id": ("gen_ai.tool.call.id", str),
    "tool_type": ("gen_ai.tool.type", str),
    "tool_description": ("gen_ai.tool.description", str),
    "data_source_id": ("gen_ai.data_source.id", str),
    "time_to_first_token": ("gen_ai.response.time_to_first_chunk", float),
    "time_to_first_chunk": ("gen_ai.response.time_to_first_chunk", float),
}
"""What the keys a module records with ``ctx.annotate(...)`` become on its span: key -> (attribute, type).

``request_`` prefixed spellings of the request parameters (``request_temperature``...)
are accepted too. A key that already contains a dot (``gen_ai.request.seed``,
``server.address``) is used as the attribute name as it is. Any other key with
a primitive value (or a list of them) becomes ``streamtap.attributes.<key>``.
The keys ``input_messages``, ``output_messages``, ``system_instructions`` and
``tool_definitions`` are content: recorded (as ``gen_ai.*`` JSON) only on opt-in.
"""

# input_messages -> gen_ai.input.messages, ..., tool_definitions -> gen_ai.tool.definitions
_CONTENT_ANNOTATIONS = {name.removeprefix("gen_ai.").replace(".", "_"): name for name in genai.ATTRIBUTES}
_CONTENT_ATTRS = frozenset(genai.ATTRIBUTES) | {
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
_PRIMITIVES = (str, bool, int, float)


def coerce(value: t.Any, tp: type) -> t.Any:
    """``value`` as an attribute value of type ``tp`` (``list``: of strings), or ``None`` when it is not one."""
    if value is None:
        return None
    try:
        if tp is list:
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
        if tp is bool:
            return bool(value)
        if tp is str:
            return str(value)
        return tp(value)
    except (TypeError, ValueError):
        return None


def _is_attr_value(value: t.Any) -> bool:
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, (list, tuple)) and value:
        first = type(value[0])
        return first in (str, bool, int, float) and all(type(v) is first for v in value)
    return False


def str_attr(obj: t.Any, name: str) -> str | None:
    """``obj.name`` when it is a non-empty string, else ``None``."""
    value = getattr(obj, name, None)
    return value if isinstance(value, str) and value else None


def run_attributes(run: Run, conversation_id: t.Any, redact: Redactor) -> tuple[str, SpanKind, dict[str, t.Any]]:
    """The span name, span kind and start attributes of a run (before its module is seen)."""
    kind = run.kind
    name = run.name
    op = OPERATIONS.get(kind)
    attrs: dict[str, t.Any]
    if op is None:
        span_name, span_kind = name, SpanKind.INTERNAL
        attrs = {
            "streamtap.run.id": run.run_id,
            "streamtap.run.kind": kind,
            "streamtap.root.id": run.root_id,
            "streamtap.run.name": name,
        }
    else:
        operation, span_kind, name_attr = op
        # llm: "chat" until the scope receiver has seen the module ("chat {model}")
        span_name = f"{operation} {name}" if name_attr is not None else operation
        attrs = {
            "streamtap.run.id": run.run_id,
            "streamtap.run.kind": kind,
            "streamtap.root.id": run.root_id,
            "gen_ai.operation.name": operation,
            name_attr or "streamtap.run.name": name,
        }
        if kind == "tool":
            attrs["gen_ai.tool.type"] = "function"
    if run.tags:
        attrs["streamtap.tags"] = [str(x) for x in run.tags]
    if conversation_id:
        attrs["gen_ai.conversation.id"] = redact(str(conversation_id))
    return span_name, span_kind, attrs


_MODEL_NAMES = ("model", "provider_name", "provider", "server_address", "server_port")
_TOOL_NAMES = ("description",)


def module_attributes(kind: str, module: t.Any) -> tuple[str | None, str | None, dict[str, t.Any]]:
    """(model, provider, attributes) read from an ``llm`` or ``tool`` module before ``forward()`` runs."""
    if kind == "tool":
        desc = str_attr(module, "description")
        return None, None, {"gen_ai.tool.description": desc} if desc else {}
    attrs: dict[str, t.Any] = {}
    model = str_attr(module, "model")
    provider = str_attr(module, "provider_name") or str_attr(module, "provider")
    address = str_attr(module, "server_address")
    port = getattr(module, "server_port", None)
    if model:
        attrs["gen_ai.request.model"] = model
    if provider:
        attrs["gen_ai.provider.name"] = provider
    if address:
        attrs["server.address"] = address
    if isinstance(port, int) and not isinstance(port, bool):
        attrs["server.port"] = port
    return model, provider, attrs


def annotation_attributes(
    annotations: t.Mapping[str, t.Any], redact: Redactor, content: ContentWriter | None
) -> dict[str, t.Any]:
    """The attributes of a run's annotations (see :data:`ANNOTATIONS`); content ones only with ``content``."""
    out: dict[str, t.Any] = {}
    for key, value in annotations.items():
        if value is None:
            continue
        if redact.is_sensitive_key(key):
            out[f"streamtap.attributes.{key}"] = REDACTED
            continue
        spec = ANNOTATIONS.get(key)
        if spec is None and key.startswith("request_"):
            spec = ANNOTATIONS.get(key[8:])
        if spec is not None:
            name, tp = spec
            value = coerce(value, tp)  # noqa: PLW2901 - the value is normalised in place on purpose
            if value is None:
                continue
        elif key in _CONTENT_ANNOTATIONS or key in _CONTENT_ATTRS:
            if content is not None:
                name = _CONTENT_ANNOTATIONS.get(key, key)
                reasons = coerce(annotations.get("finish_reasons"), list) or [None]
                out[name] = content.annotated(name, value, reasons[0])
            continue
        elif "." in key:
            name = key
            if not _is_attr_value(value):
                continue
        elif _is_attr_value(value):
            name = f"streamtap.attributes.{key}"
        else:
            continue
        if isinstance(value, str):
            value = redact(value)  # noqa: PLW2901 - the value is normalised in place on purpose
        elif isinstance(value, (list, tuple)):
            value = [redact(v) if isinstance(v, str) else v for v in value]  # noqa: PLW2901 - the value is normalised in place on purpose
        out[name] = value
    return out


def end_attributes(
    ev: End, kind: str, redact: Redactor, content: ContentWriter | None
) -> tuple[dict[str, t.Any], float | None]:
    """The attributes a run's End adds to its span, and the time to first chunk its metrics record.

    Error status and the exception event are the subscriber's; this is the
    attribute part: status, annotations, usage, time to first chunk, output
    content (only with ``content``), ``error.type`` and the cancel reason.
    """
    attrs: dict[str, t.Any] = {"streamtap.status": ev.status}
    if ev.attributes:
        attrs.update(annotation_attributes(ev.attributes, redact, content))
    usage = ev.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.reasoning_tokens is not None:
            attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if usage.cached_input_tokens is not None:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    timings = ev.timings
    ttfc = timings.time_to_first_chunk if timings is not None else None
    if kind == "llm" and "gen_ai.response.time_to_first_chunk" in attrs:
        ttfc = attrs["gen_ai.response.time_to_first_chunk"]  # the module measured it from the request
    elif ttfc is not None:
        if kind == "llm":
            attrs["gen_ai.response.time_to_first_chunk"] = ttfc
            attrs.setdefault("gen_ai.request.stream", True)
        else:
            attrs["streamtap.time_to_first_chunk"] = ttfc
    if content is not None and ev.output is not None and ev.status in ("ok", "interrupted", "error"):
        attrs.update(content.output_attrs(kind, ev, attrs))
    return attrs, ttfc


_Described = tuple[str | None, str | None, t.Mapping[str, t.Any]]


class ModuleAttributes:
    """:func:`module_attributes`, with what a module's class decides computed once per class.

    The attributes come from the module's class (``model = "gpt-4o"``), its
    instance (set in ``__init__``) or a property. When none of the names is a
    descriptor (a property, a slot) on the class and the class does not hook
    attribute access, a run whose instance ``__dict__`` holds none of them
    gets the class's answer, computed on its first run; any other run reads
    the module as :func:`module_attributes` does. The cache is per subscriber
    (no global state) and is cleared when it holds 256 classes.
    """

    __slots__ = ("_llm", "_tool")

    def __init__(self) -> None:
        self._llm: dict[type, _Described | None] = {}
        self._tool: dict[type, _Described | None] = {}

    def of(self, kind: str, module: t.Any) -> _Described:
        """(model, provider, attributes) of an ``llm`` or ``tool`` module (the attributes: read-only)."""
        cache = self._tool if kind == "tool" else self._llm
        cls = type(module)
        try:
            hit = cache[cls]
        except KeyError:
            hit = cache[cls] = self._learn(kind, cls, cache)
        if hit is not None:
            own = getattr(module, "__dict__", None)
            if not own or own.keys().isdisjoint(_TOOL_NAMES if kind == "tool" else _MODEL_NAMES):
                return hit
        return module_attributes(kind, module)

    @staticmethod
    def _learn(kind: str, cls: type, cache: dict[type, _Described | None]) -> _Described | None:
        if len(cache) >= 256:
            cache.clear()
        return _from_class(kind, cls, _TOOL_NAMES if kind == "tool" else _MODEL_NAMES)


def _from_class(kind: str, cls: type, names: tuple[str, ...]) -> _Described | None:
    """What every instance without its own values gets, or ``None`` when the class alone cannot say."""
    if t.cast(object, cls.__getattribute__) is not object.__getattribute__ or hasattr(cls, "__getattr__"):
        return None
    found: dict[str, t.Any] = {}
    for name in names:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                value = klass.__dict__[name]
                if hasattr(type(value), "__get__"):
                    return None  # a property, a slot, a method: read per instance
                found[name] = value
                break
    model, provider, attrs = module_attributes(kind, types.SimpleNamespace(**found))
    return model, provider, types.MappingProxyType(attrs)
