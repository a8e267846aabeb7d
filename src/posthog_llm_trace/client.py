"""The client: one settings object, its exporter and its counters.

A process normally has one client, the default, made by :func:`configure` (the Django app and
the Flask extension call it for you). A Flask app configured with settings of its own gets a
client of its own. Traces remember the client they were opened with, so a trace always exports
with the settings it started under.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from . import events, registry
from .export.base import Exporter
from .export.lifecycle import ensure_stop_hooks
from .settings import Layer, Settings, resolve, safe_url
from .spans import TraceRecord
from .stats import Stats

__all__ = ["Client", "configure", "flush", "get_client", "shutdown", "stats"]

logger = logging.getLogger("posthog_llm_trace")

_lock = threading.RLock()
_default: Client | None = None
_explicit = False  # True once configure() or an adapter chose the default client
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_warned_no_key = False

# Lists that capture_events() is filling; while any exists, records are rendered into them
# instead of being exported.
_captures: list[list[dict[str, Any]]] = []


class Client:
    """Settings + exporter + stats. Thread-safe; the exporter starts on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or from_environment()
        self.stats = Stats()
        self._exporter: Exporter | None = None
        self._exporter_lock = threading.Lock()
        self._closed = False
        self._export_enabled = self.settings.export_enabled  # read for every trace
        #: Where the application's secret is, for signed trace references (the Flask extension
        #: sets it to the app's ``SECRET_KEY``).
        self.signing_key: Callable[[], Any] | None = None
        _clients.add(self)
        _warn_if_disabled(self.settings)
        self._stop_hooks = self._export_enabled and self.settings.export in ("thread", "celery")
        if self._stop_hooks:
            ensure_stop_hooks(retry=True)

    def __repr__(self) -> str:
        s = self.settings
        return f"<posthog_llm_trace.Client export={s.export!r} host={safe_url(s.host)!r}>"

    @property
    def enabled(self) -> bool:
        return self._export_enabled and not self._closed

    @property
    def recording(self) -> bool:
        """Whether traces opened now record their spans at all."""
        return (self._export_enabled and not self._closed) or bool(_captures)

    def render(self, record: TraceRecord) -> list[dict[str, Any]]:
        """The events of ``record``, each within ``max_event_bytes``."""
        return events.render(record, self.settings, self.stats)

    def render_for_transport(self, record: TraceRecord) -> list[dict[str, Any]]:
        """The events of ``record``; the HTTP transport enforces the size limit itself."""
        return events.render(record, self.settings, self.stats, fit=False)

    def submit(self, record: TraceRecord) -> None:
        """Hand a finished trace to the exporter. Never raises, never blocks on I/O."""
        try:
            if _captures:
                rendered = self.render(record)
                with _lock:
                    for target in _captures:
                        target.extend(rendered)
                return
            exporter = self._exporter or self._start_exporter()
            if exporter is not None:
                if self._stop_hooks:
                    ensure_stop_hooks()  # once per process: forked workers, uvicorn's handler
                exporter.submit(record)
        except Exception:  # pragma: no cover - exporters do not raise; belt and braces
            logger.exception("posthog-llm-trace could not hand over a trace")

    def _start_exporter(self) -> Exporter | None:
        if not self.enabled:
            return None
        with self._exporter_lock:
            if self._exporter is None:
                self._exporter = make_exporter(self)
            return self._exporter

    @property
    def exporter(self) -> Exporter | None:
        """The exporter, started if it was not yet (None when export is disabled)."""
        return self._exporter or self._start_exporter()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is pending within ``timeout`` seconds. True when nothing was left."""
        exporter = self._exporter
        return True if exporter is None else exporter.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` and stop exporting. Idempotent."""
        self._closed = True
        exporter = self._exporter
        return True if exporter is None else exporter.shutdown(timeout)


def make_exporter(client: Client) -> Exporter | None:
    """The exporter that ``settings.export`` names."""
    settings, stats = client.settings, client.stats
    mode = settings.export
    if mode in ("console", "file", "memory"):
        from .export.sinks import JsonLinesSink, MemorySink

        if mode == "memory":
            return MemorySink(client.render, stats)
        return JsonLinesSink(
            client.render, stats, None if mode == "console" else settings.export_file
        )
    if mode == "posthog":
        from .export.posthog import PosthogExporter

        return PosthogExporter(client.render, settings, stats)
    from .export.http import HttpTransport
    from .messages import shrink_event

    if mode == "celery":
        from .export.celery import CeleryExporter

        return CeleryExporter(client.render_for_transport, settings, stats)
    transport = HttpTransport(settings, stats, shrink=shrink_event)
    if mode == "sync":
        from .export.sync import SyncExporter

        return SyncExporter(client.render_for_transport, transport, settings, stats)
    from .export.thread import BatchExporter

    return BatchExporter(client.render_for_transport, transport, settings, stats)


_derived: weakref.WeakKeyDictionary[Any, Client] = weakref.WeakKeyDictionary()


def client_for(value: Any) -> Client | None:
    """The client a ``trace(client=...)`` exports with: one of ours as it is, or -- for a
    posthog-python client (``posthog.Posthog``) -- a client of ours with the default client's
    settings that delivers through it (``export="posthog"``), made once per posthog client.
    Anything else is a :class:`TypeError`, named."""
    if value is None or isinstance(value, Client):
        return value
    if isinstance(value, type) or not callable(getattr(value, "capture", None)):
        raise TypeError(
            "client must be a posthog_llm_trace.Client or a posthog.Posthog client, "
            f"got {type(value).__name__}"
        )
    with _lock:
        try:
            derived = _derived.get(value)
        except TypeError:  # not weak-referenceable: not cached
            derived = None
        if derived is None:
            base = get_client().settings
            derived = Client(dataclasses.replace(base, export="posthog", posthog_client=value))
            with suppress(TypeError):
                _derived[value] = derived
        return derived


def _warn_if_disabled(settings: Settings) -> None:
    global _warned_no_key
    needs_key = settings.export in ("thread", "sync", "celery")
    if needs_key and not settings.api_key and not _warned_no_key:
        _warned_no_key = True
        logger.warning(
            "posthog-llm-trace: no PostHog API key (set POSTHOG_API_KEY or the api_key "
            "setting); nothing is exported, the recording API keeps working."
        )


def from_environment() -> Settings:
    """Settings from the environment; a wrong variable turns export off and is logged once."""
    resolved, problems = resolve()
    report_problems(problems)
    return resolved


_reported: set[str] = set()


def report_problems(problems: list[str], hint: str = "") -> None:
    """Log each configuration problem once per process, as an error: at start-up, where
    gunicorn and uvicorn show it (through logging's last-resort handler on stderr when the
    application configured none)."""
    for problem in problems:
        with _lock:
            if problem in _reported:
                continue
            _reported.add(problem)
        logger.error(
            "posthog-llm-trace: %s; nothing is exported until this is fixed%s.",
            problem.rstrip("."),
            hint,
        )


# --- the default client -----------------------------------------------------------------------


def get_client() -> Client:
    """The default client, configured from the environment on first use."""
    global _default
    client = _default
    if client is None:
        with _lock:
            if _default is None:
                _default = Client()
            client = _default
    return client


registry.register(get_client)


def set_default_client(client: Client, *, if_unset: bool = False) -> Client:
    """Make ``client`` the default. With ``if_unset``, only when no default was configured yet;
    returns the default either way. The previous default keeps working for the traces (and
    Flask apps) that hold it, and flushes at exit like any client."""
    global _default, _explicit
    with _lock:
        if if_unset and _explicit and _default is not None:
            return _default
        _default = client
        _explicit = True
    from .instrument import apply_settings

    apply_settings(client.settings)
    return client


def configure(api_key: str | None = None, host: str | None = None, **settings: Any) -> Client:
    """Configure the default client; returns it.

    Sources, later wins: defaults, environment (``POSTHOG_API_KEY``, ``POSTHOG_HOST``,
    ``POSTHOG_LLM_TRACE_*``), then these arguments. A wrong argument raises
    :class:`~posthog_llm_trace.ConfigurationError` naming the setting; a wrong or unknown
    environment variable is logged as an error and turns export off until it is fixed::

        configure(api_key="phc_...", flush_at=50, privacy_mode=True)
    """
    if api_key is not None:
        settings["api_key"] = api_key
    if host is not None:
        settings["host"] = host
    resolved, problems = resolve(explicit=Layer(settings))
    report_problems(problems)
    return set_default_client(Client(resolved))


def _all_clients() -> list[Client]:
    with _lock:
        return list(_clients)


def flush(timeout: float | None = 10.0) -> bool:
    """Deliver what every client has pending, within ``timeout`` seconds in all."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for client in _all_clients():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = client.flush(left) and done
    return done


def shutdown(timeout: float | None = 10.0) -> bool:
    """Flush and stop every client within ``timeout`` seconds in all."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for client in _all_clients():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = client.shutdown(left) and done
    return done


def stats() -> dict[str, int]:
    """Delivery counters of this process, summed over its clients: ``queued``, ``sent``,
    ``retried``, ``dropped`` and ``dropped_<reason>`` for each reason that occurred."""
    total: dict[str, int] = {}
    for client in _all_clients():
        for key, value in client.stats.snapshot().items():
            total[key] = total.get(key, 0) + value
    for key in ("queued", "sent", "retried", "dropped"):
        total.setdefault(key, 0)
    return total


@contextmanager
def capturing() -> Iterator[list[dict[str, Any]]]:
    """Render every finished trace into a list instead of exporting it (see ``testing``)."""
    target: list[dict[str, Any]] = []
    with _lock:
        _captures.append(target)
    try:
        yield target
    finally:
        with _lock:
            _captures.remove(target)
