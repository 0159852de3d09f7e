"""The Redis key names, all under one configurable prefix so several apps share one Redis."""

from __future__ import annotations

import dataclasses
import re

from streamtap.exceptions import UsageError

__all__ = ["Keys"]

_PREFIX = re.compile(r"[A-Za-z0-9_\-.:{}]{1,64}")


@dataclasses.dataclass(frozen=True)
class Keys:
    """Key names for one app (``prefix``, default ``streamtap``).

    * ``{prefix}:run:{run_id}`` -- the run's event log (a stream; entry id ``{seq}-1``)
    * ``{prefix}:run:{run_id}:meta`` -- hash: ``upto`` (last seq written), ``lost``, ``done``, ``status``
    * ``{prefix}:run:{run_id}:text`` -- the user-facing text so far (the snapshot after a gap)
    * ``{prefix}:requests`` / ``{prefix}:dead`` -- run requests (consumer group ``workers``) and the dead letters
    * ``{prefix}:stop:{run_id}`` / channel ``{prefix}:stop`` -- stop requests
    * ``{prefix}:chat:{chat_id}:active`` / ``:pending`` / ``:runs`` -- the chat's running run, its
      pending interrupt (JSON), its runs (newest first)
    """

    prefix: str = "streamtap"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or _PREFIX.fullmatch(self.prefix) is None:
            msg = f"The Redis key prefix must be 1-64 of letters, digits and '_-.:{{}}', got {self.prefix!r}."
            raise UsageError(msg)

    def run(self, run_id: str) -> str:
        """The run's event log."""
        return f"{self.prefix}:run:{run_id}"

    def meta(self, run_id: str) -> str:
        """The run's metadata hash."""
        return f"{self.prefix}:run:{run_id}:meta"

    def text(self, run_id: str) -> str:
        """The run's user-facing text so far."""
        return f"{self.prefix}:run:{run_id}:text"

    @property
    def requests(self) -> str:
        """The stream of run requests."""
        return f"{self.prefix}:requests"

    @property
    def dead(self) -> str:
        """The dead-letter stream."""
        return f"{self.prefix}:dead"

    def stop(self, run_id: str) -> str:
        """The key that says a run was asked to stop."""
        return f"{self.prefix}:stop:{run_id}"

    @property
    def stop_channel(self) -> str:
        """The pub/sub channel workers hear stop requests on."""
        return f"{self.prefix}:stop"

    def active(self, chat_id: str) -> str:
        """The id of the chat's running run (absent when none)."""
        return f"{self.prefix}:chat:{chat_id}:active"

    def pending(self, chat_id: str) -> str:
        """The chat's pending interrupt record (JSON)."""
        return f"{self.prefix}:chat:{chat_id}:pending"

    def history(self, chat_id: str) -> str:
        """The chat's run ids, newest first (a list)."""
        return f"{self.prefix}:chat:{chat_id}:runs"
