"""Replay a JSON-lines file of PostHog events (as the ``file`` export writes them) to PostHog.

``python -m posthog_llm_trace replay FILE`` calls :func:`replay`. Events are sent in batches of
``settings.flush_at`` through :class:`~posthog_llm_trace.export.http.HttpTransport`, with the same
retries, splitting and accounting as live export. Each event keeps its ``uuid``, so replaying a
file twice does not double-count in PostHog; a line without a uuid gets one derived from its
content for the same reason. Lines that are not a PostHog event are skipped and counted as
``invalid``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from .export.base import Event
from .export.http import HttpTransport, retry_budget
from .settings import Settings
from .stats import Stats

__all__ = ["replay"]

logger = logging.getLogger("posthog_llm_trace")

# Namespace of the uuids given to lines that have none: the same line always gets the same uuid.
_REPLAY_NAMESPACE = uuid.UUID("5f0c52e6-7a53-4c8e-9b61-0f3c8d2a9e41")


def replay(path: str, settings: Settings, stats: Stats) -> dict[str, int]:
    """Send the events of the JSON-lines file at ``path`` and return ``stats.snapshot()``.

    ``queued`` counts the events read, ``sent`` those PostHog accepted, ``dropped_invalid`` the
    lines skipped; other drops have the same reasons as live export."""
    transport = HttpTransport(settings, stats)
    budget = retry_budget(settings)
    batch: list[Event] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                event = _parse(line)
                if event is None:
                    stats.dropped("invalid", 1, f"{path}:{number} is not a PostHog event")
                    continue
                stats.add("queued")
                batch.append(event)
                if len(batch) >= settings.flush_at:
                    transport.send(batch, time.monotonic() + budget)
                    batch = []
        if batch:
            transport.send(batch, time.monotonic() + budget)
    finally:
        transport.close()
        stats.flush_log()  # the drops the rate-limited log has not told yet
    return stats.snapshot()


def _parse(line: str) -> Event | None:
    """The event on ``line``, or None when it is not one PostHog would ingest."""
    try:
        event: Any = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    name = event.get("event")
    properties = event.get("properties", {})
    if not isinstance(name, str) or not name or not isinstance(properties, dict):
        return None
    # PostHog answers 200 but silently drops an event without a distinct id: refuse it here.
    distinct_id = event.get("distinct_id", properties.get("distinct_id"))
    if distinct_id is None or str(distinct_id) == "":
        return None
    if not event.get("uuid"):
        event["uuid"] = str(uuid.uuid5(_REPLAY_NAMESPACE, line.strip()))
    return event
