"""What a request to :class:`~streamtap.testing.FakeOpenAI` asks of the model (:class:`Behaviour`) and what the server records of it (:class:`RequestRecord`)."""

from __future__ import annotations

import dataclasses
import typing as t

ToolMode = t.Literal["native", "inline", "internlm"]


Outcome = t.Literal["pending", "completed", "client_closed", "fault", "error"]


_CITIES: dict[str, str] = {
    "tokyo": "Tokyo, Japan",
    "paris": "Paris, France",
    "san francisco": "San Francisco, CA",
    "beijing": "Beijing, China",
    "london": "London, UK",
    "new york": "New York, NY",
}


@dataclasses.dataclass
class Behaviour:
    """How the server answers one request (see the module docstring for how it is chosen).

    Attributes:
        token_delay: seconds to wait before each streamed chunk.
        reasoning: stream ``reasoning_content`` deltas before the answer.
        tool_mode: ``native`` tool calls, or inline ``<tool_call>`` / InternLM markup in the text.
        fault: ``None``, an HTTP status as a string (``"500"``), ``"malformed"``, ``"drop"`` or ``"hang"``.
        bad_args: make tool calls with bad arguments.
        unknown_tool: call a tool that was not offered.
    """

    token_delay: float = 0.0
    reasoning: bool = False
    tool_mode: ToolMode = "native"
    fault: str | None = None
    bad_args: bool = False
    unknown_tool: bool = False


@dataclasses.dataclass
class RequestRecord:
    """What the server saw of one request. Times are ``time.monotonic()`` seconds.

    Attributes:
        index: 0-based arrival order.
        method: HTTP method.
        path: request path.
        model: the requested model (chat requests).
        stream: whether a stream was asked for.
        body: the parsed JSON body (``None`` when there was none).
        headers: request headers, lower-cased names.
        behaviour: the :class:`Behaviour` chosen for it.
        started_at: when the request was read.
        finished_at: when the response ended (completed, cut, or closed by the client).
        outcome: ``pending``, ``completed``, ``client_closed`` (closed by the client
            before the end), ``fault`` (an injected fault ran) or ``error``.
        status: the HTTP status sent.
        chunks_sent: SSE data frames written (``[DONE]`` excluded).
    """

    index: int
    method: str
    path: str
    model: str | None
    stream: bool
    body: t.Any
    headers: dict[str, str]
    behaviour: Behaviour
    started_at: float
    finished_at: float | None = None
    outcome: Outcome = "pending"
    status: int = 200
    chunks_sent: int = 0

    @property
    def closed_early(self) -> bool:
        """Whether the client closed the connection before the response was complete."""
        return self.outcome == "client_closed"

    @property
    def messages(self) -> list[dict[str, t.Any]]:
        """The chat messages of the request (empty for other requests)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return t.cast("list[dict[str, t.Any]]", self.body["messages"])
        return []
