"""Celery integration: LLM traces that follow your tasks, and export through your workers.

Features:

- **Trace propagation.** A task published while a trace is open (``delay``, ``apply_async``,
  ``send_task``, chains, groups and chords) runs on the worker as a span of that trace: every
  generation, tool and span recorded inside the task appears in PostHog under the request that
  started it, with the request's ``distinct_id`` and ``$ai_session_id``. The task's span is named
  after the task (kind ``workflow``) and its parent is the span that was open when the task was
  published. The sampling decision travels too: a task started from an unsampled trace records
  nothing.
- **Tasks of their own.** A task started outside any trace (beat, a script, another service)
  opens a trace of its own, named after the task, which becomes a ``$ai_trace`` event.
- **Nothing recorded, nothing sent.** A task that records no span exports nothing: instrumenting
  an app does not turn every e-mail task into an LLM trace. A task that fails inside a request's
  trace is still shown there, marked failed.
- **Failures.** A task that raises (or retries) marks its span failed (``$ai_is_error``,
  ``$ai_error``); the exception propagates to Celery unchanged.
- **Flushed per task.** A worker sends the events of each task when the task ends, bounded by
  the ``timeout`` setting (after a delivery that did not complete in time, tasks stop waiting
  for ``FLUSH_PAUSE`` seconds, so a PostHog outage does not slow every task down), and flushes
  once more when a pool process exits (bounded by ``shutdown_timeout``): prefork children leave
  through ``os._exit``, which skips ``atexit``. Works with the prefork, solo and threads pools;
  forked children start fresh.
- **Export offload** (``export="celery"``). The web process publishes each batch of events as
  one message for the task ``posthog_llm_trace.export_batch`` (JSON, routed to the
  ``celery_queue`` setting); a worker posts it to PostHog with *its own* API key: the key never
  travels through the broker. The task is acknowledged late and rejected when its worker is lost,
  so a worker killed mid-export loses nothing (events carry stable uuids, so a redelivered batch
  is deduplicated); a failed post is retried by Celery with exponential backoff and jitter, up to
  ``EXPORT_MAX_RETRIES`` times. If the broker is unreachable, the web process sends the batches
  over HTTP itself (counted as ``celery_fallback`` in ``stats()``).

Usage, in the module that builds your Celery app (``proj/celery.py``)::

    from celery import Celery
    from posthog_llm_trace.celery import instrument

    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    instrument(app)

``instrument(app)`` is idempotent. ``uninstrument()`` stops propagation and the worker hooks
(the export task stays registered so batches already queued are still delivered), and
``shutdown(timeout)`` flushes pending events, then uninstruments; both are idempotent.

Properties set on a task's span: ``celery_task_id``, ``celery_task_name``, ``celery_retries``
and, when it failed, ``celery_state`` (``FAILURE`` or ``RETRY``).

Headers written on every task message published inside a trace (top level, and again in the
nested ``headers`` dict that some Celery versions keep instead, celery#4875):
``posthog_llm_trace_id``, ``posthog_llm_parent_id``, ``posthog_llm_distinct_id``,
``posthog_llm_session_id`` and ``posthog_llm_sampled``.

Instrumentation never breaks a task: every signal handler catches and logs its own errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import context
from .client import Client, get_client
from .client import flush as _flush_all
from .export.celery import (
    EXPORT_TASK,
    in_worker,
    mark_worker_process,
    set_publisher_app,
)
from .export.http import HttpTransport
from .spans import ErrorInfo, Span, Trace
from .stats import Stats

__all__ = [
    "EXPORT_MAX_RETRIES",
    "EXPORT_TASK",
    "HEADERS",
    "TASK_SPAN_KIND",
    "instrument",
    "shutdown",
    "trace_headers",
    "uninstrument",
]

logger = logging.getLogger("posthog_llm_trace")

#: Kind of the span a task runs as.
TASK_SPAN_KIND = "workflow"
#: Celery retries of one export batch before its events are counted as dropped.
EXPORT_MAX_RETRIES = 10
#: Backoff of those retries: ``min(BASE * 2**n, MAX)`` seconds, with jitter.
EXPORT_BACKOFF_BASE = 2.0
EXPORT_BACKOFF_MAX = 300.0

H_TRACE = "posthog_llm_trace_id"
H_PARENT = "posthog_llm_parent_id"
H_DISTINCT = "posthog_llm_distinct_id"
H_SESSION = "posthog_llm_session_id"
H_SAMPLED = "posthog_llm_sampled"
#: Every header this integration writes.
HEADERS = (H_TRACE, H_PARENT, H_DISTINCT, H_SESSION, H_SAMPLED)

#: Seconds during which tasks do not wait for their events to be delivered, after a task's
#: delivery did not complete within ``timeout``.
FLUSH_PAUSE = 30.0

_FAILED_STATES = frozenset({"FAILURE", "RETRY"})
_wait_again_at = 0.0

_lock = threading.RLock()
_apps: weakref.WeakSet[Any] = weakref.WeakSet()  # apps the export task is registered on
_connected = False


# --- public API ---------------------------------------------------------------------------------


def instrument(celery_app: Any) -> None:
    """Register the export task on ``celery_app``, propagate traces into its tasks and install
    the worker hooks. Idempotent; call it where the app is built. Export batches are published
    through the app instrumented last."""
    global _connected
    with _lock:
        if celery_app not in _apps:
            _register_export_task(celery_app)
            _apps.add(celery_app)
        set_publisher_app(celery_app)
        if not _connected:
            _connect()
            _connected = True


def uninstrument() -> None:
    """Stop propagating traces and disconnect the worker hooks. Idempotent. The export task
    stays registered, so batches already in the broker are still delivered."""
    global _connected
    with _lock:
        if _connected:
            _disconnect()
            _connected = False
        set_publisher_app(None)


def shutdown(timeout: float | None = None) -> bool:
    """Flush pending events within ``timeout`` seconds (default: the ``shutdown_timeout``
    setting), then :func:`uninstrument`. Idempotent; True if nothing was left."""
    if timeout is None:
        timeout = get_client().settings.shutdown_timeout
    try:
        done = _flush_all(timeout)
    finally:
        uninstrument()
    return done


# --- signal wiring ------------------------------------------------------------------------------


def _signals() -> list[tuple[Any, Any]]:
    from celery import signals

    return [
        (signals.before_task_publish, _on_before_task_publish),
        (signals.task_prerun, _on_task_prerun),
        (signals.task_postrun, _on_task_postrun),
        (signals.task_failure, _on_task_failure),
        (signals.worker_init, _on_worker_init),
        (signals.worker_process_init, _on_worker_process_init),
        (signals.worker_process_shutdown, _on_worker_process_shutdown),
        (signals.worker_shutdown, _on_worker_shutdown),
    ]


def _connect() -> None:
    for signal, handler in _signals():
        signal.connect(handler, weak=False, dispatch_uid=f"posthog_llm_trace.{handler.__name__}")


def _disconnect() -> None:
    for signal, handler in _signals():
        signal.disconnect(handler, dispatch_uid=f"posthog_llm_trace.{handler.__name__}")


# --- propagation: the publishing side -----------------------------------------------------------


def trace_headers(node: Trace | Span | None) -> dict[str, str]:
    """The headers that carry ``node``'s trace into a task, ``node`` becoming the parent of the
    task's span; empty when there is no open trace."""
    if node is None or node.trace.ended:
        return {}
    trace = node.trace
    trace.resolve_identity()  # a view publishing a task: the user is known before the end
    parent = node.id if isinstance(node, Span) else (trace.parent_id or trace.id)
    values = {H_TRACE: trace.id, H_PARENT: parent, H_SAMPLED: "1" if trace.sampled else "0"}
    if trace.distinct_id is not None:
        values[H_DISTINCT] = trace.distinct_id
    if trace.session_id is not None:
        values[H_SESSION] = trace.session_id
    return values


def _on_before_task_publish(
    sender: Any = None, headers: dict[str, Any] | None = None, **kwargs: Any
) -> None:
    try:
        if sender == EXPORT_TASK or not isinstance(headers, dict):
            return
        scope = _current_scope.get()
        if scope is not None and headers.get("id") == scope.task_id and H_TRACE in headers:
            # A retry of the running task: its attempts stay siblings under the original parent.
            return
        node = context.current_node()
        values = trace_headers(node)
        if not values:
            return
        if scope is not None and node is not None and node.trace is scope.span.trace:
            # The running task started another: its span must be exported for the child's
            # span to have a parent, even if it records nothing itself.
            scope.started_tasks = True
        headers.update(values)
        nested = headers.get("headers")
        if not isinstance(nested, dict):
            nested = headers["headers"] = {}
        nested.update(values)
    except Exception:
        logger.exception("posthog-llm-trace: could not add trace headers to a task")


# --- the worker side: each task runs as a span ----------------------------------------------------


@dataclass
class _Carried:
    trace_id: str | None = None
    parent_id: str | None = None
    distinct_id: str | None = None
    session_id: str | None = None
    sampled: bool | None = None


def _read_carried(request: Any) -> _Carried:
    """Our headers from a task request: attributes first (protocol 2 puts message headers
    there), then the nested ``headers`` dict (celery#4875)."""
    sources: list[Mapping[str, Any]] = []
    nested = getattr(request, "headers", None)
    if isinstance(nested, Mapping):
        sources.append(nested)
        inner = nested.get("headers")
        if isinstance(inner, Mapping):
            sources.append(inner)

    def get(name: str) -> str | None:
        value = getattr(request, name, None)
        for source in sources:
            if value is not None:
                break
            value = source.get(name)
        return None if value is None else str(value)

    sampled = get(H_SAMPLED)
    return _Carried(
        trace_id=get(H_TRACE),
        parent_id=get(H_PARENT),
        distinct_id=get(H_DISTINCT),
        session_id=get(H_SESSION),
        sampled=None if sampled is None else sampled not in ("0", "false", "False"),
    )


@dataclass
class _TaskScope:
    """What a running task opened, undone when it ends."""

    task_id: str
    span: Span
    span_token: Any
    span_previous: Any
    trace: Trace | None  # the trace the task opened (None: it runs inside an existing one)
    trace_token: Any
    trace_previous: Any
    carried: bool  # part of a trace started in another process
    eager: bool
    scope_token: Any = None
    started_tasks: bool = False  # published a task inside its trace


# The running task of this thread (or task); the stack of scopes by task id is for postrun,
# which Celery may call with a context other than prerun's (it never does today).
_current_scope: contextvars.ContextVar[_TaskScope | None] = contextvars.ContextVar(
    "posthog_llm_trace_celery_task", default=None
)
_scopes: dict[str, list[_TaskScope]] = {}
_scopes_lock = threading.Lock()


def _on_task_prerun(
    sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any
) -> None:
    try:
        if task is None or getattr(task, "name", None) == EXPORT_TASK:
            return
        _start_task(task, str(task_id or getattr(task.request, "id", "") or ""))
    except Exception:
        logger.exception("posthog-llm-trace: could not open the span of a task")


def _start_task(task: Any, task_id: str) -> None:
    request = task.request
    name = str(getattr(task, "name", None) or "celery-task")
    eager = bool(getattr(request, "is_eager", False))
    node = context.current_node()
    opened: Trace | None = None
    carried = False
    trace_token = trace_previous = None
    if node is None or node.trace.ended:
        headers = _read_carried(request)
        if headers.trace_id:
            carried = True
            opened = Trace(
                name,
                trace_id=headers.trace_id,
                parent_id=headers.parent_id,
                sampled=headers.sampled,
                distinct_id=headers.distinct_id,
                session_id=headers.session_id,
                emit_trace_event=False,
            )
        else:
            opened = Trace(name)
        trace_previous = node
        trace_token = context.activate(opened)
    # else: an eager task (task_always_eager, apply()) runs inside the caller's trace.
    span = Span(
        name,
        kind=TASK_SPAN_KIND,
        properties={
            "celery_task_id": task_id,
            "celery_task_name": name,
            "celery_retries": int(getattr(request, "retries", 0) or 0),
        },
    )
    span.start()
    span_previous = context.current_node()
    span_token = context.activate(span)
    scope = _TaskScope(
        task_id=task_id,
        span=span,
        span_token=span_token,
        span_previous=span_previous,
        trace=opened,
        trace_token=trace_token,
        trace_previous=trace_previous,
        carried=carried,
        eager=eager,
    )
    scope.scope_token = _current_scope.set(scope)
    with _scopes_lock:
        _scopes.setdefault(task_id, []).append(scope)


def _on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    **kwargs: Any,
) -> None:
    try:
        scope = _peek_scope(str(task_id or ""))
        if scope is not None and exception is not None:
            scope.span.set_error(exception)
    except Exception:
        logger.exception("posthog-llm-trace: could not mark a task span failed")


def _on_task_postrun(
    sender: Any = None,
    task_id: str | None = None,
    task: Any = None,
    retval: Any = None,
    state: str | None = None,
    **kwargs: Any,
) -> None:
    try:
        scope = _pop_scope(str(task_id or ""))
        if scope is None:
            return
        _end_task(scope, retval, state)
    except Exception:
        logger.exception("posthog-llm-trace: could not close the span of a task")


def _end_task(scope: _TaskScope, retval: Any, state: str | None) -> None:
    span = scope.span
    failed = state in _FAILED_STATES
    if failed:
        span.set_property("celery_state", state)
        if span.error is None:
            span.set_error(
                retval if isinstance(retval, BaseException) else ErrorInfo(str(state), repr(retval))
            )
    context.restore(scope.span_token, scope.span_previous)
    with contextlib.suppress(ValueError):  # a token of another context: nothing to undo
        _current_scope.reset(scope.scope_token)
    trace = span.trace
    if (
        scope.trace is None
        or scope.started_tasks
        or _recorded(scope.trace)
        or (failed and scope.carried)
    ):
        span.end()
    if scope.trace is not None:
        context.restore(scope.trace_token, scope.trace_previous)
        scope.trace.end()
    if in_worker() and not scope.eager and trace.recording:
        _deliver_now(trace.client)


def _deliver_now(client: Client) -> None:
    """Send the task's events before the worker takes the next task, within ``timeout``. When
    that fails (PostHog down or slow), later tasks stop waiting for a while: an outage must not
    slow every task down; their events still go out in the background, and at exit."""
    global _wait_again_at
    if time.monotonic() < _wait_again_at:
        return
    timeout = client.settings.timeout
    if not client.flush(timeout=timeout):
        _wait_again_at = time.monotonic() + FLUSH_PAUSE
        logger.warning(
            "posthog-llm-trace: a task's events were not delivered within %.1f s; tasks do not "
            "wait for delivery for the next %.0f s",
            timeout,
            FLUSH_PAUSE,
        )


def _recorded(trace: Trace) -> bool:
    """Whether any span was recorded in ``trace`` (which the task opened, so every span in it is
    the task's)."""
    # Read without the trace's lock: only this thread ends spans of a task's own trace, apart
    # from threads the task started, and a stale answer only decides whether an empty task
    # span is exported.
    return bool(trace._spans) or trace._had_children


def _peek_scope(task_id: str) -> _TaskScope | None:
    with _scopes_lock:
        stack = _scopes.get(task_id)
        return stack[-1] if stack else None


def _pop_scope(task_id: str) -> _TaskScope | None:
    with _scopes_lock:
        stack = _scopes.get(task_id)
        if not stack:
            return None
        scope = stack.pop()
        if not stack:
            del _scopes[task_id]
        return scope


# --- worker lifecycle ----------------------------------------------------------------------------


def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    try:
        mark_worker_process()
    except Exception:
        logger.exception("posthog-llm-trace: worker_init hook failed")


def _on_worker_process_init(sender: Any = None, **kwargs: Any) -> None:
    # A prefork child. The delivery layer rebuilds its own state after a fork; what is ours to
    # reset is the scope table, whose lock another thread of the parent may have held.
    global _scopes_lock, _scopes
    try:
        mark_worker_process()
        _scopes_lock = threading.Lock()
        _scopes = {}
    except Exception:
        logger.exception("posthog-llm-trace: worker_process_init hook failed")


def _exit_flush() -> None:
    timeout = get_client().settings.shutdown_timeout
    if not _flush_all(timeout):
        logger.warning(
            "posthog-llm-trace: some events were not delivered before the worker process "
            "exited (shutdown_timeout=%.1f s)",
            timeout,
        )


def _on_worker_process_shutdown(sender: Any = None, **kwargs: Any) -> None:
    # Prefork children leave through os._exit: atexit hooks never run, so flush here.
    try:
        _exit_flush()
    except Exception:
        logger.exception("posthog-llm-trace: worker_process_shutdown hook failed")


def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    # The solo and threads pools run tasks in the main process.
    try:
        _exit_flush()
    except Exception:
        logger.exception("posthog-llm-trace: worker_shutdown hook failed")


# --- the export task -----------------------------------------------------------------------------


class ExportFailed(Exception):
    """A batch could not be posted this time; Celery retries the task."""


#: Drop reasons the worker retries through Celery instead of counting them.
_RETRYABLE = frozenset({"retries_exhausted", "shutdown", "at_exit"})


class _TaskStats(Stats):
    """The client's counters, except that retryable drops of the send in progress (in this
    thread) are held back, so the task can retry them instead of counting them as lost."""

    def __init__(self, target: Stats) -> None:
        super().__init__()
        self._target = target
        self._local = threading.local()

    def begin(self) -> None:
        self._local.held = []
        self._local.sent = 0

    def end(self) -> tuple[int, list[tuple[str, int, str]]]:
        """How many events the send delivered, and the drops held back."""
        held: list[tuple[str, int, str]] = getattr(self._local, "held", None) or []
        sent: int = getattr(self._local, "sent", 0)
        self._local.held = None
        self._local.sent = 0
        return sent, held

    def add(self, name: str, n: int = 1) -> None:
        if name == "sent" and getattr(self._local, "held", None) is not None:
            self._local.sent += n
        self._target.add(name, n)

    def dropped(self, reason: str, n: int = 1, detail: str = "") -> None:
        held = getattr(self._local, "held", None)
        if held is not None and reason in _RETRYABLE:
            held.append((reason, n, detail))
            return
        self._target.dropped(reason, n, detail)

    def snapshot(self) -> dict[str, int]:
        return self._target.snapshot()


_transports: weakref.WeakKeyDictionary[Client, tuple[HttpTransport, _TaskStats]] = (
    weakref.WeakKeyDictionary()
)
_transports_lock = threading.Lock()


def _transport_for(client: Client) -> tuple[HttpTransport, _TaskStats]:
    """One keep-alive transport per client, posting once per task attempt: Celery owns the
    retries (a worker slot is not held by backoff sleeps)."""
    with _transports_lock:
        found = _transports.get(client)
        if found is None:
            from .messages import shrink_event

            stats = _TaskStats(client.stats)
            settings = replace(client.settings, max_retries=0)
            found = (HttpTransport(settings, stats, shrink=shrink_event), stats)
            _transports[client] = found
        return found


def _backoff(retries: int) -> float:
    base = min(EXPORT_BACKOFF_BASE * 2.0**retries, EXPORT_BACKOFF_MAX)
    return base * (0.5 + 0.5 * random.random())


def export_batch(task: Any, events: Any) -> int:
    """The body of the ``posthog_llm_trace.export_batch`` task: post ``events`` (PostHog event
    dicts) with this worker's settings. Returns how many were sent; raises ``Retry`` (through
    ``task.retry``) when the post failed for a reason worth retrying."""
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        logger.error("posthog-llm-trace: export task received something that is not a batch")
        return 0
    if not events:
        return 0
    client = get_client()
    n = len(events)
    if not client.settings.api_key:
        detail = "this worker has no PostHog API key (set POSTHOG_API_KEY)"
        logger.error("posthog-llm-trace: cannot export %d events: %s", n, detail)
        return _retry_or_drop(task, client, n, n, detail)
    transport, stats = _transport_for(client)
    stats.begin()
    try:
        transport.send(events, time.monotonic() + transport.retry_budget())
    finally:
        sent, held = stats.end()
    if not held:
        return sent
    # Retry the whole batch: events that did go out are deduplicated by their uuid.
    failed = sum(count for _, count, _ in held)
    reason, _, detail = held[0]
    return _retry_or_drop(task, client, n, failed, detail or reason, sent)


def _retry_or_drop(
    task: Any, client: Client, n: int, failed: int, detail: str, sent: int = 0
) -> int:
    """Raise Celery's ``Retry`` for the batch of ``n`` events, or, when the retries are used
    up, count the ``failed`` ones as dropped and return ``sent``."""
    retries = int(getattr(task.request, "retries", 0) or 0)
    if retries >= EXPORT_MAX_RETRIES:
        client.stats.dropped(
            "retries_exhausted", failed, f"{detail}; gave up after {retries} Celery retries"
        )
        return sent
    client.stats.add("celery_retried", n)
    raise task.retry(countdown=_backoff(retries), exc=ExportFailed(detail))


def _register_export_task(app: Any) -> None:
    app.task(
        name=EXPORT_TASK,
        bind=True,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        serializer="json",
        max_retries=None,  # _retry_or_drop counts the attempts and the loss
    )(export_batch)
