"""Delivery counters: what was queued, sent, retried, and dropped (by reason).

Nothing is dropped without being counted here and logged (rate-limited). ``stats()`` in the
public API returns a snapshot of these counters.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref

__all__ = ["DROP_REASONS", "Stats"]

logger = logging.getLogger("posthog_llm_trace")

#: Why an event was not delivered.
DROP_REASONS = (
    "queue_full",  # max_queue_size reached; newest events dropped
    "rejected",  # the server answered a non-retryable 4xx (400, 401, ...)
    "too_large",  # one event still over the limit after truncation
    "retries_exhausted",  # network errors / 408 / 429 / 5xx outlasted max_retries
    "at_exit",  # still queued when the exit flush ran out of budget
    "shutdown",  # submitted after shutdown(), or left when shutdown() timed out
    "invalid",  # could not be turned into an event (a bug: please report it)
    # feedback() refused its input (see trace_feedback.py and the README's feedback section)
    "feedback_bad_trace_id",
    "feedback_bad_span_id",
    "feedback_bad_value",
    "feedback_bad_name",
    "feedback_bad_comment",
    "feedback_bad_token",
    "feedback_invalid",
)


class Stats:
    """Thread-safe counters. Increments are cheap; ``snapshot()`` copies them."""

    LOG_EVERY = 10.0  # seconds between two drop warnings

    def __init__(self) -> None:
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        # Also the after-fork path: another thread may have held the lock at the fork, and the
        # parent's counts describe the parent, not this process.
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_log = 0.0
        self._unlogged: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def dropped(self, reason: str, n: int = 1, detail: str = "") -> None:
        """Count ``n`` undelivered events and log, at most once every ``LOG_EVERY`` seconds."""
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            key = "dropped_" + reason
            self._counts[key] = self._counts.get(key, 0) + n
            self._unlogged[reason] = self._unlogged.get(reason, 0) + n
            if now - self._last_log < self.LOG_EVERY and self._last_log:
                return
            self._last_log = now
            pending, self._unlogged = self._unlogged, {}
        summary = ", ".join(f"{count} {why}" for why, count in sorted(pending.items()))
        logger.warning(
            "posthog-llm-trace dropped events (%s)%s", summary, f": {detail}" if detail else ""
        )

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._counts)
        for key in ("queued", "sent", "retried"):
            counts.setdefault(key, 0)
        counts["dropped"] = sum(v for k, v in counts.items() if k.startswith("dropped_"))
        return counts

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._unlogged.clear()


_live: weakref.WeakSet[Stats] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for stats in list(_live):
        stats._reset()


os.register_at_fork(after_in_child=_reset_all_after_fork)
