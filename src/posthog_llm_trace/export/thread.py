"""The background batching exporter (``export="thread"``, the default).

The web request thread only appends the finished item to a queue; daemon worker threads render
items into PostHog events, batch them and hand each batch to the transport: threads started
lazily for the current pid, a ``submit()`` that says whether it accepted, a ``flush(timeout)``
that always returns, a sentinel to stop; batches by size or age, drops counted, deadlines passed
down to the transport.

Promises:

- ``submit`` never blocks on I/O and never raises: a tiny critical section (two integer updates
  and a deque append) keeps the bound exact across threads, and the worker is woken only when a
  batch becomes ready or the queue stops being empty.
- Memory is bounded, in events and in bytes: ``settings.max_queue_size`` counts every event the
  exporter holds, queued or in the workers' hands (rendered, being sent or waiting for a retry),
  and ``settings.max_queue_bytes`` bounds the estimated size of their content (``approx_bytes``
  of each item, see :mod:`..sizing`; a lone item larger than the whole budget is still taken
  when nothing else is held), so a long outage with 1 MB prompts cannot hold more than that.
  Past either bound, new items are refused and counted as ``queue_full`` or ``queue_bytes``. A
  batch takes at most ``BATCH_BYTES`` (and a quarter of ``max_queue_bytes``) of estimated
  content, so that the events and JSON a worker builds from it stay small too.
- ``flush(timeout)`` and ``shutdown(timeout)`` return within ``timeout`` whatever the server does;
  at shutdown whatever could not go out in time is counted (``shutdown``), and a request stuck on
  a hanging server is interrupted. An ``atexit`` hook does the same within
  ``settings.shutdown_timeout`` and logs how many events were left (``at_exit``).
- Fork-safe (gunicorn ``--preload``, Celery prefork): in a forked child every lock, the queue and
  the threads are replaced by fresh ones, even if another thread of the parent held the lock at
  the moment of the fork; the parent's pending events stay the parent's job and the child starts
  its own workers on its first submit. A worker that died (it should not) is restarted the same way.

Batches: a batch leaves when ``flush_at`` events are queued, or when the oldest queued event has
waited ``flush_interval``. When several full batches are queued (a burst, or PostHog slowing down)
they leave together, up to ``MAX_BATCH_EVENTS`` per request: with 100 ms to PostHog, requests of 20
events would cap the exporter at a few hundred events per second.

Two workers by default: while one waits for PostHog's answer (the GIL is released), the other
renders, serialises and compresses the next batch, so round trips overlap CPU work instead of
alternating with it (see ``bench/bench_export.py``). Each has its own keep-alive connection.
Events may therefore arrive slightly out of order, which PostHog does not mind (every event
carries its timestamp); a flush still waits for every batch taken before it, on either worker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Protocol

from ..jsonenc import lean
from ..settings import Settings
from ..stats import Stats
from ..threads import start_quiet
from .base import Render
from .http import retry_budget

__all__ = ["BATCH_BYTES", "MAX_BATCH_EVENTS", "BatchExporter", "Transport"]

logger = logging.getLogger("posthog_llm_trace")


class Transport(Protocol):
    """What the exporters need from a transport (:class:`~.http.HttpTransport` is one).

    ``send`` accounts for every event it is given (``sent`` or a drop) and never raises. A
    transport may also have ``abort(reason)``, to interrupt a send in progress, and
    ``encode(events)``, to serialise each trace's events as soon as they are mapped (what it
    returns is what ``send`` is then given)."""

    def send(self, events: list[Any], deadline: float) -> bool:
        """Deliver ``events`` before ``deadline`` (``time.monotonic()``); True if all went out."""
        ...

    def close(self) -> None:
        """Release connections; later sends are dropped."""
        ...


class _Flush:
    """A flush request travelling through the queue behind the items it waits for."""

    __slots__ = ("done", "failures", "ok")

    def __init__(self, failures: int) -> None:
        self.done = threading.Event()
        self.failures = failures
        self.ok = False


#: Most events one request carries when a backlog lets several batches leave together.
MAX_BATCH_EVENTS = 500
#: Most estimated content one batch takes (the transport's requests are at most 5 MiB of JSON).
BATCH_BYTES = 4 * 1024 * 1024
#: A record holding more content than this is encoded with the lean encoder (jsonenc.lean):
#: orjson's transient grows with the longest string, about eight times its length, not with
#: the batch (for many small events it is about twice the output).
LEAN_ITEM_BYTES = 256 * 1024
#: The estimate for an item that cannot tell its size.
DEFAULT_ITEM_BYTES = 1024

_STOP = object()  # the sentinel: stays at the head of the queue, so that every worker meets it
_CONTROL = -1  # the event count recorded with a control entry (_Flush or _STOP)
_NONE_IN_FLIGHT = float("inf")


class BatchExporter:
    """Batches items on a background thread and sends them through ``transport``.

    Construct one per process (the core does)::

        transport = HttpTransport(settings, stats, shrink=shrink_event)
        exporter = BatchExporter(render_item, transport, settings, stats)
        exporter.submit(item)       # from any thread; False means dropped (and counted)
        exporter.flush(2.0)         # e.g. at the end of a serverless request
        exporter.shutdown(5.0)      # stops; later submits are counted as ``shutdown`` drops
    """

    def __init__(
        self,
        render: Render,
        transport: Transport,
        settings: Settings,
        stats: Stats,
        *,
        workers: int = 2,
    ) -> None:
        self._workers = max(1, workers)
        self._render = render
        self._transport = transport
        self._settings = settings
        self._stats = stats
        self._max = settings.max_queue_size
        self._max_bytes = settings.max_queue_bytes
        # A batch's share of the byte budget: what the workers hold beyond it (rendered events,
        # their JSON) stays proportional to it.
        self._batch_bytes = max(1, min(BATCH_BYTES, self._max_bytes // 4))
        self._flush_at = settings.flush_at
        self._max_batch = max(settings.flush_at, MAX_BATCH_EVENTS)
        self._interval = settings.flush_interval
        self._closed = False
        self._init_state()
        _LIVE.add(self)

    def _init_state(self) -> None:
        # Per-process state; a forked child replaces all of it (see _after_fork_in_child).
        self._lock = threading.Lock()  # guards the counters below and the deque's contents
        self._start_lock = threading.Lock()  # guards starting the thread
        self._wake = threading.Event()
        # Entries are (item, event_count, approx_bytes), or (control, _CONTROL, 0).
        self._queue: deque[tuple[Any, int, int]] = deque()
        self._size = 0  # events held: queued or in the worker's hands (the bounded quantity)
        self._bytes = 0  # their estimated size, bounded the same way
        self._queued = 0  # events still in the deque
        self._controls = 0  # flush markers and the stop sentinel in the deque
        self._first_at = 0.0  # when the oldest queued event arrived
        self._failures = 0  # sends that did not fully succeed (for flush()'s answer)
        self._seq = 0  # number of the next batch a worker takes
        self._in_flight: set[int] = set()  # numbers of the batches being exported
        self._markers: list[tuple[int, _Flush]] = []  # flushes waiting for earlier batches
        self._threads: list[threading.Thread] = []
        self._thread_pid = 0  # pid the workers belong to; 0 when one is missing

    def __repr__(self) -> str:
        return (
            f"BatchExporter(pending={self._size}, max_queue_size={self._max}, "
            f"pending_bytes={self._bytes}, max_queue_bytes={self._max_bytes}, "
            f"transport={self._transport!r})"
        )

    # --- the request thread's side

    def submit(self, item: Any) -> bool:
        """Queue ``item`` for export. Cheap and never blocking; returns False (and counts the
        drop as ``queue_full``, ``queue_bytes`` or ``shutdown``) when it was not accepted.

        Every event handed over is counted as ``queued``, refused or not, so that at all times
        ``queued == sent + dropped + pending``."""
        stats = self._stats
        try:
            n = int(item.event_count)
        except Exception:
            stats.add("queued")
            stats.dropped("invalid", 1, "item without an event_count")
            return False
        if n <= 0:
            return True  # nothing to send
        stats.add("queued", n)
        try:
            nbytes: int = item.approx_bytes
        except Exception:
            nbytes = DEFAULT_ITEM_BYTES * n
        if self._closed:
            stats.dropped("shutdown", n, "submitted after shutdown")
            return False
        if self._thread_pid != os.getpid():  # first submit in this process, or a worker died
            self._ensure_threads()
        with self._lock:
            size = self._size + n
            held = self._bytes
            if size > self._max:
                refused = "queue_full"
            elif held + nbytes > self._max_bytes and held:
                refused = "queue_bytes"
            else:
                refused = ""
                self._size = size
                self._bytes = held + nbytes
                queued = self._queued
                if queued == 0:
                    self._first_at = time.monotonic()
                self._queued = queued + n
                self._queue.append((item, n, nbytes))
        if refused:
            if refused == "queue_full":
                detail = f"max_queue_size={self._max} reached"
            else:
                detail = f"max_queue_bytes={self._max_bytes} reached ({held} bytes held)"
            stats.dropped(refused, n, detail)
            return False
        # Wake the worker only when it has something new to do: start timing a partial batch,
        # or send a full one. Otherwise it is asleep until the partial batch is due.
        if queued == 0 or queued < self._flush_at <= queued + n:
            self._wake.set()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything submitted so far; return within ``timeout`` seconds (default
        ``settings.shutdown_timeout``). True if it all went out in time."""
        timeout = self._settings.shutdown_timeout if timeout is None else max(timeout, 0.0)
        if self._size == 0:
            return True
        if self._closed or not self._ensure_threads():
            return False
        marker = _Flush(self._failures)
        with self._lock:
            self._queue.append((marker, _CONTROL, 0))
            self._controls += 1
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``settings.shutdown_timeout``) and stop. What is left
        then is dropped and counted as ``shutdown``. True if everything went out."""
        left, ok = self._close(timeout, "shutdown")
        return ok and left == 0

    # --- stopping

    def _close(self, timeout: float | None, reason: str) -> tuple[int, bool]:
        """Stop within ``timeout``. Returns how many events were left undelivered for want of
        time (now counted as ``reason``), and whether every send during the stop succeeded."""
        timeout = self._settings.shutdown_timeout if timeout is None else max(timeout, 0.0)
        deadline = time.monotonic() + timeout
        with self._start_lock:
            if self._closed:
                return 0, self._size == 0
            self._closed = True
            threads = [t for t in self._threads if t.is_alive()]
        failures = self._failures
        left = 0
        if threads:
            with self._lock:
                self._queue.append((_STOP, _CONTROL, 0))
                self._controls += 1
            self._wake.set()
            # Keep a slice of the budget to interrupt requests stuck on the server and to let
            # the workers count what they held.
            grace = min(0.5, timeout * 0.2)
            _join(threads, deadline - grace)
            if any(t.is_alive() for t in threads):
                # Everything still held, queued or in flight, is now lost to the deadline; the
                # workers (through the aborted transport) or the drain below count each once.
                left = self._size
                abort = getattr(self._transport, "abort", None)
                if abort is not None:
                    abort(reason)
                _join(threads, deadline)
        elif self._queued:
            # No worker (it died, or threads can no longer start at interpreter exit): send what
            # is queued from this thread, within the same deadline.
            entries = self._take_all()
            self._export(entries, self._begin(), deadline)
        leftover = self._take_all()
        stranded = sum(entry[1] for entry in leftover)
        if stranded:
            left = max(left, stranded)
            with self._lock:
                self._size -= stranded
                self._bytes -= sum(entry[2] for entry in leftover)
            self._stats.dropped(reason, stranded, f"{reason} budget of {timeout:.1f} s ran out")
        try:
            self._transport.close()
        except Exception as exc:  # a transport must not break shutdown
            logger.debug("posthog-llm-trace transport close failed: %s", type(exc).__name__)
        return left, self._failures == failures and self._size == 0

    def _exit_flush(self) -> None:
        """The atexit hook's work: a bounded flush, and one log line if events were left.

        The line gives the number the counters give: drops during the stop are held back from
        the rate-limited drop log and told once here, with whatever that log still owed."""
        if self._closed:
            return
        budget = self._settings.shutdown_timeout
        stats = self._stats
        before = stats.count("dropped_at_exit")
        with stats.held_logs():
            self._close(budget, "at_exit")
        left = stats.count("dropped_at_exit") - before
        if left > 0:
            logger.warning(
                "posthog-llm-trace: %d events were not delivered at exit "
                "(shutdown_timeout=%.1f s ran out)",
                left,
                budget,
            )
            stats.flush_log(skip="at_exit")
        else:
            stats.flush_log()

    # --- the worker

    def _ensure_threads(self) -> bool:
        """Start the missing workers of this process. False if none can run."""
        pid = os.getpid()
        with self._start_lock:
            if self._thread_pid == pid:
                return True
            if self._closed:
                return False
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._run, name="posthog-llm-trace-export", daemon=True
                )
                try:
                    start_quiet(thread)
                except RuntimeError:  # "can't create new thread at interpreter shutdown"
                    break
                self._threads.append(thread)
            if len(self._threads) == self._workers:
                self._thread_pid = pid
            return bool(self._threads)

    def _run(self) -> None:
        try:
            while True:
                self._wait_for_work()
                entries, seq, control = self._take()
                if self._queued >= self._flush_at:
                    self._wake.set()  # a backlog: let another worker take the next batch
                if entries:
                    self._export(entries, seq, None)
                if control is _STOP:
                    return
        except BaseException as exc:
            # Never expected; the next submit (or flush) starts a new worker.
            logger.error("posthog-llm-trace export thread stopped: %s", type(exc).__name__)
        finally:
            with self._start_lock:
                current = threading.current_thread()
                if current in self._threads:
                    self._threads.remove(current)
                    self._thread_pid = 0

    def _wait_for_work(self) -> None:
        while True:
            # Clear before looking, so that a wake-up arriving after the look is not lost.
            self._wake.clear()
            with self._lock:
                queued, controls, first_at = self._queued, self._controls, self._first_at
            if controls or queued >= self._flush_at:
                return
            timeout = None
            if queued:
                timeout = first_at + self._interval - time.monotonic()
                if timeout <= 0:
                    return
            self._wake.wait(timeout)

    def _take(self) -> tuple[list[tuple[Any, int, int]], int, object]:
        """The next batch from the queue, stopping at a control entry.

        Full batches of ``flush_at`` go out at once; when several are queued (a backlog) they
        leave together, up to ``max_batch`` events, so that one round trip carries more events
        when it matters: at 100 ms to PostHog, batches of 20 would cap a worker at 200 events/s.
        A partial batch goes out whole once it is due (or a flush / stop waits behind it)."""
        entries: list[tuple[Any, int, int]] = []
        control: object = None
        events = 0
        nbytes = 0
        with self._lock:
            queued = self._queued
            due = self._controls > 0 or time.monotonic() >= self._first_at + self._interval
            if due:
                limit = self._max_batch
            else:
                limit = min(queued, self._max_batch) // self._flush_at * self._flush_at
            queue = self._queue
            while queue:
                entry = queue[0]
                if entry[1] == _CONTROL:
                    control = entry[0]
                    if control is not _STOP:  # the stop sentinel stays for the other workers
                        queue.popleft()
                        self._controls -= 1
                    break
                if entries and (events + entry[1] > limit or nbytes + entry[2] > self._batch_bytes):
                    break
                if events >= limit:
                    break
                queue.popleft()
                entries.append(entry)
                events += entry[1]
                nbytes += entry[2]
            self._queued = queued - events
            # Number the batch and register a flush in the same critical section, so that a
            # flush taken by another worker an instant later already sees this batch in flight.
            seq = self._seq
            if entries:
                self._seq += 1
                self._in_flight.add(seq)
            ready: list[_Flush] = []
            if isinstance(control, _Flush):
                self._markers.append((self._seq, control))
                ready = self._ready_markers()
        _complete(ready, self._failures)
        return entries, seq, control

    def _take_all(self) -> list[tuple[Any, int, int]]:
        with self._lock:
            entries = [entry for entry in self._queue if entry[1] != _CONTROL]
            self._queue.clear()
            self._queued = 0
            self._controls = 0
        return entries

    def _begin(self) -> int:
        """Number a batch exported outside :meth:`_take` (the inline drain at exit)."""
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._in_flight.add(seq)
        return seq

    def _ready_markers(self) -> list[_Flush]:
        # Called with the lock held. A flush registered as number s waits for the batches
        # numbered below s; it is ready when every batch still in flight was taken after it.
        oldest = min(self._in_flight, default=_NONE_IN_FLIGHT)
        ready = [marker for seq, marker in self._markers if seq <= oldest]
        if ready:
            self._markers = [(seq, m) for seq, m in self._markers if seq > oldest]
        return ready

    def _export(
        self, entries: list[tuple[Any, int, int]], seq: int, deadline: float | None
    ) -> None:
        """Render and send ``entries``; every event ends up sent or counted as dropped."""
        held = sum(entry[1] for entry in entries)
        held_bytes = sum(entry[2] for entry in entries)
        events: list[Any] = []
        sent_upto = 0  # events[:sent_upto] are accounted for by the transport
        failed = False
        encode = getattr(self._transport, "encode", None)
        large = any(entry[2] > LEAN_ITEM_BYTES for entry in entries)
        try:
            for item, n, nbytes in entries:
                try:
                    rendered: list[Any] = self._render(item)
                    if encode is not None:
                        # Each trace's events as JSON at once, so that only bytes wait for the
                        # round trip (see http.Encoded); large content without orjson's buffer.
                        with lean() if nbytes > LEAN_ITEM_BYTES else contextlib.nullcontext():
                            rendered = encode(rendered)
                except Exception as exc:  # the core promises render never raises
                    self._stats.dropped("invalid", n, f"render failed: {type(exc).__name__}")
                    continue
                events.extend(rendered)
            # The records are no longer needed: let their content go while the events go.
            entries.clear()
            step = self._max_batch
            # A transport that encodes as it sends does so for large content without orjson's
            # buffer too.
            with lean() if encode is None and large else contextlib.nullcontext():
                for start in range(0, len(events), step):
                    batch = events[start : start + step]
                    until = deadline
                    if until is None:
                        until = time.monotonic() + retry_budget(self._settings)
                    try:
                        ok = self._transport.send(batch, until)
                    except Exception as exc:  # a transport must not kill the worker
                        reason = f"transport {type(exc).__name__}"
                        self._stats.dropped("invalid", len(batch), reason)
                        ok = False
                    sent_upto = start + len(batch)
                    failed = failed or not ok
        except BaseException:
            # The thread is dying (SystemExit, KeyboardInterrupt...): no event leaves uncounted.
            self._stats.dropped("invalid", len(events) - sent_upto, "export thread stopped")
            failed = True
            raise
        finally:
            with self._lock:
                self._size -= held
                self._bytes -= held_bytes
                if failed:
                    self._failures += 1
                self._in_flight.discard(seq)
                ready = self._ready_markers()
            _complete(ready, self._failures)

    def _after_fork_in_child(self) -> None:
        # The parent's locks may be held by a thread that does not exist here, its queue is the
        # parent's to deliver, and its thread is gone: start from scratch.
        self._init_state()


def _complete(markers: list[_Flush], failures: int) -> None:
    for marker in markers:
        marker.ok = failures == marker.failures
        marker.done.set()


def _join(threads: list[threading.Thread], deadline: float) -> None:
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))


# --- process-wide hooks, holding exporters weakly so that they can be garbage collected.

_LIVE: weakref.WeakSet[BatchExporter] = weakref.WeakSet()


def _reinit_all_after_fork() -> None:
    for exporter in list(_LIVE):
        exporter._after_fork_in_child()


def _flush_all_at_exit() -> None:
    for exporter in list(_LIVE):
        try:
            exporter._exit_flush()
        except Exception as exc:  # never let an exporter break interpreter exit
            logger.debug("posthog-llm-trace exit flush failed: %s", type(exc).__name__)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_all_after_fork)
atexit.register(_flush_all_at_exit)
