"""Recording SDK calls without hand-written spans.

``instrument("openai", "anthropic")`` patches those SDKs so that each call becomes a generation
in the current trace (the request's, a Celery task's, a ``trace(...)``), or in a trace of its
own in a script. The Django app and the Flask extension do it for you from the ``instrument``
setting; the default is every supported SDK that is importable, ``[]`` turns it off.

What the package knows about each SDK lives in :mod:`posthog_llm_trace.providers`, one module
per SDK, each with ``install()`` and ``uninstall()``. Installing is idempotent, thread-safe and
undone by :func:`uninstrument`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterable
from types import ModuleType

from .settings import INSTRUMENTABLE, Settings

__all__ = ["INSTRUMENTABLE", "instrument", "instrumented", "uninstrument"]

logger = logging.getLogger("posthog_llm_trace")

_lock = threading.RLock()
_installed: set[str] = set()

#: The package each name patches: instrumenting a name whose package is missing does nothing.
_SDK_PACKAGE = {"openai": "openai", "anthropic": "anthropic", "posthog": "posthog"}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(_SDK_PACKAGE[name]) is not None
    except (ImportError, ValueError):
        return False


def _provider(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.providers.{name}")


def _names(names: Iterable[str]) -> list[str]:
    chosen = [str(n).strip().lower() for n in names]
    unknown = [n for n in chosen if n not in INSTRUMENTABLE]
    if unknown:
        raise ValueError(
            f"cannot instrument {unknown[0]!r}; supported: {', '.join(INSTRUMENTABLE)}"
        )
    return chosen or list(INSTRUMENTABLE)


def instrument(*names: str) -> tuple[str, ...]:
    """Record the calls of these SDKs (all supported ones when none is named); returns the
    names now instrumented. SDKs that are not installed are skipped. Idempotent."""
    with _lock:
        for name in _names(names):
            if name in _installed or not _importable(name):
                continue
            try:
                _provider(name).install()
            except Exception:
                # A version of the SDK we do not know: leave it alone, say so once.
                logger.warning(
                    "posthog-llm-trace could not instrument %s; its calls are not recorded",
                    name,
                    exc_info=True,
                )
                continue
            _installed.add(name)
        return instrumented()


def uninstrument(*names: str) -> None:
    """Undo :func:`instrument` for these SDKs (all when none is named)."""
    with _lock:
        for name in _names(names):
            if name in _installed:
                _provider(name).uninstall()
                _installed.discard(name)


def instrumented() -> tuple[str, ...]:
    """The SDKs whose calls are being recorded."""
    with _lock:
        return tuple(n for n in INSTRUMENTABLE if n in _installed)


def apply_settings(settings: Settings) -> None:
    """Instrument what the ``instrument`` setting names (None: every importable SDK). Called
    when a client becomes the process default; it only ever adds instrumentation."""
    names = INSTRUMENTABLE if settings.instrument is None else settings.instrument
    if names:
        instrument(*names)
