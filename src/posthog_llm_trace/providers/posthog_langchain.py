"""Bracketing the LLM runs of posthog-python's LangChain ``CallbackHandler``: one call, one
generation.

A LangChain chat model that calls the ``openai`` or ``anthropic`` SDK underneath would
otherwise be recorded twice: once by our SDK instrumentation, once by the handler's
``$ai_generation``. When the handler sees an LLM run start, a generation of ours becomes current
(the application's own ``generation(...)`` when one is open), so that the SDK call underneath
fills it; the handler's event at the run's end, recognised by its run id, is merged into that
generation, which keeps the handler's parent link (its chain) in the LangChain subtree.

LangChain calls a synchronous handler inline on the model's own thread and context, which is
what this needs. On the async path it runs such handlers in an executor, in a copy of the
context: the SDK call then does not see the generation and the two records stay apart, as they
would without this module.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .. import context
from ..export.posthog import delivering
from ..records import _safe_str
from .posthog_calls import MAX_OPEN_BRACKETS, _Bracket, _open, _state

__all__ = ["HANDLER_METHODS", "bracket_for", "wrap_end", "wrap_start"]

logger = logging.getLogger("posthog_llm_trace")

#: The handler's methods bracketed here: run starts, and the ends that capture the event.
HANDLER_METHODS = (
    ("on_chat_model_start", "start"),
    ("on_llm_start", "start"),
    ("on_llm_end", "end"),
    ("on_llm_error", "end"),
)

#: Open LLM runs by run id: the bracket, and how to restore the context at the run's end.
_runs: OrderedDict[str, tuple[_Bracket, Any, Any]] = OrderedDict()
_lock = threading.Lock()


def bracket_for(props: dict[str, Any]) -> _Bracket | None:
    """The bracket of the LangChain run a captured event belongs to (by ``$ai_span_id``, the
    run id), or None. Its parent link is LangChain's: the run's chain in the subtree."""
    run_id = props.get("$ai_span_id")
    if run_id is None:
        return None
    with _lock:
        entry = _runs.get(_safe_str(run_id))
    if entry is None:
        return None
    bracket = entry[0]
    parent = props.get("$ai_parent_id")
    if parent not in (None, ""):
        bracket.gen.parent_id = _safe_str(parent)
    return bracket


def _start(run_id: Any) -> None:
    if not _state.active or delivering() or run_id is None:
        return
    node = context.current_node()
    if node is None or node.trace.ended or not node.trace.recording:
        return
    gen, owned = _open("generation", "langchain", None)
    bracket = _Bracket(gen, owned, "generation", False)
    token = context.activate(gen)
    with _lock:
        _runs[_safe_str(run_id)] = (bracket, node, token)
        while len(_runs) > MAX_OPEN_BRACKETS:  # runs whose end never came
            _runs.popitem(last=False)


def _end(run_id: Any, error: BaseException | None) -> None:
    if run_id is None:
        return
    with _lock:
        entry = _runs.pop(_safe_str(run_id), None)
    if entry is None:
        return
    bracket, previous, token = entry
    context.restore(token, previous)
    bracket.returned_(error)


def wrap_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def on_start(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        try:
            _start(kwargs.get("run_id"))
        except Exception:  # never break the application's chain
            logger.debug("posthog-llm-trace could not bracket a LangChain run", exc_info=True)
        return result

    return on_start


def wrap_end(original: Callable[..., Any]) -> Callable[..., Any]:
    def on_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        error: BaseException | None = None
        if args and isinstance(args[0], BaseException):
            error = args[0]
        try:
            return original(self, *args, **kwargs)  # captures the run's event
        finally:
            try:
                _end(kwargs.get("run_id"), error)
            except Exception:
                logger.debug("posthog-llm-trace could not end a LangChain run", exc_info=True)

    return on_end
