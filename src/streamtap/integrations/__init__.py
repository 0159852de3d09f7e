"""Ready-made front ends for streamtap modules in other UI frameworks.

* :mod:`streamtap.integrations.gradio` -- ``chat_interface(module)``: a
  ``gr.ChatInterface`` that streams a module's answer, shows its tool calls
  and reasoning as collapsible thoughts, and whose stop button cancels the run
  (extra ``streamtap[gradio]``).

Each submodule imports its framework only when used.
"""

from __future__ import annotations

__all__: list[str] = []
