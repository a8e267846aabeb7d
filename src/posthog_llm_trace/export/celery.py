"""Celery export (``export="celery"``): batches travel through the broker, a worker posts them.

The request path is the thread exporter's, unchanged: ``submit`` appends the finished trace to a
bounded queue and returns. The background thread renders and batches as usual; only the last
step differs: instead of an HTTP request to PostHog, each batch becomes one message for the task
``posthog_llm_trace.export_batch`` (JSON serializer, routed to ``settings.celery_queue``), which a
worker posts with its own settings (:mod:`posthog_llm_trace.celery` registers it). So the web
process never talks to PostHog, and the message never carries the API key: events do not contain
it, and the worker adds its own.

- The messages are published through connections of our own, one per export thread, opened
  lazily for the current pid (the application's producer pool is neither contended nor shared
  across a fork).
- A batch larger than ``MAX_MESSAGE_BYTES`` of JSON is split over several messages, so a batch of
  big generations stays well under the brokers' message size limits (RabbitMQ 4: 16 MiB).
- Broker unreachable: the batch falls back to HTTP from this process (what the thread exporter
  does), counted as ``celery_fallback`` and logged; the broker is tried again after
  ``BROKER_RETRY_AFTER`` seconds, so an outage costs one failed connection attempt per interval,
  not one per batch.
- Inside a Celery worker (the worker hooks say so), where events recorded by tasks are already
  off any request path, batches are posted directly instead of making a round trip through the
  broker: Django projects share one settings module between web and worker processes.

Counters (in ``stats()``): ``celery_published`` (events handed to the broker), ``celery_messages``
(the messages they travelled in), ``celery_fallback`` (events sent over HTTP because the broker
was unreachable). Events handed to the broker are
counted as ``sent`` by the worker that posts them, in its own process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..settings import Settings
from ..stats import Stats
from .base import Event, Render
from .http import HttpTransport
from .thread import BatchExporter, Transport
from .wire import pack

__all__ = [
    "BROKER_RETRY_AFTER",
    "EXPORT_TASK",
    "MAX_MESSAGE_BYTES",
    "CeleryExporter",
    "CeleryTransport",
    "in_worker",
    "mark_worker_process",
    "set_publisher_app",
]

logger = logging.getLogger("posthog_llm_trace")

#: The name of the worker task that posts one batch (registered by ``celery.instrument``).
EXPORT_TASK = "posthog_llm_trace.export_batch"
#: Largest message body we publish, in bytes of event JSON.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Seconds during which batches go straight to HTTP after the broker failed.
BROKER_RETRY_AFTER = 30.0
#: How hard one publish tries before the batch falls back to HTTP: a broker that does not
#: answer within about a second is treated as down.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0.0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}

_ENCODER = json.JSONEncoder(separators=(",", ":"))

# Process-wide state shared with ``posthog_llm_trace.celery``.
_state_lock = threading.Lock()
_publisher_app: Any = None
_in_worker = False


def set_publisher_app(app: Any) -> None:
    """Publish export batches through ``app`` (``celery.instrument`` calls this); None forgets
    it, and Celery's current app is used."""
    global _publisher_app
    with _state_lock:
        _publisher_app = app


def mark_worker_process(value: bool = True) -> None:
    """Tell the exporter that this process is a Celery worker (the worker hooks call this)."""
    global _in_worker
    _in_worker = value


def in_worker() -> bool:
    """Whether this process is a Celery worker."""
    return _in_worker


def _message_chunks(events: Sequence[Event]) -> tuple[list[list[Event]], list[Event]]:
    """``events`` in slices of at most ``MAX_MESSAGE_BYTES`` of JSON (a larger event alone),
    and the events that are not JSON at all (the core never makes any; counted, not sent)."""
    sized: list[tuple[Event, int]] = []
    invalid: list[Event] = []
    for event in events:
        try:
            sized.append((event, len(_ENCODER.encode(event))))
        except (TypeError, ValueError, RecursionError):
            invalid.append(event)
    return pack(sized, MAX_MESSAGE_BYTES), invalid


class CeleryTransport:
    """A transport (see :class:`~.thread.Transport`) that publishes each batch as a task message.

    ``fallback`` (default: an :class:`~.http.HttpTransport` for ``settings``) receives the events
    that could not be published, and every batch when running inside a worker.
    """

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        *,
        app: Any = None,
        fallback: Transport | None = None,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._app = app
        if fallback is None:
            from ..messages import shrink_event

            fallback = HttpTransport(settings, stats, shrink=shrink_event)
        self._fallback = fallback
        self._queue = settings.celery_queue
        self._down_until = 0.0
        self._warned = False
        # Kombu connections are not thread-safe and the exporter has several threads: each
        # thread publishes through a connection of its own (checked against the pid, so that a
        # forked child never uses its parent's). ``_open`` lists them all, for ``close``.
        self._local = threading.local()
        self._open_lock = threading.Lock()
        self._open: list[tuple[int, Any]] = []

    def __repr__(self) -> str:
        return f"CeleryTransport(queue={self._queue!r}, fallback={self._fallback!r})"

    # --- Transport

    def send(self, events: list[Event], deadline: float) -> bool:
        """Publish ``events`` to the broker; what cannot be published goes over HTTP."""
        if not events:
            return True
        if _in_worker:
            return self._fallback.send(events, deadline)
        chunks, invalid = _message_chunks(events)
        ok = True
        if invalid:  # the HTTP transport counts them as ``invalid``, with the reason
            ok = self._fallback.send(invalid, deadline) and False
        published = 0
        if chunks and time.monotonic() >= self._down_until:
            try:
                published = self._publish(chunks)
            except _PublishFailed as failed:
                published = failed.published
                self._broker_down(failed.cause)
        if published:
            self._stats.add("celery_published", published)
        rest = [event for chunk in chunks for event in chunk][published:]
        if not rest:
            return ok
        self._stats.add("celery_fallback", len(rest))
        return self._fallback.send(rest, deadline) and ok

    def abort(self, reason: str = "shutdown") -> None:
        abort = getattr(self._fallback, "abort", None)
        if abort is not None:
            abort(reason)

    def close(self) -> None:
        pid = os.getpid()
        with self._open_lock:
            mine = [connection for owner, connection in self._open if owner == pid]
            self._open = []
        for connection in mine:
            _release_quietly(connection)
        self._fallback.close()

    # --- publishing

    def _resolve_app(self) -> Any:
        app = self._app or _publisher_app
        if app is None:
            from celery import current_app

            app = current_app._get_current_object()
            if not self._warned:
                self._warned = True
                logger.info(
                    "posthog-llm-trace: export='celery' but posthog_llm_trace.celery.instrument"
                    "(app) was not called in this process; publishing through Celery's current app"
                )
        if not _warned_redelivery:
            warn_about_redis_redelivery(app)
        return app

    def _publish(self, chunks: list[list[Event]]) -> int:
        """Publish one message per chunk; returns how many events. Raises
        :class:`_PublishFailed` with the count published before the failure."""
        published = 0
        try:
            app = self._resolve_app()
            producer = self._producer_for(app)
            for chunk in chunks:
                app.send_task(
                    EXPORT_TASK,
                    args=[chunk],
                    queue=self._queue,
                    producer=producer,
                    serializer="json",
                    retry=True,
                    retry_policy=PUBLISH_RETRY_POLICY,
                    add_to_parent=False,
                    ignore_result=True,
                    # Celery would otherwise put a repr of the events (prompts included) in the
                    # message headers and the worker's log, and the repr costs more than the rest
                    # of the publish.
                    argsrepr=f"[<{len(chunk)} events>]",
                    kwargsrepr="{}",
                )
                published += len(chunk)
                self._stats.add("celery_messages")
        except Exception as exc:
            self._release()
            raise _PublishFailed(published, exc) from None
        return published

    def _producer_for(self, app: Any) -> Any:
        """This thread's producer, opening its connection on first use."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", 0) == pid and local.app is app and local.producer is not None:
            return local.producer
        if getattr(local, "pid", 0) == pid:
            self._release()  # the app changed (instrument() was called with another one)
        connection = app.connection_for_write(transport_options=self._transport_options(app))
        with self._open_lock:
            self._open.append((pid, connection))
        local.pid, local.app, local.connection = pid, app, connection
        local.producer = app.amqp.Producer(connection, auto_declare=True)
        return local.producer

    def _transport_options(self, app: Any) -> dict[str, Any]:
        """Kombu's Redis transport waits forever on a connection the broker silently lost
        (failover, NAT timeout) unless it has a socket timeout; our thread must not."""
        url = str(app.conf.broker_write_url or app.conf.broker_url or "")
        configured = app.conf.broker_transport_options or {}
        if url.startswith(("redis", "rediss", "sentinel")) and "socket_timeout" not in configured:
            return {"socket_timeout": self._settings.timeout}
        return {}

    def _release(self) -> None:
        """Forget this thread's connection (after an error: the next publish reconnects)."""
        local = self._local
        connection = getattr(local, "connection", None)
        local.connection = local.producer = None
        if connection is None or getattr(local, "pid", 0) != os.getpid():
            return
        with self._open_lock:
            self._open = [(pid, c) for pid, c in self._open if c is not connection]
        _release_quietly(connection)

    def _broker_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + BROKER_RETRY_AFTER
        try:
            where = self._resolve_app().connection_for_write().as_uri()  # password masked
        except Exception:
            where = "the broker"
        logger.warning(
            "posthog-llm-trace: could not publish to %s (%s); sending batches over HTTP from "
            "this process for the next %.0f s",
            where,
            type(exc).__name__,
            BROKER_RETRY_AFTER,
        )


#: Longest Redis ``visibility_timeout`` (seconds) we keep quiet about: an export batch held by a
#: worker that was killed comes back after that long.
REDELIVERY_WARN_AFTER = 600
_warned_redelivery = False


def warn_about_redis_redelivery(app: Any) -> None:
    """Say once per process, when export batches are first published through Redis, how late a
    batch held by a killed worker comes back. kombu's Redis transport has one
    ``visibility_timeout`` for every queue (an hour by default): it cannot be shortened for the
    export queue alone, and shortening it for all would start the application's longer tasks
    twice, so it is the application's call. RabbitMQ redelivers when the connection drops."""
    global _warned_redelivery
    _warned_redelivery = True
    try:
        conf = app.conf
        url = str(conf.broker_write_url or conf.broker_url or "")
        if url.split(":", 1)[0].lower() not in ("redis", "rediss", "sentinel"):
            return
        options = conf.broker_transport_options or {}
        timeout = float(options.get("visibility_timeout", 3600))
    except Exception:  # a warning must never stop a publish
        return
    if timeout > REDELIVERY_WARN_AFTER:
        logger.warning(
            "posthog-llm-trace: Celery on Redis redelivers an export batch held by a killed "
            "worker only after visibility_timeout=%.0f s; if your tasks finish sooner, set "
            "broker_transport_options={'visibility_timeout': %d} (or less) to have it back "
            "within minutes (PostHog deduplicates events sent twice).",
            timeout,
            REDELIVERY_WARN_AFTER,
        )


def _release_quietly(connection: Any) -> None:
    try:
        connection.release()
    except Exception as exc:  # a broken connection must not break the export thread
        logger.debug("posthog-llm-trace broker connection release: %s", type(exc).__name__)


class _PublishFailed(Exception):
    def __init__(self, published: int, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.published = published
        self.cause = cause


class CeleryExporter(BatchExporter):
    """The thread exporter whose batches are published to Celery (``export="celery"``)::

        exporter = CeleryExporter(render_item, settings, stats)
        exporter.submit(item)     # cheap: a queue append, as with the thread exporter

    ``app`` pins the Celery app to publish through (default: the app given to
    ``posthog_llm_trace.celery.instrument``, else Celery's current app).
    """

    def __init__(
        self,
        render: Render,
        settings: Settings,
        stats: Stats,
        *,
        app: Any = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            render, transport or CeleryTransport(settings, stats, app=app), settings, stats
        )
