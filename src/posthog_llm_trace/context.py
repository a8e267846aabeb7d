"""The current trace and span, held in one context variable.

Context variables give exactly the inheritance we want: asyncio tasks copy the context of the
code that created them (so spans opened in ``asyncio.gather`` children nest under the caller),
while threads started by the user begin with an empty context (so a stray thread never records
into a request's trace by accident). Use :func:`run_in_context` -- or
``contextvars.copy_context().run`` -- to carry a trace into a worker thread on purpose.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .spans import Span, Trace

__all__ = ["current_node", "current_span", "current_trace", "run_in_context"]

T = TypeVar("T")

#: The innermost open span, or the trace itself when no span is open inside it.
_current: contextvars.ContextVar[Trace | Span | None] = contextvars.ContextVar(
    "posthog_llm_trace_current", default=None
)


def current_node() -> Trace | Span | None:
    return _current.get()


def current_trace() -> Trace | None:
    """The trace being recorded in this context (the request's, a task's, or one opened with
    ``trace(...)``), or None. Its ``distinct_id``, ``session_id``, ``properties`` and ``groups``
    are readable and writable."""
    node = _current.get()
    return None if node is None else node.trace


def current_span() -> Span | None:
    """The innermost open span in this context, or None."""
    from .spans import Span

    node = _current.get()
    return node if isinstance(node, Span) else None


def activate(node: Trace | Span | None) -> contextvars.Token[Trace | Span | None]:
    return _current.set(node)


def restore(token: contextvars.Token[Trace | Span | None], previous: Trace | Span | None) -> None:
    """Undo :func:`activate`. Falls back to setting the previous value when the token belongs
    to another context (a generator finished elsewhere, a framework switching contexts), which
    ``ContextVar.reset`` refuses with ``ValueError``."""
    try:
        _current.reset(token)
    except ValueError:
        _current.set(previous)


def run_in_context(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
    """Bind ``fn(*args, **kwargs)`` to the current context, to run later in another thread::

    executor.submit(run_in_context(summarise, doc))
    """
    ctx = contextvars.copy_context()
    return lambda: ctx.run(fn, *args, **kwargs)
