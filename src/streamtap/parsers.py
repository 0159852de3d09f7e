"""A streaming JSON parser: text chunks in, successively more complete objects out.

The LangChain seed's ``model | JsonOutputParser()`` is a sequence in which the
parser is a *stream transform*: it reads the model's text while it streams::

    chain = Sequential(llm, JsonOutputParser())
    for ev in chain.stream("Tell the story as JSON with one key, `content`").filter(channels="data"):
        print(ev.delta)       # {} -> {'content': ''} -> {'content': 'Once'} -> ...

Called alone, ``JsonOutputParser()(pieces)`` parses an iterable of text pieces
(or text chunks, or one string); ``JsonOutputParser(llm)`` still wraps a model.

:class:`PartialJSON` does the work and can be used alone. It scans each new
piece once (tracking open objects, arrays and strings), closes what is open,
and lets the C ``json`` decoder read the result; when the text ends inside a
key, a literal or after a comma, it falls back to the last point where the
structure was whole. A number or literal is shown only once it is followed
by something else (``2`` might become ``25``), so each value is a refinement
of the one before: keys only appear, strings only grow. Text before the first ``{`` or ``[`` (a preamble, a
code fence) and after the top-level value is ignored.
"""

from __future__ import annotations

import json
import re
import typing as t

from .context import current
from .module import ModuleBase

__all__ = ["JsonOutputParser", "PartialJSON"]

_MISSING = object()
_OPEN_ESCAPE = re.compile(r"(\\+)(u[0-9a-fA-F]{0,4})?$")
_TOKEN_CHARS = frozenset("0123456789+-.eEtrufalsn")


_CAN_FOLLOW = {"{": '"}', "[": '"{[]-0123456789tfn'}
"""What may follow an opening bracket (after white space) in JSON."""


class PartialJSON:
    """Incremental parser of one JSON value that arrives in pieces.

    Example::

        p = PartialJSON()
        p.feed('{"content": "Once up')    # {'content': 'Once up'}
        p.feed('on a time"}')             # {'content': 'Once upon a time'}
        p.done                            # True
    """

    __slots__ = ("_buf", "_checkpoint", "_closers", "_escape", "_in_string", "_started", "done")

    def __init__(self) -> None:
        self._buf: list[str] = []
        self._closers: list[str] = []
        self._in_string = False
        self._escape = False
        self._started = False
        self._checkpoint: tuple[int, str] = (0, "")
        self.done = False
        """Whether the top-level value is complete."""

    @property
    def text(self) -> str:
        """The JSON text received so far (from the first ``{`` or ``[``)."""
        return "".join(self._buf)

    def feed(self, piece: str) -> t.Any:
        """Add a piece of text; return the most complete value so far, or ``None`` before it starts."""
        if self.done or not piece:
            return self.value()
        buf = self._buf
        for ch in piece:
            if self._started and len(buf) == 1 and not ch.isspace() and ch not in _CAN_FOLLOW[buf[0]]:
                self._restart()  # "[as JSON]" in a preamble: not the JSON, look further
            if not self._started:
                if ch not in "{[":
                    continue
                self._started = True
            buf.append(ch)
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                continue
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._closers.append("}" if ch == "{" else "]")
                self._checkpoint = (len(buf), "".join(reversed(self._closers)))
            elif ch in "}]":
                if self._closers:
                    self._closers.pop()
                self._checkpoint = (len(buf), "".join(reversed(self._closers)))
                if not self._closers:
                    try:
                        json.loads("".join(buf))
                    except ValueError:
                        self._restart()  # bracketed text that is not JSON: look further
                        continue
                    self.done = True
                    break
            elif ch == ",":
                self._checkpoint = (len(buf) - 1, "".join(reversed(self._closers)))
        return self.value()

    def _restart(self) -> None:
        self._buf.clear()
        self._closers.clear()
        self._in_string = self._escape = self._started = False
        self._checkpoint = (0, "")

    def value(self) -> t.Any:
        """The most complete value that the text so far allows (``None`` before it starts)."""
        if not self._started or len(self._buf) < 2:  # an opening bracket alone may still turn out not to be JSON
            return None
        text = "".join(self._buf)
        closers = "".join(reversed(self._closers))
        if self._in_string:
            candidate = _cut_open_escape(text) + '"' + closers
        elif text.rstrip()[-1:] in _TOKEN_CHARS:
            candidate = ""  # a number or literal that may go on ("2" -> "25", "tr" -> "true"): not yet
        else:
            candidate = text + closers
        if candidate:
            try:
                return json.loads(candidate)
            except ValueError:
                pass
        cut, cp_closers = self._checkpoint
        try:
            return json.loads(text[:cut] + cp_closers)
        except ValueError:
            return None


def _cut_open_escape(text: str) -> str:
    """Drop an escape sequence cut short at the end of an open string (``\\``, ``\\u12``, half a surrogate pair)."""
    while True:
        m = _OPEN_ESCAPE.search(text)
        if m is None or len(m.group(1)) % 2 == 0:
            return text
        code = m.group(2) or ""
        if len(code) == 5 and not (code[1] in "dD" and code[2] in "89abAB"):
            return text
        text = text[: m.start(1) + len(m.group(1)) - 1]  # "\u12", "\" or a lone high surrogate


def _pieces(source: t.Any) -> t.Iterator[str]:
    if isinstance(source, str):
        yield source
        return
    for item in source:
        if isinstance(item, str):
            yield item
        else:
            delta = getattr(item, "delta", None)  # a Chunk event
            if isinstance(delta, str) and getattr(item, "channel", "text") == "text":
                yield delta


class JsonOutputParser(ModuleBase):
    """Parse streamed JSON text into successively more complete objects (the ``data`` channel).

    Without an upstream it is a stream transform (``transform == "sync"``):
    in a :class:`~streamtap.flows.Sequential` it reads the previous step's
    text as it streams, and the partial objects it yields stream on to the
    next step (see :mod:`streamtap.flows.transforms`).

    Args:
        upstream: a module whose text to parse (e.g. an LLM); then the call's
            argument goes to it. Without one, the call's argument is the text:
            a string, or an iterable of strings or text chunks.
        name, tags, metadata: as for every module.

    The output is the final object. Each new partial object is yielded once
    (repeats are skipped), so a consumer sees ``{}``, ``{'content': ''}``,
    ``{'content': 'Once'}``... The upstream's own text chunks still stream
    on the ``text`` channel under its run.
    """

    kind = "module"

    def __init__(self, upstream: ModuleBase | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.upstream = upstream

    @property
    def transform(self) -> t.Literal["sync"] | None:
        """``"sync"``: a stream transform reading a sync iterator of text (``None`` when it wraps an upstream)."""
        return "sync" if self.upstream is None else None

    def forward(self, source: t.Iterable[str] | str | t.Any, **kwargs: t.Any) -> t.Generator[t.Any, None, t.Any]:
        """Parse ``source`` (text pieces as they come, or the upstream's text for it); yield partial objects; return the last."""
        parser = PartialJSON()
        last: t.Any = _MISSING
        stream = None
        if self.upstream is not None:
            stream = self.upstream.stream(source, **kwargs)
            ctx = current()
            if ctx is not None:
                ctx.on_cancel(stream.close)
            pieces: t.Iterable[str] = stream.text()
        else:
            pieces = _pieces(source)
        try:
            for piece in pieces:
                value = parser.feed(piece)
                if value is not None and value != last:
                    last = value
                    yield value
            if stream is not None:
                stream.handle.result()  # the upstream's failure is this run's failure
        finally:
            if stream is not None:
                stream.close()
        return None if last is _MISSING else last
