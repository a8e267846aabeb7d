"""Delivery through the application's own posthog-python client (``export="posthog"``).

For teams that want one client to govern everything: its ``before_send`` sees (and may change or
drop) every event we make, its ``disabled`` switch turns them off, and its queue, retries and
AI lane carry them. Our background thread still renders the events, so the request thread pays
what it pays with the default exporter; each rendered event is handed to
``client.capture()`` (``capture_ai()`` with the ``ai_endpoint`` setting).

What this mode gives up, compared with the default HTTP exporter: posthog-python drops an event
over its per-event limit instead of splitting a 413 batch, retries less, and does not tell us
what it dropped after accepting it (queue full, retries exhausted), so ``stats()`` counts an
event as ``sent`` once the client accepted it, and only a refusal (a disabled client,
``before_send`` returning None) as ``dropped_rejected``.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..settings import Settings
from ..stats import Stats
from .base import Event, Render
from .thread import BatchExporter

__all__ = ["PosthogExporter", "PosthogTransport", "delivering"]

logger = logging.getLogger("posthog_llm_trace")

#: True while we hand our own events to posthog-python, so that the bridge in
#: :mod:`..providers.posthog` lets them through instead of taking them back into a trace.
_delivering: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "posthog_llm_trace_delivering", default=False
)


def delivering() -> bool:
    """Whether the current capture is one of ours being delivered."""
    return _delivering.get()


@contextmanager
def _ours() -> Iterator[None]:
    token = _delivering.set(True)
    try:
        yield
    finally:
        _delivering.reset(token)


def posthog_client(settings: Settings) -> Any:
    """The client that delivers: the ``posthog_client`` setting, else posthog-python's
    module-level client (configured by ``posthog.api_key`` / ``posthog.host``)."""
    if settings.posthog_client is not None:
        return settings.posthog_client
    import posthog

    return posthog.setup()


class PosthogTransport:
    """Hands rendered events to a posthog-python client; see the module docstring."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self._settings = settings
        self._stats = stats
        self._closed = False

    def __repr__(self) -> str:
        return "PosthogTransport()"

    @property
    def client(self) -> Any:
        return posthog_client(self._settings)

    def send(self, events: list[Event], deadline: float) -> bool:
        if self._closed:
            self._stats.dropped("shutdown", len(events), "submitted after shutdown")
            return False
        try:
            client = self.client
        except Exception as exc:
            self._stats.dropped("rejected", len(events), f"no posthog client: {exc}")
            return False
        ai_lane = self._settings.ai_endpoint and callable(getattr(client, "capture_ai", None))
        sent = refused = 0
        with _ours():
            for event in events:
                capture = client.capture_ai if ai_lane else client.capture
                try:
                    accepted = capture(
                        event["event"],
                        distinct_id=event["distinct_id"],
                        properties=event["properties"],
                        timestamp=event.get("timestamp"),
                        uuid=event.get("uuid"),
                    )
                except Exception:  # posthog-python does not raise unless debug=True
                    accepted = None
                if accepted:
                    sent += 1
                else:
                    refused += 1
        self._stats.add("sent", sent)
        if refused:
            self._stats.dropped(
                "rejected", refused, "the posthog client refused them (disabled or before_send)"
            )
        return not refused

    def close(self) -> None:
        self._closed = True


class PosthogExporter(BatchExporter):
    """The batching exporter over :class:`PosthogTransport`: a flush also flushes the
    posthog-python client (within what is left of the timeout), so that ``flush()`` at the end
    of a serverless request or a Celery task means the same as with the default exporter. The
    client itself is the application's: it is never shut down here."""

    def __init__(self, render: Render, settings: Settings, stats: Stats) -> None:
        self._ph_transport = PosthogTransport(settings, stats)
        super().__init__(render, self._ph_transport, settings, stats, workers=1)

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._budget(timeout)
        done = super().flush(timeout)
        self._flush_client(deadline)
        return done

    def shutdown(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + self._budget(timeout)
        done = super().shutdown(timeout)
        self._flush_client(deadline)
        return done

    def _budget(self, timeout: float | None) -> float:
        return self._settings.shutdown_timeout if timeout is None else max(timeout, 0.0)

    def _flush_client(self, deadline: float) -> None:
        try:
            self._ph_transport.client.flush(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            logger.debug("posthog-llm-trace: the posthog client's flush failed: %s", exc)
