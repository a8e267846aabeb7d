"""Stopping: the exit flush also runs when the process is stopped by a signal.

The background exporters flush at interpreter exit (``atexit``). A process killed by a signal
whose handler is the default one never gets there: ``SIGTERM`` (what docker, systemd and
Kubernetes send) with ``SIG_DFL`` ends the process at once, and uvicorn, after its graceful
shutdown, restores the handler it found and raises the signal again, so that the exit status
says how the process ended. So, once per process, when a client that exports in the background
is made or hands over a trace, :func:`ensure_stop_hooks` looks at the ``SIGTERM`` handler:

- the default one, seen from the main thread: ours replaces it. It flushes within
  ``shutdown_timeout`` (counting and logging what was left, as at exit), puts the default back
  and raises the signal again: the process still ends by ``SIGTERM``, only later. A second
  ``SIGTERM`` during the flush ends it at once. uvicorn, started after us, saves ours and calls
  it with its re-raised signal (``gunicorn -k uvicorn.workers.UvicornWorker``).
- a uvicorn server's (``uvicorn app:app`` imports the application after installing it): that
  server's ``shutdown`` is followed by the flush, after its connections and the lifespan have
  finished and before it re-raises the signal.
- anything else (gunicorn's workers, Celery, an application's own handler, ``SIG_IGN``): it
  stays. Those stop the process through a normal exit, where ``atexit`` flushes.

``SIGINT`` needs nothing: its default handler raises ``KeyboardInterrupt``, and the exit that
follows runs ``atexit``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from ..threads import start_quiet

__all__ = ["ensure_stop_hooks", "stop_now"]

logger = logging.getLogger("posthog_llm_trace")

_lock = threading.Lock()
_checked = False  # this process's SIGTERM handler was looked at (reset in a forked child)

#: Marks a uvicorn server whose ``shutdown`` we wrapped.
_MARK = "_posthog_llm_trace_stop"


def ensure_stop_hooks(*, retry: bool = False) -> None:
    """Make sure a stop by ``SIGTERM`` flushes, once per process (see the module docstring).

    Cheap after the first call of a process. ``retry`` looks again even so: a call from the main
    thread can install the handler where an earlier call from another thread could not."""
    if _checked and not retry:
        return
    try:
        _settle()
    except Exception as exc:  # never break the caller (a request, or start-up)
        logger.debug("posthog-llm-trace could not hook the stop signal: %s", type(exc).__name__)


def _settle() -> None:
    global _checked
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None:  # pragma: no cover - no SIGTERM on this platform
        return
    with _lock:
        current = signal.getsignal(sigterm)
        server = _uvicorn_server(current)
        if server is not None:
            _hook_uvicorn(server)
        elif current == signal.SIG_DFL and threading.current_thread() is threading.main_thread():
            signal.signal(sigterm, _on_sigterm)
        # Anything else is someone's choice (or ours already): it stays.
        _checked = True


# --- SIGTERM with the default handler ---------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second signal while we flush ends the process at once, as it would have without us.
    signal.signal(signum, signal.SIG_DFL)
    # The flush runs in a thread of its own: this handler interrupts the main thread wherever it
    # was, possibly inside one of the exporter's critical sections, and must not wait on a lock
    # that the interrupted code holds.
    worker = threading.Thread(target=stop_now, name="posthog-llm-trace-stop", daemon=True)
    try:
        start_quiet(worker)
    except RuntimeError:  # pragma: no cover - no new threads at interpreter shutdown
        stop_now()
    else:
        worker.join(_budget() + 1.0)
        if worker.is_alive():
            logger.warning("posthog-llm-trace: the stop flush did not finish in time")
    signal.raise_signal(signum)


def _budget() -> float:
    """Longest time the exit flush of every live exporter may take."""
    from .thread import _LIVE

    return sum(e._settings.shutdown_timeout for e in list(_LIVE) if not e._closed)


def stop_now() -> None:
    """The exit flush, now: every background exporter flushes within its ``shutdown_timeout``
    and stops; what could not be sent is counted (``at_exit``) and logged. Idempotent."""
    from .thread import _flush_all_at_exit

    started = time.monotonic()
    _flush_all_at_exit()
    logger.debug("posthog-llm-trace stop flush took %.2f s", time.monotonic() - started)


def _after_fork_in_child() -> None:
    global _checked
    _checked = False  # a forked worker may run under another handler (a UvicornWorker's)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- uvicorn -----------------------------------------------------------------------------------


def _uvicorn_server(handler: Any) -> Any:
    """The uvicorn ``Server`` whose ``handle_exit`` is ``handler``, else None."""
    owner = getattr(handler, "__self__", None)
    if owner is None or getattr(handler, "__name__", None) != "handle_exit":
        return None
    if not any(cls.__module__.split(".")[0] == "uvicorn" for cls in type(owner).__mro__):
        return None
    if not inspect.iscoroutinefunction(getattr(owner, "shutdown", None)):
        return None
    return owner


def _hook_uvicorn(server: Any) -> None:
    if getattr(server, _MARK, False):
        return
    shutdown = server.shutdown

    async def shutdown_then_flush(*args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(*args, **kwargs)
        finally:
            # After the connections and the lifespan have finished; in a thread, so that
            # anything still scheduled on the loop can run (and be counted) meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, stop_now)

    server.shutdown = shutdown_then_flush
    setattr(server, _MARK, True)
