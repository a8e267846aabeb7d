"""Local sinks: JSON lines for development (``console``, ``file``) and a list for tests
(``memory``). They render inline: they are for development, where simplicity beats latency.

A file written by the ``file`` sink can be sent to PostHog later, with the same delivery
guarantees as live export::

    python -m posthog_llm_trace replay posthog-llm-trace.jsonl
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from ..stats import Stats
from .base import Event, Render

__all__ = ["JsonLinesSink", "MemorySink"]


class JsonLinesSink:
    """Writes each event as one JSON line to ``path`` (appending), or to stderr when None."""

    def __init__(self, render: Render, stats: Stats, path: str | None = None) -> None:
        self._render = render
        self._stats = stats
        self._path = path
        self._lock = threading.Lock()

    def submit(self, item: Any) -> bool:
        events = self._render(item)
        self._stats.add("queued", len(events))
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
        try:
            with self._lock:
                if self._path is None:
                    sys.stderr.write(lines)
                    sys.stderr.flush()
                else:
                    with open(self._path, "a", encoding="utf-8") as f:
                        f.write(lines)
        except OSError as exc:
            self._stats.dropped("rejected", len(events), f"could not write events: {exc}")
            return False
        self._stats.add("sent", len(events))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True


class MemorySink:
    """Keeps every event in :attr:`events` (``export="memory"``)."""

    def __init__(self, render: Render, stats: Stats) -> None:
        self._render = render
        self._stats = stats
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def submit(self, item: Any) -> bool:
        events = self._render(item)
        self._stats.add("queued", len(events))
        with self._lock:
            self.events.extend(events)
        self._stats.add("sent", len(events))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True
