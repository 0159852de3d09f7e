"""Bridges that bring other frameworks' runs onto the streamtap bus, live.

* :mod:`streamtap.bridges.langchain` -- a LangChain / LangGraph callback
  handler (extra ``streamtap[langchain]``).
* :mod:`streamtap.bridges.openai_agents` -- a tracing processor and a stream
  adapter for the OpenAI Agents SDK (extra ``streamtap[openai-agents]``).
* :mod:`streamtap.bridges.llama_index` -- an event and span handler for
  LlamaIndex's instrumentation dispatcher (extra ``streamtap[llama-index]``).

Each bridge turns the framework's runs into streamtap runs (with
:meth:`streamtap.ModuleBase.begin`), nested under the streamtap run current
where the framework was called, so they show in ``module.stream()``, on the
web page and in the trace. Each imports its framework only when used.
"""

from __future__ import annotations

__all__: list[str] = []
