"""Delivery counters: what was queued, sent, retried, and dropped (by reason).

Nothing is dropped without being counted here and logged. The log is rate-limited (one warning
per ``LOG_EVERY`` seconds) but loses nothing: drops inside the window are summed, and a timer
logs the sum when the window ends, so that every drop is logged once, eventually, with its
reason -- also the last drops before a quiet period, and at exit (:meth:`Stats.flush_log`).
``stats()`` in the public API returns a snapshot of these counters.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator

from .threads import start_quiet

__all__ = ["DROP_REASONS", "Stats"]

logger = logging.getLogger("posthog_llm_trace")

#: Why an event was not delivered.
DROP_REASONS = (
    "queue_full",  # max_queue_size reached; newest events dropped
    "queue_bytes",  # max_queue_bytes reached; newest events dropped
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
        self._detail = ""  # the detail of the latest unlogged drop
        self._timer: threading.Timer | None = None
        self._held = 0  # held_logs() depth: drops are summed, not logged

    def add(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def count(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def dropped(self, reason: str, n: int = 1, detail: str = "") -> None:
        """Count ``n`` undelivered events and log, at most once every ``LOG_EVERY`` seconds;
        drops inside the window are logged together when it ends."""
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            key = "dropped_" + reason
            self._counts[key] = self._counts.get(key, 0) + n
            self._unlogged[reason] = self._unlogged.get(reason, 0) + n
            self._detail = detail
            if self._held:
                return
            wait = self._last_log + self.LOG_EVERY - now
            if self._last_log and wait > 0:
                if self._timer is None:
                    self._timer = self._start_timer(wait)
                return
            self._last_log = now
            pending, self._unlogged = self._unlogged, {}
            self._detail = ""
        _log(pending, detail)

    def _start_timer(self, wait: float) -> threading.Timer | None:
        # Called with the lock held.
        timer = threading.Timer(wait, self._deferred_log)
        timer.daemon = True
        try:
            start_quiet(timer)
        except RuntimeError:  # at interpreter exit; the exit flush logs what is left
            return None
        return timer

    def _deferred_log(self) -> None:
        with self._lock:
            self._timer = None
            if self._held or not self._unlogged:
                return
            self._last_log = time.monotonic()
            pending, self._unlogged = self._unlogged, {}
            detail, self._detail = self._detail, ""
        _log(pending, detail)

    @contextlib.contextmanager
    def held_logs(self) -> Iterator[None]:
        """Count drops without logging them (the caller logs once, then :meth:`flush_log`)."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    def flush_log(self, skip: str | None = None) -> None:
        """Log the drops not logged yet, now (at exit, at the end of a replay). ``skip``: a
        reason the caller has just logged itself."""
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
            detail, self._detail = self._detail, ""
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if skip is not None:
                pending.pop(skip, None)
            if pending:
                self._last_log = time.monotonic()
        if pending:
            _log(pending, detail if skip is None else "")

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


def _log(pending: dict[str, int], detail: str) -> None:
    summary = ", ".join(f"{count} {why}" for why, count in sorted(pending.items()))
    logger.warning(
        "posthog-llm-trace dropped events (%s)%s", summary, f": {detail}" if detail else ""
    )


_live: weakref.WeakSet[Stats] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for stats in list(_live):
        stats._reset()


def _flush_all_logs_at_exit() -> None:
    # Registered before the exporters' exit flush (this module is imported first), so it runs
    # after it: whatever the rate-limited log still owes is told, the timer being a daemon.
    for stats in list(_live):
        with contextlib.suppress(Exception):  # never let logging break interpreter exit
            stats.flush_log()


os.register_at_fork(after_in_child=_reset_all_after_fork)
atexit.register(_flush_all_logs_at_exit)
