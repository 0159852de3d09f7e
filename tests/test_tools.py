"""``@tool``: schemas from signatures and docstrings, validation of a model's arguments, the registry."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import typing as t

import pydantic
import pytest

from streamtap.demo.weather import get_current_weather, get_n_day_weather_forecast, weather_tools
from streamtap.exceptions import UsageError
from streamtap.testing import capture_events
from streamtap.tools import (
    AsyncFunctionTool,
    FunctionTool,
    ToolArgumentError,
    UnknownToolError,
    parse_docstring,
    tool,
)


def test_seed_tools_schema() -> None:
    spec = get_n_day_weather_forecast.to_openai()
    fn = spec["function"]
    assert spec["type"] == "function" and fn["name"] == "get_n_day_weather_forecast"
    assert fn["description"] == "Get an N-day weather forecast."
    params = fn["parameters"]
    assert params["required"] == ["location", "num_days"]
    assert params["properties"]["location"] == {
        "type": "string",
        "description": "The city and state, e.g. San Francisco, CA.",
    }
    assert params["properties"]["num_days"]["type"] == "integer"
    unit = params["properties"]["unit"]
    assert unit["enum"] == ["celsius", "fahrenheit"] and unit["type"] == "string" and unit["default"] == "fahrenheit"
    assert unit["description"].startswith("The temperature unit to use.")
    assert params["additionalProperties"] is False


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    """A point.

    Args:
        x: horizontal.
        y: vertical.
    """

    x: float
    y: float = 0.0


class Box(pydantic.BaseModel):
    width: int
    label: str = "box"


@tool
def rich(
    names: list[str],
    point: Point,
    box: Box,
    color: Color = Color.RED,
    limit: int | None = None,
    weights: dict[str, float] | None = None,
    flag: bool = False,
) -> dict:
    """Exercise every supported hint.

    Args:
        names: Some names,
            continued on a second line.
        point: Where.
        box: A pydantic box.
        color: Which color.
        limit: At most this many.
        weights: Optional weights.
        flag: A switch.
    """
    return {
        "names": names,
        "point": point,
        "box": box,
        "color": color,
        "limit": limit,
        "weights": weights,
        "flag": flag,
    }


def test_schema_for_rich_hints() -> None:
    props = rich.parameters["properties"]
    assert props["names"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Some names, continued on a second line.",
    }
    assert props["point"]["type"] == "object" and props["point"]["required"] == ["x"]
    assert props["point"]["properties"]["x"] == {"type": "number", "description": "horizontal."}
    assert props["box"]["properties"]["width"]["type"] == "integer"
    assert props["color"]["enum"] == ["red", "blue"] and props["color"]["default"] == "red"
    assert props["limit"]["type"] == "integer"  # Optional with a None default: just not required
    assert props["weights"]["additionalProperties"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean", "description": "A switch.", "default": False}
    assert rich.parameters["required"] == ["names", "point", "box"]


def test_validation_converts_nested_values() -> None:
    args = rich.validate('{"names": ["a"], "point": {"x": 1}, "box": {"width": "3"}, "color": "blue", "limit": 2.0}')
    assert args["point"] == Point(1.0, 0.0)
    assert args["box"] == Box(width=3)
    assert args["color"] is Color.BLUE and args["limit"] == 2 and isinstance(args["limit"], int)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"location": "Tokyo', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("{}", "missing required argument 'location'"),
        ('{"location": 7}', "location must be a string, not an integer (7)"),
        ('{"location": "x", "unit": "kelvin"}', "unit must be one of ['fahrenheit', 'celsius'], not 'kelvin'"),
        ('{"location": "x", "city": "y"}', "unexpected argument 'city'"),
    ],
)
def test_invalid_arguments_are_explained(arguments: str, problem: str) -> None:
    with pytest.raises(ToolArgumentError) as info:
        get_current_weather.validate(arguments)
    assert problem in str(info.value)
    assert "get_current_weather" in str(info.value) and "again" in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ToolArgumentError) as info:
        get_n_day_weather_forecast.validate({"num_days": "three", "unit": 1})
    assert len(info.value.problems) == 3


def test_numbers_in_strings_are_accepted() -> None:
    assert get_n_day_weather_forecast.validate({"location": "Paris", "num_days": "3"}) == {
        "location": "Paris",
        "num_days": 3,
    }


def test_a_tool_call_is_a_tool_run() -> None:
    with capture_events() as events:
        out = get_current_weather(location="Tokyo, Japan", unit="celsius")
    assert '"temperature": "10"' in out
    (start,) = events.of("start")
    assert start.run.kind == "tool" and start.run.name == "get_current_weather"
    assert start.inputs == {"location": "Tokyo, Japan", "unit": "celsius"}


def test_async_and_streaming_tools() -> None:
    @tool
    async def slow(x: int) -> int:
        """Double it."""
        await asyncio.sleep(0)
        return 2 * x

    @tool(name="counter", description="Count up.")
    def count(n: int) -> t.Iterator[str]:
        for i in range(n):
            yield str(i)

    assert isinstance(slow, AsyncFunctionTool) and slow(x=2) == 4
    assert asyncio.run(slow.acall(x=3)) == 6
    assert isinstance(count, FunctionTool) and count.to_openai()["function"]["description"] == "Count up."
    with capture_events() as events:
        assert count(n=3) == "012"
    assert [e.delta for e in events.of("chunk")] == ["0", "1", "2"]


def test_registry() -> None:
    reg = weather_tools()
    assert reg.names() == ["get_current_weather", "get_n_day_weather_forecast"] and len(reg) == 2
    assert "get_current_weather" in reg and reg.get("get_current_weather") is get_current_weather
    with pytest.raises(
        UnknownToolError, match="no tool named 'nope'. Available tools: get_current_weather, get_n_day_weather_forecast"
    ):
        reg.get("nope")
    assert [s["function"]["name"] for s in reg.select(["get_n_day_weather_forecast"]).schemas()] == [
        "get_n_day_weather_forecast"
    ]

    @reg.tool
    def extra() -> str:
        """Extra."""
        return "x"

    assert reg.get("extra") is extra
    with pytest.raises(UsageError, match="already registered"):
        reg.register(tool(name="extra")(lambda: 1))


def test_bad_definitions_are_refused() -> None:
    with pytest.raises(UsageError, match="not allowed"):
        tool(name="has space")(lambda: 1)
    with pytest.raises(UsageError, match="Cannot build a JSON schema"):

        @tool
        def odd(x: complex) -> None:
            """Odd."""

    with pytest.raises(UsageError, match="needs a function"):
        FunctionTool(42)  # type: ignore[arg-type]


def test_docstring_parser() -> None:
    summary, args = parse_docstring(
        """Do it.

        More words.

        Args:
            a (int): first
                and more.
            *rest: others.

        Returns:
            nothing: really.
        """
    )
    assert summary == "Do it. More words."
    assert args == {"a": "first and more.", "rest": "others."}
