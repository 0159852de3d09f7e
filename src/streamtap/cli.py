"""The ``streamtap`` command.

``streamtap demo``          the weather agent on the embedded model server, with the web page
``streamtap demo --terminal`` the same agent in the terminal (``output:`` / ``trace:`` lines)
``streamtap fake-openai``   the embedded OpenAI-compatible server alone
``streamtap record -- CMD`` record every run of a program (``-o FILE``)
``streamtap replay FILE``   replay a recording into the page, or ``--otlp`` into a trace backend
``streamtap serve TARGET``  serve a module on the web (``--redis URL``: shared through Redis)
``streamtap worker TARGET --redis URL`` run the requests of ``serve --redis`` web processes

Each sub-command lives with the feature it runs and is imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing as t

__all__ = ["main"]

# sub-command -> (module, function taking argv, help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("streamtap.demo", "main", "run the demo: a streaming weather agent with its web page and traces"),
    "fake-openai": ("streamtap.testing.fake_openai", "main", "run the embedded OpenAI-compatible model server"),
    "record": (
        "streamtap.replaying",
        "record_main",
        "record a program's runs as JSON lines: streamtap record -o FILE -- CMD...",
    ),
    "replay": (
        "streamtap.replaying",
        "replay_main",
        "replay a recording into the page (--speed) or over OTLP (--otlp)",
    ),
    "serve": (
        "streamtap.serving",
        "serve_main",
        "serve TARGET (package.module:attr) on the web; --redis URL to scale out",
    ),
    "worker": (
        "streamtap.serving",
        "worker_main",
        "run TARGET's requests from Redis (web processes started with serve --redis)",
    ),
}


def main(argv: t.Sequence[str] | None = None) -> int:
    """Run the ``streamtap`` command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="streamtap", description="streamtap command line")
    parser.add_argument(
        "command", choices=sorted(_COMMANDS), help="; ".join(f"{k}: {v[2]}" for k, v in _COMMANDS.items())
    )
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    ns, _rest = parser.parse_known_args(args[:1])
    module_name, func, _ = _COMMANDS[ns.command]
    fn = getattr(importlib.import_module(module_name), func)
    return int(fn(args[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
