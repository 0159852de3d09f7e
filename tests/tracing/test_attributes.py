"""Module attributes on spans: read once per class when the class decides them, per run when the instance does."""

from __future__ import annotations

import typing as t

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtap import ModuleBase
from streamtap.tracing import TracingSubscriber
from streamtap.tracing.attributes import ModuleAttributes, module_attributes


class Chat(ModuleBase):
    kind = "llm"
    model = "class-model"

    def forward(self, x: str) -> str:
        return x


class OwnModel(Chat):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model


class Switching(ModuleBase):
    kind = "llm"

    def __init__(self) -> None:
        super().__init__()
        self.models = iter(["first", "second"])

    @property
    def model(self) -> str:
        return next(self.models)

    def forward(self, x: str) -> str:
        return x


def _names(run: t.Callable[[], None]) -> list[str]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TracingSubscriber(provider):
        run()
    return [s.name for s in exporter.get_finished_spans()]


def test_instance_values_win_over_the_class_and_properties_are_read_each_run() -> None:
    def run() -> None:
        Chat()("a")
        OwnModel("own-1")("b")
        Chat()("c")
        OwnModel("own-2")("d")
        m = Chat()
        m.model = "set-later"
        m("e")
        s = Switching()
        s("f")
        s("g")

    assert _names(run) == [
        "chat class-model",
        "chat own-1",
        "chat class-model",
        "chat own-2",
        "chat set-later",
        "chat first",
        "chat second",
    ]


def test_the_cache_answers_as_reading_the_module_does() -> None:
    class Tool(ModuleBase):
        kind = "tool"
        description = "Looks things up."

    class Hooked(Chat):
        def __getattr__(self, name: str) -> t.Any:
            if name == "server_address":
                return "hooked.example"
            raise AttributeError(name)

    cache = ModuleAttributes()
    for kind, module in (("llm", Chat()), ("llm", OwnModel("x")), ("tool", Tool()), ("llm", Hooked())):
        for _ in range(2):  # the second answer comes from the cache where the class decides
            model, provider, attrs = cache.of(kind, module)
            assert (model, provider, dict(attrs)) == module_attributes(kind, module)
    assert dict(cache.of("llm", Hooked())[2])["server.address"] == "hooked.example"
