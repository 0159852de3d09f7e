"""The LangChain bridge's token path: straight to the handler, LangChain's rules kept, real langchain-core."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import types
import typing as t
import uuid

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks import manager as lc_manager
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import LLMResult

import streamtap
from streamtap import ModuleBase, RunCancelled
from streamtap.bridges.langchain import StreamtapCallbackHandler, instrument


@pytest.fixture(scope="module", autouse=True)
def instrumented() -> StreamtapCallbackHandler:
    return instrument()


def model(text: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=text)]))


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


class Calls:
    """Counts the calls of some functions' code in this thread (``sys.setprofile``: no stand-in, the real code runs)."""

    def __init__(self, *functions: t.Any) -> None:
        self.codes = {f.__code__: f.__qualname__ for f in functions}
        self.counts = dict.fromkeys(self.codes.values(), 0)

    def __enter__(self) -> Calls:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _profile(self, frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in self.codes:
            self.counts[self.codes[frame.f_code]] += 1


def test_tokens_reach_the_bridge_without_langchains_per_handler_dispatch():
    counts = []
    for n in (20, 200):
        seen: list[t.Any] = []
        with streamtap.subscribe(seen.append), Calls(lc_manager.handle_event) as calls:
            pieces = [c.content for c in model(words(n)).stream("q")]
        chunks = [e.delta for e in seen if e.kind == "chunk"]
        assert "".join(chunks) == "".join(pieces) == words(n) and len(chunks) == 2 * n - 1  # every token, in order
        counts.append(calls.counts["handle_event"])
    # LangChain's generic dispatch runs for the run's start and end only, not once per token:
    # its cost per token is paid for any handler, even one that does nothing, and is more than the bridge's budget.
    assert counts[0] == counts[1] <= 2


def test_another_handler_beside_the_bridge_gets_every_token_through_langchain():
    class Counter(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: t.Any) -> None:
            self.tokens.append(token)

    counter = Counter()
    seen: list[t.Any] = []
    with streamtap.subscribe(seen.append):
        pieces = [c.content for c in model(words(30)).stream("q", config={"callbacks": [counter]})]
    assert "".join(counter.tokens) == "".join(pieces) == words(30)
    assert "".join(e.delta for e in seen if e.kind == "chunk") == words(30)


async def test_async_streams_take_the_short_path_nested_and_stop_on_cancel():
    class AsyncAgent(ModuleBase):
        kind = "agent"
        blocking = False

        async def forward(self, q: str) -> str:
            return "".join([str(c.content) async for c in model(words(40)).astream(q)])

    events = [e async for e in AsyncAgent().astream("x")]
    root = events[0].run
    [llm] = [e.run for e in events if e.kind == "start" and e.run.kind == "llm"]
    assert llm.parent_id == root.run_id
    assert "".join(e.delta for e in events if e.kind == "chunk" and e.run.run_id == llm.run_id) == words(40)
    assert events[-1].output == words(40)

    produced: list[str] = []

    class Long(ModuleBase):
        kind = "agent"
        blocking = False

        async def forward(self, q: str) -> str:
            async for c in model(words(2000)).astream(q):
                produced.append(str(c.content))
            return "".join(produced)

    stream = Long().buffered(4, "block").astream("x")
    async for ev in stream:
        if ev.kind == "chunk" and ev.run.kind == "llm":
            stream.handle.cancel("stop")
            break
    with pytest.raises(RunCancelled):
        await asyncio.wait_for(stream.handle.wait(), 10)
    assert len(produced) < 40  # the async LangChain stream stopped at the next token


_ALONE = textwrap.dedent(
    """
    # A fresh process where no instrument() hook adds the bridge's own handler: each handler below is a run's only one.
    import logging, typing as t
    from langchain_core.callbacks import manager
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    import streamtap
    from streamtap.bridges.langchain import StreamtapCallbackHandler

    def stream(handler):
        m = GenericFakeChatModel(messages=iter([AIMessage(content="a b c")]))
        return [c.content for c in m.stream("q", config={"callbacks": [handler]})]

    class Override(StreamtapCallbackHandler):
        def __init__(self):
            super().__init__()
            self.tokens = []
        def on_llm_new_token(self, token, **kw):
            self.tokens.append(token)
            super().on_llm_new_token(token, **kw)

    class Ignoring(StreamtapCallbackHandler):
        @property
        def ignore_llm(self):
            return True

    class Broken(StreamtapCallbackHandler):
        raise_error = False

    seen = []
    with streamtap.subscribe(seen.append):
        o = Override()
        got = stream(o)
        assert got == ["a", " ", "b", " ", "c"], got
        assert o.tokens == got, o.tokens  # an override is called for every token
        chunks = [e.delta for e in seen if e.kind == "chunk"]
        assert chunks == ["a", " ", "b", " ", "c"], chunks
        seen.clear()
        assert len(stream(Ignoring())) == 5
        assert [e for e in seen if e.kind == "chunk"] == []  # ignore_llm: LangChain gives it no token
        seen.clear()
        records = []
        logging.getLogger("langchain_core.callbacks.manager").addHandler(
            type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})()
        )
        class Cancelled(streamtap.ModuleBase):  # a cancelled run: each token raises RunCancelled in the handler
            def forward(self):
                streamtap.current().token.cancel("stop")
                return len(stream(Broken()))  # raise_error False: logged, and LangChain streams on

        assert Cancelled()() == 5
    assert [e.delta for e in seen if e.kind == "chunk"] == [], seen
    print("ok", sum("RunCancelled" in m for m in records))
    """
)


def test_the_short_path_keeps_langchains_rules_for_overrides_ignore_llm_and_raise_error():
    out = subprocess.run([sys.executable, "-c", _ALONE], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    status, logged = out.stdout.split()
    assert status == "ok" and int(logged) >= 1  # each swallowed error logged as LangChain logs it


def test_run_managers_of_another_shape_keep_langchains_dispatch():
    from streamtap.bridges import _langchain_tokens

    class Reshaped(lc_manager.CallbackManagerForLLMRun):
        def on_llm_new_token(self, token: t.Any, chunk: t.Any = None, *, index: int = 0, **kwargs: t.Any) -> None:
            super().on_llm_new_token(token, chunk=chunk, **kwargs)

    class AsyncSame(lc_manager.AsyncCallbackManagerForLLMRun):
        async def on_llm_new_token(self, token: t.Any, *, chunk: t.Any = None, **kwargs: t.Any) -> None:
            await super().on_llm_new_token(token, chunk=chunk, **kwargs)

    before = Reshaped.__dict__["on_llm_new_token"], AsyncSame.__dict__["on_llm_new_token"]
    short = _langchain_tokens.install(
        StreamtapCallbackHandler, StreamtapCallbackHandler._token, managers=(Reshaped, AsyncSame)
    )
    assert short is False and not _langchain_tokens.installed((Reshaped, AsyncSame))
    assert (Reshaped.__dict__["on_llm_new_token"], AsyncSame.__dict__["on_llm_new_token"]) == before  # untouched
    assert _langchain_tokens.installed()  # LangChain's own classes (this langchain-core) have the short path

    seen: list[t.Any] = []
    handler = StreamtapCallbackHandler()
    run_id = uuid.uuid4()
    handler.on_chat_model_start({"name": "M"}, [[]], run_id=run_id)
    rm = Reshaped(run_id=run_id, handlers=[handler], inheritable_handlers=[], tags=[])
    with streamtap.subscribe(seen.append):
        rm.on_llm_new_token("tok")  # LangChain's dispatch, as before the short path
        rm.on_llm_end(LLMResult(generations=[]))
    assert [(e.kind, getattr(e, "delta", None)) for e in seen] == [("chunk", "tok"), ("end", None)]
