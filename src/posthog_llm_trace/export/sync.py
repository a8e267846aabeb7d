"""The inline exporter (``export="sync"``): for scripts, cron jobs and serverless functions.

Each submitted item is rendered and sent on the caller's thread, bounded by ``settings.timeout``
in total (retries included), so that nothing is left in memory when the function returns and a
dead PostHog cannot hold the caller longer than that.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..settings import Settings
from ..stats import Stats
from .base import Event, Render
from .thread import Transport

__all__ = ["SyncExporter"]

logger = logging.getLogger("posthog_llm_trace")


class SyncExporter:
    """Renders and sends every item inline, within ``settings.timeout`` seconds.

    ::

        exporter = SyncExporter(render_item, HttpTransport(settings, stats), settings, stats)
        exporter.submit(item)   # returns once the events are delivered or counted as dropped
    """

    def __init__(
        self, render: Render, transport: Transport, settings: Settings, stats: Stats
    ) -> None:
        self._render = render
        self._transport = transport
        self._settings = settings
        self._stats = stats
        self._closed = False

    def __repr__(self) -> str:
        return f"SyncExporter(transport={self._transport!r})"

    def submit(self, item: Any) -> bool:
        """Render and send ``item`` now. True if every event was delivered; never raises."""
        try:
            n = int(item.event_count)
        except Exception:
            self._stats.add("queued")
            self._stats.dropped("invalid", 1, "item without an event_count")
            return False
        # Counted before anything can refuse it: queued == sent + dropped (+ pending).
        self._stats.add("queued", n)
        if self._closed:
            self._stats.dropped("shutdown", n, "submitted after shutdown")
            return False
        deadline = time.monotonic() + self._settings.timeout
        try:
            events: list[Event] = list(self._render(item))
        except Exception as exc:  # the core promises render never raises; count it anyway
            self._stats.dropped("invalid", n, f"render failed: {type(exc).__name__}")
            return False
        try:
            return self._transport.send(events, deadline)
        except Exception as exc:  # a transport must not raise into the application
            self._stats.dropped("invalid", len(events), f"transport {type(exc).__name__}")
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is ever pending: True."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Close the transport; later submits are counted as ``shutdown`` drops."""
        self._closed = True
        try:
            self._transport.close()
        except Exception as exc:
            logger.debug("posthog-llm-trace transport close failed: %s", type(exc).__name__)
        return True
