"""Keep inline tool-call markup out of user-facing text, with the smallest hold-back.

Some models (Qwen, InternLM, Hermes-style fine-tunes, many local servers)
write tool calls into the text itself, between special markers::

    Let me check.<tool_call>{"name": "get_weather", "arguments": {...}}</tool_call>
    <|action_start|><|plugin|>{"name": "get_weather", "parameters": {...}}<|action_end|>

:class:`MarkupFilter` splits a stream of text pieces into ordinary text (safe
to show at once) and complete markup blocks. It holds back only a suffix that
could still be the beginning of an opening marker, and releases it the moment
the next piece shows it is not: text is never delayed by more than
``len(longest marker) - 1`` characters, and usually not at all.

    f = MarkupFilter()
    f.feed("Hello <")        # [Text("Hello ")]       -- "<" might start "<tool_call>"
    f.feed("b>")             # [Text("<b>")]          -- it didn't
    f.feed("<tool_c")        # []
    f.feed('all>{"name": "x"}</tool_call>ok')
    # [Markup('{"name": "x"}', "<tool_call>"), Text("ok")]
    f.close()                # [] -- or the held-back text / an unterminated block
"""

from __future__ import annotations

import typing as t

__all__ = ["HERMES", "INTERNLM", "Markup", "MarkupFilter", "Text", "markers_for"]

HERMES: tuple[tuple[str, str], ...] = (("<tool_call>", "</tool_call>"),)
"""``<tool_call>...</tool_call>`` (Qwen 2/2.5/3, Hermes, many vLLM chat templates)."""

INTERNLM: tuple[tuple[str, str], ...] = (("<|action_start|>", "<|action_end|>"),)
"""InternLM2's ``<|action_start|><|plugin|>...<|action_end|>`` (the LazyLLM seed's model)."""


def markers_for(style: str) -> tuple[tuple[str, str], ...]:
    """The (open, close) marker pairs of a style: ``hermes`` (alias ``qwen``), ``internlm`` or ``auto`` (both).

    Raises:
        ValueError: for an unknown style.
    """
    styles = {"hermes": HERMES, "qwen": HERMES, "internlm": INTERNLM, "auto": HERMES + INTERNLM}
    try:
        return styles[style]
    except KeyError:
        msg = f"Unknown tool markup style {style!r}; use one of {sorted(styles)} (or None to turn the filter off)."
        raise ValueError(msg) from None


class Text(t.NamedTuple):
    """Ordinary text, safe to show to the user."""

    text: str


class Markup(t.NamedTuple):
    """One markup block: what was between its markers.

    Attributes:
        body: the text between the opening and the closing marker.
        opener: the opening marker that started it.
        complete: ``False`` when the stream ended before the closing marker.
    """

    body: str
    opener: str
    complete: bool = True


Piece = t.Union[Text, Markup]  # noqa: UP007 - a runtime Union built from a tuple of types


class MarkupFilter:
    """Incrementally separate text from tool-call markup.

    Args:
        markers: (open, close) pairs; by default both Hermes/Qwen and InternLM styles.

    The filter is a small state machine: outside markup it looks for an
    opening marker; inside it looks for the matching closing marker. Only the
    shortest suffix that is a proper prefix of some opening marker is held
    back. Feeding text in any split gives the same pieces (up to how ordinary
    text is cut), in order, with nothing dropped.
    """

    __slots__ = ("_buf", "_close", "_inside", "_markers", "_max_open")

    def __init__(self, markers: t.Sequence[tuple[str, str]] = HERMES + INTERNLM) -> None:
        if not markers or any(not a or not b for a, b in markers):
            msg = f"markers must be non-empty (open, close) string pairs, not {markers!r}."
            raise ValueError(msg)
        self._markers = tuple(markers)
        self._max_open = max(len(a) for a, _ in self._markers)
        self._buf = ""
        self._inside: str | None = None
        self._close = ""

    @property
    def held(self) -> str:
        """The text currently held back (a possible marker start, or an open block)."""
        return self._buf

    def feed(self, text: str) -> list[Piece]:
        """Add a piece of streamed text; return what can be released now, in order."""
        if not text:
            return []
        self._buf += text
        out: list[Piece] = []
        while True:
            if self._inside is not None:
                end = self._buf.find(self._close)
                if end < 0:
                    return out
                out.append(Markup(self._buf[:end], self._inside))
                self._buf = self._buf[end + len(self._close) :]
                self._inside = None
                continue
            start, opener, closer = self._find_open()
            if start < 0:
                keep = self._partial_len()
                cut = len(self._buf) - keep
                if cut > 0:
                    out.append(Text(self._buf[:cut]))
                    self._buf = self._buf[cut:]
                return out
            if start > 0:
                out.append(Text(self._buf[:start]))
            self._buf = self._buf[start + len(opener) :]
            self._inside = opener
            self._close = closer

    def close(self) -> list[Piece]:
        """End of stream: release held text, or an unterminated block as incomplete markup."""
        out: list[Piece] = []
        if self._inside is not None:
            out.append(Markup(self._buf, self._inside, complete=False))
        elif self._buf:
            out.append(Text(self._buf))
        self._buf = ""
        self._inside = None
        return out

    def _find_open(self) -> tuple[int, str, str]:
        best = (-1, "", "")
        for opener, closer in self._markers:
            i = self._buf.find(opener)
            if i >= 0 and (best[0] < 0 or i < best[0]):
                best = (i, opener, closer)
        return best

    def _partial_len(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of an opening marker."""
        buf = self._buf
        for n in range(min(len(buf), self._max_open - 1), 0, -1):
            tail = buf[-n:]
            if any(opener.startswith(tail) for opener, _ in self._markers):
                return n
        return 0
