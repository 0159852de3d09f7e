"""``chat_interface(module)``: a Gradio chat app for any streamtap module.

Needs the ``gradio`` extra (``pip install 'streamtap[gradio]'``). The app

* streams the module's user-facing text into the chat as it comes;
* shows each tool call (name, arguments, result or error) and the model's
  reasoning as collapsible "thoughts": ``gr.ChatMessage`` with ``metadata``
  (``title``, ``status`` pending -> done, ``duration``, ``id``);
* has a **Stop** button that cancels the run: the generator Gradio runs is
  closed, which closes the run's stream, which cancels the run; the model
  call's HTTP stream closes;
* has a **Stream the answer** switch (off: the answer appears whole when it
  is complete) and a **Show tool calls and reasoning** switch (off: the
  answer only), both under "Additional Inputs".

What is user-facing text, and that nothing is shown twice, is decided as for
the web endpoints (:class:`streamtap.web.UIMessageMapper`). A failure is shown
as a short message naming the failed part and the run id (the detail goes to
the server log); ``error_detail="full"`` shows ``Type: message`` (redacted).
"""

from __future__ import annotations

import json
import logging
import time
import typing as t

from ..module import ModuleBase

if t.TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

__all__ = ["ChatRenderer", "chat_interface"]

log = logging.getLogger("streamtap.integrations.gradio")

InputBuilder = t.Callable[[str, "list[dict[str, t.Any]]"], t.Any]
"""``to_input(message, history) -> module input``; ``history`` is Gradio's ``[{"role", "content"}...]``."""


def _gradio() -> t.Any:
    try:
        import gradio
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError("streamtap.integrations.gradio", "gradio") from exc
    return gradio


class ChatRenderer:
    """Turns the events of one run into the ``gr.ChatMessage`` list of the reply (pure, no I/O).

    Feed it ``Event.to_dict()`` dicts with :meth:`feed`; :meth:`messages`
    returns the reply so far (new ``gr.ChatMessage`` objects each time, as
    Gradio's streaming diff needs): thoughts (reasoning, tool calls) and answer
    text in the order they happened.

    Args:
        root_id: the run whose events are rendered.
        verbose: show tool calls and reasoning.
        stream_text: text as it comes (``False``: each text part whole).
        describe_error: what the user is shown for a failure
            (:data:`streamtap.web.ui_stream.ErrorText`).
    """

    def __init__(
        self,
        root_id: str,
        *,
        verbose: bool = True,
        stream_text: bool = True,
        describe_error: t.Callable[..., str] | None = None,
    ) -> None:
        from ..web.ui_stream import UIMessageMapper

        self.gr = _gradio()
        self._ui = UIMessageMapper(root_id, verbose=verbose, stream_text=stream_text, describe_error=describe_error)
        self._root = root_id
        self._items: list[dict[str, t.Any]] = []  # {"content", "metadata"} per reply message
        self._open: dict[str, dict[str, t.Any]] = {}  # part id / "tool:<call id>" -> its item
        self._started: dict[str, float] = {}
        self._args: dict[str, str] = {}

    @property
    def done(self) -> bool:
        """Whether the run's end was rendered."""
        return self._ui.done

    def feed(self, ev: t.Mapping[str, t.Any]) -> bool:
        """Render one event; returns whether the reply changed."""
        changed = False
        for part in self._ui.feed(ev):
            changed = self._part(part) or changed
        return changed

    def messages(self) -> list[t.Any]:
        """The reply so far, as new ``gr.ChatMessage`` objects."""
        chat_message = self.gr.ChatMessage
        return [
            chat_message(
                role="assistant", content=i["content"], metadata=dict(i["metadata"]) if i["metadata"] else None
            )
            for i in self._items
        ]

    def _new(self, key: str, content: str = "", **metadata: t.Any) -> dict[str, t.Any]:
        item = {"content": content, "metadata": metadata}
        self._items.append(item)
        self._open[key] = item
        self._started[key] = time.monotonic()
        return item

    def _done(self, key: str) -> dict[str, t.Any]:
        item = self._open[key]
        item["metadata"]["status"] = "done"
        item["metadata"]["duration"] = round(time.monotonic() - self._started[key], 3)
        return item

    def _part(self, p: t.Mapping[str, t.Any]) -> bool:
        typ = p["type"]
        if typ == "text-start":
            self._new(p["id"])
        elif typ == "text-delta":
            self._open[p["id"]]["content"] += p["delta"]
        elif typ == "reasoning-start":
            self._new(p["id"], title="Thinking", status="pending", id=f"{self._root}-{p['id']}")
        elif typ == "reasoning-delta":
            self._open[p["id"]]["content"] += p["delta"]
        elif typ == "reasoning-end":
            self._done(p["id"])
        elif typ == "tool-input-start":
            key = "tool:" + p["toolCallId"]
            self._new(key, title=f"Calling {p['toolName']}", status="pending", id=f"{self._root}-{key}")
        elif typ == "tool-input-delta":
            key = "tool:" + p["toolCallId"]
            self._args[key] = self._args.get(key, "") + p["inputTextDelta"]
            self._open[key]["content"] = self._args[key]
        elif typ == "tool-input-available":
            item = self._open["tool:" + p["toolCallId"]]
            item["metadata"]["title"] = f"Calling {p['toolName']}"
            item["content"] = "Arguments: " + _text(p.get("input"))
        elif typ == "tool-output-available":
            item = self._done("tool:" + p["toolCallId"])
            item["metadata"]["title"] = item["metadata"]["title"].replace("Calling", "Used")
            item["content"] += "\nResult: " + _text(p.get("output"))
        elif typ == "tool-output-error":
            item = self._done("tool:" + p["toolCallId"])
            item["metadata"]["title"] = item["metadata"]["title"].replace("Calling", "Failed:")
            item["content"] += "\nError: " + p["errorText"]
        elif typ == "error":
            self._items.append({"content": f"Error: {p['errorText']}", "metadata": {}})
        else:
            return False  # start, steps, data parts, finish, abort, *-end of text
        return True


def _text(value: t.Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def chat_interface(
    module: ModuleBase,
    *,
    to_input: InputBuilder | None = None,
    streaming: bool = True,
    verbose: bool = True,
    error_detail: t.Literal["short", "full"] = "short",
    title: str | None = None,
    **options: t.Any,
) -> gr.ChatInterface:
    """A ``gr.ChatInterface`` that runs ``module`` for each message and streams its reply.

    Args:
        module: any :class:`~streamtap.ModuleBase` (an agent, a flow, a model call).
        to_input: builds the module's input from the message and the chat
            history (default: the message text).
        streaming: the initial state of the "Stream the answer" switch.
        verbose: the initial state of the "Show tool calls and reasoning" switch.
        error_detail: ``"short"`` (what failed and the run id) or ``"full"``
            (``Type: message``); both redacted. The full detail is logged.
        title: the page title.
        **options: more ``gr.ChatInterface`` arguments (``examples``,
            ``description``...). ``fn`` and ``additional_inputs`` are set here;
            ``api_name`` defaults to ``"chat"`` (the ``/chat`` endpoint of ``gradio_client``).

    Returns:
        The interface; ``.launch()`` it, or mount it in a bigger ``gr.Blocks``.

    Raises:
        MissingDependencyError: without the ``gradio`` extra.
        UsageError: ``module`` is not a ``ModuleBase``, or an option this function sets is passed.
    """
    from ..exceptions import UsageError
    from ..redaction import Redactor
    from ..web.client_errors import ClientErrors

    grm = _gradio()
    if not isinstance(module, ModuleBase):
        msg = f"chat_interface() needs a streamtap ModuleBase, got {module!r}."
        raise UsageError(msg)
    taken = {"fn", "additional_inputs"} & set(options)
    if taken:
        msg = f"chat_interface() sets {sorted(taken)} itself; pass the other gr.ChatInterface options only."
        raise UsageError(msg)
    errors = ClientErrors(error_detail, Redactor())
    build = to_input or (lambda message, history: message)

    async def respond(
        message: str, history: list[dict[str, t.Any]], stream: bool, show_thoughts: bool
    ) -> t.AsyncIterator[list[t.Any]]:
        run = module.astream(build(message, history))
        renderer = ChatRenderer(
            run.handle.run_id, verbose=bool(show_thoughts), stream_text=bool(stream), describe_error=errors.describe
        )
        try:
            async for ev in run:
                data = ev.to_dict()
                errors.log_event(data)
                if renderer.feed(data) and stream:
                    yield renderer.messages()
            if not stream or not renderer.messages():
                yield renderer.messages() or [grm.ChatMessage(role="assistant", content="")]
        finally:
            await run.aclose()  # Stop (the generator closed): cancels the run, so its model stream closes

    extra = [
        grm.Checkbox(value=streaming, label="Stream the answer"),
        grm.Checkbox(value=verbose, label="Show tool calls and reasoning"),
    ]
    options.setdefault("api_name", "chat")  # gradio_client: client.submit(message, stream, verbose, api_name="/chat")
    interface: gr.ChatInterface = grm.ChatInterface(respond, additional_inputs=extra, title=title, **options)
    return interface
