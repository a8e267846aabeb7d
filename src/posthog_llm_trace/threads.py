"""Starting the package's background threads (export workers, the stop flush, the drop log).

They start with the process-directed signals blocked, so that the kernel delivers SIGTERM,
SIGINT and the like to the application's own threads: Python runs signal handlers in the main
thread, and a main thread waiting in ``signal.pause()`` would never wake if the signal went to
one of ours instead. A new thread inherits its creator's mask; the creator's is put back at once
(a signal arriving meanwhile waits, then is delivered as usual).
"""

from __future__ import annotations

import signal
import threading

__all__ = ["start_quiet"]

_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD")
    if hasattr(signal, name)
)


def start_quiet(thread: threading.Thread) -> None:
    """``thread.start()``, with the signals above blocked in the new thread."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # not POSIX
        thread.start()
        return
    previous = mask(signal.SIG_BLOCK, _SIGNALS)
    try:
        thread.start()
    finally:
        mask(signal.SIG_SETMASK, previous)
