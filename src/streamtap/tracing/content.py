"""Message content on spans (on opt-in only): JSON, redacted, cut to a length."""

from __future__ import annotations

import json
import typing as t

from .. import genai_messages as genai
from ..events import to_jsonable

if t.TYPE_CHECKING:
    from ..events import End
    from ..genai_messages import RequestContent
    from ..redaction import Redactor

__all__ = ["ContentWriter"]


class ContentWriter:
    """Turns inputs, outputs, messages and tool arguments into span attribute values.

    Every value is redacted with ``redact`` and cut at ``max_length``
    characters (GenAI message JSON is cut *inside*, so it stays valid JSON).
    """

    __slots__ = ("max_length", "redact")

    def __init__(self, redact: Redactor, max_length: int) -> None:
        self.redact = redact
        self.max_length = max_length

    def text(self, value: t.Any) -> str:
        """JSON of a value (a string as it is), secrets redacted, cut at ``max_length``."""
        text = value if isinstance(value, str) else self.dumps(value)
        text = self.redact(text)
        limit = self.max_length
        if len(text) > limit:
            text = text[:limit] + "...[truncated]"
        return text

    def dumps(self, value: t.Any) -> str:
        """Compact JSON of a value, secrets redacted (by key and by pattern)."""
        text = json.dumps(self.redact.scrub(to_jsonable(value)), ensure_ascii=False, separators=(",", ":"))
        return self.redact(text)

    def genai(self, value: t.Any) -> str:
        """GenAI content JSON (messages, parts, tool definitions), redacted, kept valid JSON within the limit."""
        return genai.fit(value, self.max_length, self.dumps)

    def request_attrs(self, request: RequestContent) -> dict[str, str]:
        """The ``gen_ai.*`` content attributes of a request."""
        return {name: self.genai(value) for name, value in request.attributes().items()}

    def input_attrs(self, kind: str, inputs: t.Any) -> dict[str, str]:
        """The input attribute of a run that is not ``llm`` or ``agent``."""
        if kind == "tool":
            return {"gen_ai.tool.call.arguments": self.text(inputs)}
        return {"streamtap.input": self.text(inputs)}

    def output_attrs(self, kind: str, ev: End, attrs: t.Mapping[str, t.Any]) -> dict[str, str]:
        """The output attribute of an ended run (``attrs``: the End's other attributes)."""
        if kind == "tool":
            return {"gen_ai.tool.call.result": self.text(ev.output)}
        if kind in ("llm", "agent"):
            # The End's output wins over an annotated output_messages: a reply carries its reasoning too.
            reasons = attrs.get("gen_ai.response.finish_reasons") or [None]
            reason = "error" if ev.status == "error" else reasons[0]
            return {"gen_ai.output.messages": self.genai(genai.output_messages(ev.output, reason))}
        return {"streamtap.output": self.text(ev.output)}

    def annotated(self, name: str, value: t.Any, finish_reason: str | None) -> str:
        """A content annotation (``input_messages=``...) in the conventions' shape."""
        if name not in genai.ATTRIBUTES:
            return self.text(value)  # tool call arguments and results: as they are
        return self.genai(genai.shape(name, value, finish_reason))
