"""Tools from plain functions: ``@tool`` builds the JSON schema and validates the model's arguments.

::

    from typing import Literal
    from streamtap.tools import tool

    @tool
    def get_current_weather(location: str, unit: Literal["celsius", "fahrenheit"] = "fahrenheit") -> str:
        \"\"\"Get the current weather in a given location.

Args:
            location: The city and state, e.g. San Francisco, CA.
            unit: The temperature unit to use.
        \"\"\"
        ...

    get_current_weather.to_openai()     # {"type": "function", "function": {"name": ..., "parameters": {...}}}
    get_current_weather(location="Tokyo")   # a run of kind "tool"

The schema comes from the signature and type hints -- ``str``, ``int``,
``float``, ``bool``, ``list[X]``, ``dict``, ``Literal[...]`` (an enum),
``Enum`` subclasses, ``Optional[X]`` / ``X | None``, defaults, nested
dataclasses and pydantic models -- and the Google-style docstring (the
summary, and ``Args:`` descriptions). :meth:`FunctionTool.validate` checks
arguments from a model against the same hints and raises
:class:`ToolArgumentError` with a message written for the model, so that it
can correct itself. A :class:`ToolRegistry` finds tools by name (the LazyLLM
seed's ``fc_register``), without any global state.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing as t

from .exceptions import StreamtapError, UsageError
from .module import ModuleBase

__all__ = [
    "AsyncFunctionTool",
    "FunctionTool",
    "ToolArgumentError",
    "ToolRegistry",
    "UnknownToolError",
    "tool",
]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


class ToolArgumentError(StreamtapError, ValueError):
    """The model's arguments for a tool are not valid; the message is written for the model.

    Attributes:
        tool: the tool's name.
        problems: one line per problem found.
    """

    def __init__(self, tool: str, problems: t.Sequence[str]) -> None:
        self.tool = tool
        self.problems = list(problems)
        lines = "; ".join(self.problems)
        super().__init__(f"Invalid arguments for tool {tool!r}: {lines}. Call it again with corrected arguments.")


class UnknownToolError(StreamtapError, LookupError):
    """The model asked for a tool that is not available; the message lists the ones that are."""

    def __init__(self, name: str, available: t.Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        names = ", ".join(self.available) or "none"
        super().__init__(f"There is no tool named {name!r}. Available tools: {names}.")


# -- docstrings -------------------------------------------------------------------


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and its ``Args:`` descriptions.

    ``name (type): text`` and ``name: text`` lines are understood; indented
    continuation lines are joined to the previous argument.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            current = None
            base_indent = None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("args", "arguments", "parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        am = _ARG_LINE.match(line.strip())
        if indent <= base_indent and am:
            current = am.group(1).lstrip("*")
            args[current] = am.group(3).strip()
        elif current is not None:
            args[current] = (args[current] + " " + line.strip()).strip()
    description = " ".join(" ".join(summary).split())
    return description, args


# -- schemas -------------------------------------------------------------------------


def _is_optional(tp: t.Any) -> tuple[bool, t.Any]:
    origin = t.get_origin(tp)
    if origin is t.Union or origin is types.UnionType:
        args = [a for a in t.get_args(tp) if a is not type(None)]
        if len(args) < len(t.get_args(tp)):
            inner = args[0] if len(args) == 1 else t.Union[tuple(args)]  # noqa: UP007 - a runtime Union built from a tuple of types
            return True, inner
    return False, tp


def _strip_annotated(tp: t.Any) -> tuple[t.Any, str | None]:
    if t.get_origin(tp) is t.Annotated:
        base, *extras = t.get_args(tp)
        desc = next((x for x in extras if isinstance(x, str)), None)
        return base, desc
    return tp, None


def schema_of(tp: t.Any) -> dict[str, t.Any]:
    """The JSON schema of a Python type hint (the subset tools need)."""
    tp, desc = _strip_annotated(tp)
    out = _schema_of(tp)
    if desc:
        out = {**out, "description": desc}
    return out


def _schema_of(tp: t.Any) -> dict[str, t.Any]:
    if tp is inspect.Parameter.empty or tp is t.Any or tp is object:
        return {}
    optional, inner = _is_optional(tp)
    if optional:
        return {"anyOf": [schema_of(inner), {"type": "null"}]}
    origin = t.get_origin(tp)
    args = t.get_args(tp)
    if origin is t.Literal:
        values = list(args)
        out: dict[str, t.Any] = {"enum": values}
        kinds = {type(v) for v in values}
        if len(kinds) == 1:
            out = {"type": _PRIMITIVES.get(kinds.pop(), "string"), "enum": values}
        return out
    if origin is t.Union or origin is types.UnionType:
        return {"anyOf": [schema_of(a) for a in args]}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        return {"type": "string" if all(isinstance(v, str) for v in values) else "integer", "enum": values}
    if (
        origin in (list, set, frozenset, tuple)
        or tp in (list, set, frozenset, tuple)
        or (origin is not None and isinstance(origin, type) and issubclass(origin, t.Sequence) and origin is not str)
    ):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [schema_of(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        item = args[0] if args else t.Any
        return {"type": "array", "items": schema_of(item)}
    if origin in (dict, t.Mapping) or tp is dict or (isinstance(origin, type) and issubclass(origin, t.Mapping)):
        value = args[1] if len(args) == 2 else t.Any
        vs = schema_of(value)
        return {"type": "object", "additionalProperties": vs if vs else True}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = t.get_type_hints(tp, include_extras=True)
        props: dict[str, t.Any] = {}
        required = []
        _, arg_docs = parse_docstring(tp.__doc__)
        for f in dataclasses.fields(tp):
            s = schema_of(hints.get(f.name, t.Any))
            if f.name in arg_docs:
                s = {**s, "description": arg_docs[f.name]}
            props[f.name] = s
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if isinstance(tp, type) and hasattr(tp, "model_json_schema") and hasattr(tp, "model_validate"):
        return t.cast("dict[str, t.Any]", tp.model_json_schema())
    if isinstance(tp, type) and t.is_typeddict(tp):
        hints = t.get_type_hints(tp)
        return {
            "type": "object",
            "properties": {k: schema_of(v) for k, v in hints.items()},
            "required": sorted(getattr(tp, "__required_keys__", hints)),
        }
    msg = f"Cannot build a JSON schema for the type hint {tp!r}; use str, int, float, bool, list, dict, Literal, Enum, a dataclass or a pydantic model."
    raise UsageError(msg)


_EXACT_WORDS: dict[t.Any, str] = {bool: "true or false", str: "a string"}
"""What a value of a type that is accepted only as itself must be, in error messages."""
_PRIMITIVES: dict[t.Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


# -- validation ----------------------------------------------------------------------


class _Invalid(Exception):
    pass


def _kind(value: t.Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def coerce(value: t.Any, tp: t.Any, where: str) -> t.Any:
    """Check ``value`` (decoded JSON) against the hint ``tp`` and convert it; raises ``ValueError`` naming ``where``."""
    tp, _ = _strip_annotated(tp)
    if tp is inspect.Parameter.empty or tp is t.Any or tp is object:
        return value
    optional, inner = _is_optional(tp)
    if optional:
        return None if value is None else coerce(value, inner, where)
    origin = t.get_origin(tp)
    args = t.get_args(tp)
    if origin is t.Literal:
        if value in args:
            return value
        raise ValueError(f"{where} must be one of {list(args)!r}, not {value!r}")
    if origin is t.Union or origin is types.UnionType:
        for a in args:
            try:
                return coerce(value, a, where)
            except ValueError:
                continue
        raise ValueError(f"{where} does not match any of {[getattr(a, '__name__', str(a)) for a in args]}: {value!r}")
    if tp is bool or tp is str:
        if isinstance(value, tp):
            return value
        raise ValueError(f"{where} must be {_EXACT_WORDS[tp]}, not {_kind(value)} ({value!r})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise ValueError(f"{where} must be an integer, not {_kind(value)} ({value!r})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where} must be a number, not {_kind(value)} ({value!r})")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where} must be one of {[m.value for m in tp]!r}, not {value!r}") from None
    if origin in (list, set, frozenset, tuple) or tp in (list, set, frozenset, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, not {_kind(value)} ({value!r})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where} must have {len(args)} items, not {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else t.Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        base = origin or tp
        if base is list:
            return items
        try:
            return base(items)
        except TypeError:  # e.g. a set of lists: the model sent unhashable items
            raise ValueError(f"{where} must hold hashable items for a {base.__name__}, got {value!r}") from None
    if origin in (dict, t.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, not {_kind(value)} ({value!r})")
        vt = args[1] if len(args) == 2 else t.Any
        return {k: coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, not {_kind(value)} ({value!r})")
        hints = t.get_type_hints(tp, include_extras=True)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        extra = sorted(set(value) - set(fields))
        if extra:
            raise ValueError(f"{where} has unknown fields {extra}; allowed: {sorted(fields)}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = coerce(value[name], hints.get(name, t.Any), f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}.{name} is required")
        return tp(**kwargs)
    if isinstance(tp, type) and hasattr(tp, "model_validate"):
        try:
            return tp.model_validate(value)
        except Exception as exc:  # pydantic.ValidationError
            raise ValueError(f"{where} is not a valid {tp.__name__}: {exc}") from None
    return value


# -- tools ---------------------------------------------------------------------------


class FunctionTool(ModuleBase):
    """A tool made from a plain function by :func:`tool`; calling it is a run of kind ``tool``.

    Attributes:
        fn: the function.
        name: the tool's name (the function's name unless given).
        description: what the model is told the tool does.
        parameters: the JSON schema of the arguments.
    """

    kind = "tool"

    name: str

    def __init__(self, fn: t.Callable[..., t.Any], name: str | None = None, description: str | None = None) -> None:
        if not callable(fn):
            msg = f"@tool needs a function, not {fn!r}."
            raise UsageError(msg)
        self.fn = fn
        self.name = name or fn.__name__
        if not _NAME.match(self.name):
            msg = f"Tool name {self.name!r} is not allowed: use 1-64 letters, digits, '_' or '-' (pass name=...)."
            raise UsageError(msg)
        summary, arg_docs = parse_docstring(fn.__doc__)
        self.description = description if description is not None else summary
        self._signature = inspect.signature(fn)
        try:
            self._hints = t.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            msg = f"Cannot read the type hints of tool {self.name!r}: {exc}. Make every annotation importable."
            raise UsageError(msg) from exc
        self._var_kw = any(p.kind is p.VAR_KEYWORD for p in self._signature.parameters.values())
        props: dict[str, t.Any] = {}
        required: list[str] = []
        for pname, param in self._signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            hint = self._hints.get(pname, param.annotation)
            optional, inner = _is_optional(_strip_annotated(hint)[0]) if hint is not param.empty else (False, hint)
            s = schema_of(inner if optional and param.default is None else hint)
            if arg_docs.get(pname):
                s = {**s, "description": arg_docs[pname]}
            if param.default is not param.empty and param.default is not None:
                default = param.default.value if isinstance(param.default, enum.Enum) else param.default
                try:
                    json.dumps(default)
                    s = {**s, "default": default}
                except (TypeError, ValueError):
                    pass
            props[pname] = s
            if param.default is param.empty:
                required.append(pname)
        self.parameters: dict[str, t.Any] = {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": self._var_kw,
        }
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def to_openai(self) -> dict[str, t.Any]:
        """The tool in OpenAI's ``tools=[...]`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: str | t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
        """Decode and check a model's arguments; return keyword arguments for the function.

        Args:
            arguments: a JSON object as text (as models send it) or a mapping.

        Raises:
            ToolArgumentError: invalid JSON, not an object, unknown, missing or wrong-typed arguments.
        """
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            data: t.Any = {}
        elif isinstance(arguments, str):
            try:
                data = json.loads(arguments)
            except ValueError as exc:
                raise ToolArgumentError(
                    self.name, [f"the arguments are not valid JSON ({exc}): {arguments!r}"]
                ) from None
        else:
            data = dict(arguments)
        if not isinstance(data, dict):
            raise ToolArgumentError(self.name, [f"the arguments must be a JSON object, not {_kind(data)} ({data!r})"])
        problems: list[str] = []
        out: dict[str, t.Any] = {}
        params = self._signature.parameters
        for key in data:
            if key not in params or params[key].kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            ):
                if self._var_kw:
                    out[key] = data[key]
                else:
                    allowed = sorted(self.parameters["properties"])
                    problems.append(f"unexpected argument {key!r} (allowed: {allowed})")
        for pname, param in params.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if pname not in data:
                if param.default is param.empty:
                    problems.append(f"missing required argument {pname!r}")
                continue
            try:
                out[pname] = coerce(data[pname], self._hints.get(pname, param.annotation), pname)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ToolArgumentError(self.name, problems)
        return out

    def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call the function (a generator function streams its items as chunks)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name}{self._signature}>"


class AsyncFunctionTool(FunctionTool):
    """A tool made from an ``async def`` function; ``await tool.acall(...)`` or ``tool(...)``."""

    async def forward(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Await the function."""
        return await self.fn(*args, **kwargs)


@t.overload
def tool(fn: t.Callable[..., t.Any], /) -> FunctionTool: ...
@t.overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> t.Callable[[t.Callable[..., t.Any]], FunctionTool]: ...


def tool(
    fn: t.Callable[..., t.Any] | None = None, /, *, name: str | None = None, description: str | None = None
) -> t.Any:
    """Turn a function (sync or async) into a tool module: ``@tool`` or ``@tool(name=..., description=...)``.

    Args:
        fn: the function.
        name: the tool's name (default: the function's name).
        description: what the tool does (default: the docstring's summary).
    """

    def make(f: t.Callable[..., t.Any]) -> FunctionTool:
        cls = AsyncFunctionTool if inspect.iscoroutinefunction(f) else FunctionTool
        return cls(f, name=name, description=description)

    return make(fn) if fn is not None else make


class ToolRegistry:
    """Tools by name (the LazyLLM seed's ``fc_register``), one registry per app -- no global state.

    Example::

        tools = ToolRegistry()

        @tools.tool
        def get_current_weather(location: str) -> str: ...

        agent = FunctionCallAgent(llm, tools)           # all of them
        agent = FunctionCallAgent(llm, tools.select(["get_current_weather"]))
    """

    def __init__(self, tools: t.Iterable[FunctionTool | t.Callable[..., t.Any]] = ()) -> None:
        self._tools: dict[str, FunctionTool] = {}
        for x in tools:
            self.register(x)

    def register(self, item: FunctionTool | t.Callable[..., t.Any]) -> FunctionTool:
        """Add a tool (a function is wrapped with :func:`tool`); returns it.

        Raises:
            UsageError: another tool already has that name.
        """
        made = item if isinstance(item, FunctionTool) else tool(item)
        if made.name in self._tools and self._tools[made.name] is not made:
            msg = f"A tool named {made.name!r} is already registered; give one of them another name (tool(name=...))."
            raise UsageError(msg)
        self._tools[made.name] = made
        return made

    def tool(self, fn: t.Callable[..., t.Any]) -> FunctionTool:
        """Decorator: make ``fn`` a tool and register it."""
        return self.register(fn)

    def get(self, name: str) -> FunctionTool:
        """The tool named ``name``.

        Raises:
            UnknownToolError: there is none (the message lists the tools there are).
        """
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, list(self._tools)) from None

    def select(self, names: t.Iterable[str]) -> ToolRegistry:
        """A registry with only the named tools (each must exist)."""
        return ToolRegistry(self.get(n) for n in names)

    def schemas(self) -> list[dict[str, t.Any]]:
        """All tools in OpenAI's ``tools=[...]`` format."""
        return [x.to_openai() for x in self._tools.values()]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> t.Iterator[FunctionTool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()})"
