"""Command line: ``python -m posthog_llm_trace`` (or the ``posthog-llm-trace`` script).

``settings-table``
    Print the Markdown table of every setting (the README's table is this output).
``replay FILE [--host HOST] [--api-key KEY]``
    Send a JSON-lines file of events, as the ``file`` export writes them, to PostHog. The key and
    host default to the environment (``POSTHOG_API_KEY``, ``POSTHOG_HOST``). Prints the counts;
    the exit status is 1 if any event was not delivered, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .settings import ConfigurationError, Layer, build_settings, settings_table
from .stats import Stats

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m posthog_llm_trace",
        description="posthog-llm-trace utilities.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("settings-table", help="print the Markdown table of every setting")
    replay = commands.add_parser(
        "replay", help="send a JSON-lines file of events (the 'file' export's output) to PostHog"
    )
    replay.add_argument("file", help="the JSON-lines file to send")
    replay.add_argument("--host", help="PostHog host (default: POSTHOG_HOST, else US cloud)")
    replay.add_argument("--api-key", help="project API key (default: POSTHOG_API_KEY)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script's entry point)."""
    args = _parser().parse_args(argv)
    if args.command == "settings-table":
        print(settings_table())
        return 0
    return _replay(args.file, host=args.host, api_key=args.api_key)


def _replay(path: str, *, host: str | None, api_key: str | None) -> int:
    values: dict[str, Any] = {}
    if host is not None:
        values["host"] = host
    if api_key is not None:
        values["api_key"] = api_key
    try:
        settings = build_settings(Layer(values))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.api_key:
        print("error: no API key: pass --api-key or set POSTHOG_API_KEY", file=sys.stderr)
        return 2
    if not os.path.isfile(path):
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2

    from .replay import replay  # the HTTP transport is loaded only for this command

    counts = replay(path, settings, Stats())
    for name in sorted(counts):
        print(f"{name}: {counts[name]}")
    return 1 if counts.get("dropped", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
