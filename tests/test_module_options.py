"""name=, tags=, metadata= on every module, and with_options() for one call site (as a user writes them)."""

from __future__ import annotations

import asyncio
import typing as t

import pytest

from streamtap import ModuleBase, UsageError
from streamtap.events import End, Start
from streamtap.flows import Sequential
from streamtap.llm.openai import OpenAIChat
from streamtap.testing import model_endpoint


class Echo(ModuleBase):
    """A user subclass with no __init__ at all."""

    def forward(self, text: str) -> t.Iterator[str]:
        for word in text.split():
            yield word + " "


class Scaled(ModuleBase):
    """A user subclass with its own __init__ that calls super().__init__()."""

    tags = ("math",)

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: int) -> int:
        return x * self.factor


class Stubborn(ModuleBase):
    """A user subclass whose __init__ neither calls super() nor takes the options, and sets a name itself."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.name = "hard-coded"

    def forward(self, who: str) -> str:
        return f"{self.greeting}, {who}"


def _runs(stream: t.Iterable[t.Any]) -> list[t.Any]:
    return [ev.run for ev in stream if isinstance(ev, Start)]


class TestConstructorOptions:
    def test_subclass_without_init_takes_name_tags_metadata(self) -> None:
        """Echo(name=..., tags=..., metadata=...) works on a subclass that defines no __init__."""
        echo = Echo(name="E2", tags=["demo"], metadata={"user": "u1"})
        (run,) = _runs(echo.stream("hello world"))
        assert (run.name, run.tags, dict(run.metadata)) == ("E2", ("demo",), {"user": "u1"})
        assert echo("hi there") == "hi there "

    def test_subclass_calling_super_init_takes_them_too(self) -> None:
        """A subclass __init__ without the options still gets them; class tags are kept and extended."""
        scaled = Scaled(3, name="triple", tags="fast")
        assert scaled(2) == 6
        (run,) = _runs(scaled.stream(2))
        assert run.name == "triple" and run.tags == ("math", "fast")

    def test_options_win_over_an_init_that_sets_the_name(self) -> None:
        """An option given at construction is applied after the subclass's own __init__."""
        assert Stubborn("hi", name="greeter").name == "greeter"
        assert Stubborn("hi").name == "hard-coded"

    def test_library_modules_take_them(self) -> None:
        """Flows and LLM modules accept the same three keywords."""
        seq = Sequential(Echo(), name="pipe", tags=["p"], metadata={"v": 2})
        assert (seq.name, seq.tags, dict(seq.metadata)) == ("pipe", ("p",), {"v": 2})
        llm = OpenAIChat(base_url="http://127.0.0.1:9/v1", tags=["x"], metadata={"team": "a"})
        assert llm.tags == ("x",) and dict(llm.metadata) == {"team": "a"} and llm.params == {}

    @pytest.mark.parametrize(
        ("options", "needle"),
        [
            ({"name": ""}, "name= must be a non-empty string"),
            ({"name": 3}, "name= must be a non-empty string"),
            ({"tags": [1]}, "tags= must be a string or an iterable of non-empty strings"),
            ({"tags": 5}, "tags= must be a string or an iterable"),
            ({"metadata": ["a"]}, "metadata= must be a mapping with string keys"),
        ],
    )
    def test_bad_options_are_refused_naming_the_value(self, options: dict[str, t.Any], needle: str) -> None:
        """A bad option raises UsageError naming the argument and the value."""
        with pytest.raises(UsageError, match=needle) as info:
            Echo(**options)
        assert repr(next(iter(options.values()))) in str(info.value)

    def test_tags_are_inherited_by_child_runs(self) -> None:
        """Tags of a module reach the runs it calls (LangChain's inheritance)."""
        inner = Echo(name="inner")

        class Outer(ModuleBase):
            def forward(self, text: str) -> str:
                return t.cast(str, inner(text))

        runs = {r.name: r for r in _runs(Outer(tags=["outer"]).stream("a b"))}
        assert runs["inner"].tags == ("outer",)


class TestWithOptions:
    def test_view_changes_the_run_not_the_module(self) -> None:
        """with_options() names and tags the runs of that call site only; the module is unchanged."""
        echo = Echo(tags=["base"])
        view = echo.with_options(name="shout", tags=["loud"], metadata={"k": 1})
        (run,) = _runs(view.stream("a b"))
        assert (run.name, run.tags, dict(run.metadata)) == ("shout", ("base", "loud"), {"k": 1})
        (plain,) = _runs(echo.stream("a b"))
        assert (plain.name, plain.tags, dict(plain.metadata)) == ("Echo", ("base",), {})
        assert view.module is echo and echo.name is None

    def test_view_is_called_like_the_module(self) -> None:
        """A view returns the module's output sync and async, and its handle works."""
        view = Scaled(2).with_options(name="double")
        assert view(4) == 8
        assert asyncio.run(view.acall(5)) == 10
        assert view.start(6).result(timeout=10) == 12

    def test_views_stack(self) -> None:
        """A view of a view adds its options on top."""
        view = Echo().with_options(tags=["a"], metadata={"x": 1}).with_options(name="n", tags=["b"], metadata={"y": 2})
        (run,) = _runs(view.stream("z"))
        assert (run.name, run.tags, dict(run.metadata)) == ("n", ("a", "b"), {"x": 1, "y": 2})

    def test_view_in_a_sequential(self) -> None:
        """A view is a step like the module itself; the flow's runs carry its name."""
        flow = Sequential(Echo().with_options(name="first"), Echo().with_options(name="second"), name="two")
        names = [r.name for r in _runs(flow.stream("p q"))]
        assert names == ["two", "first", "second"]
        assert flow("p q") == "p q "

    def test_bad_options_on_a_view(self) -> None:
        """with_options() validates like the constructor."""
        with pytest.raises(UsageError, match=r"with_options\(\): tags="):
            Echo().with_options(tags=[None])  # type: ignore[list-item]

    def test_model_view_against_the_embedded_server(self) -> None:
        """An OpenAIChat view streams over real HTTP with the view's name and tags on its run."""
        with model_endpoint(token_delay=0) as base_url:
            llm = OpenAIChat("fake-gpt", base_url=base_url)
            view = llm.with_options(name="summarise", tags=["final"])
            events = list(view.stream("hello"))
        ends = [ev for ev in events if isinstance(ev, End)]
        assert ends[-1].status == "ok" and ends[-1].run.name == "summarise" and ends[-1].run.tags == ("final",)
        assert "".join(ev.delta for ev in events if ev.kind == "chunk" and ev.channel == "text") == "You said: hello"
