"""posthog-python: its ``posthog.ai`` wrappers and LangChain handler join the current trace.

With ``"posthog"`` in the ``instrument`` setting (the default when posthog-python is
importable), an AI event that posthog-python is asked to capture while one of our traces is
current -- ``$ai_generation``, ``$ai_embedding``, ``$ai_span`` or ``$ai_trace``, from
``posthog.ai.openai``, ``posthog.ai.anthropic``, ``posthog.ai.gemini``, the LangChain
``CallbackHandler`` or the application's own ``ph.capture(...)`` -- becomes a span of that trace
(:class:`~posthog_llm_trace.captured.CapturedEvent`): our trace id, our current span as parent
(a LangChain run tree keeps its inner links, its root becoming a span of ours), the request's
user and session bound when the trace ends, and our privacy mode, ``mask``, size limit,
delivery and ``stats()``. It is delivered once, by our exporter, not by posthog-python.

One call, one ``$ai_generation``: the wrappers' methods are bracketed by a generation of ours,
which our OpenAI / Anthropic instrumentation (if on) fills from the SDK call underneath, and
into which the wrapper's event is merged when it is captured -- at the end of the stream for
streamed calls.

Left exactly as without us: every event outside our traces, every non-AI event, a disabled
client, and everything when posthog-python's version is not one we know (one warning). Nothing
here raises into posthog-python. Our own events, delivered through posthog-python with
``export="posthog"``, pass straight through.

During a request, :func:`request_scope` also gives posthog-python's own context (its
``new_context``, ``identify_context``, session) the request's user and ``$session_id``, so that
``posthog.capture("signed up")`` in a view is attributed like the trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any

from .. import context
from ..captured import CapturedEvent
from ..export.posthog import delivering
from ..records import _safe_str
from ..spans import Span, Trace
from .posthog_calls import MARKER, _brackets, _bypass, _state, bracketed
from .posthog_langchain import HANDLER_METHODS, bracket_for, wrap_end, wrap_start

__all__ = ["MARKER", "SUPPORTED_MAJOR", "install", "request_scope", "uninstall"]

logger = logging.getLogger("posthog_llm_trace")

#: posthog-python major versions whose capture path and wrappers we know.
SUPPORTED_MAJOR = (7,)

_EVENTS = {
    "$ai_generation": "generation",
    "$ai_embedding": "embedding",
    "$ai_span": None,
    "$ai_trace": None,
}


#: The distinct id we put in posthog-python's context for the current request.
_told: contextvars.ContextVar[tuple[Any, Trace] | None] = contextvars.ContextVar(
    "posthog_llm_trace_posthog_scope", default=None
)


# --- install ---------------------------------------------------------------------------------


def _known_version() -> str | None:
    """posthog-python's version if it is one we know, else None."""
    try:
        from posthog.version import VERSION
    except ImportError:
        return None
    try:
        major = int(str(VERSION).split(".")[0])
    except ValueError:
        return None
    return str(VERSION) if major in SUPPORTED_MAJOR else None


def install() -> None:
    """Patch posthog-python's ``Client.capture`` / ``capture_ai`` and its wrappers' methods.
    Raises (so that :func:`..instrument.instrument` logs one warning and leaves posthog-python
    alone) for a version we do not know."""
    import posthog.client

    version = _known_version()
    if version is None:
        raise RuntimeError(
            "posthog-python's version is not one posthog-llm-trace knows "
            f"(supported: {', '.join(f'{m}.x' for m in SUPPORTED_MAJOR)}); its events are "
            "left to it"
        )
    client_cls = posthog.client.Client
    for name in ("capture", "capture_ai"):
        if not callable(client_cls.__dict__.get(name)):
            raise RuntimeError(f"posthog.client.Client.{name} not found; left alone")
    with _state.lock:
        if _state.active:
            return
        for name in ("capture", "capture_ai"):
            _patch(client_cls, name, _capture_hook)
        for module, cls_name, method, kind in _WRAPPED:
            cls = _find(module, cls_name)
            if cls is not None and callable(cls.__dict__.get(method)):
                _patch(cls, method, functools.partial(bracketed, kind=kind, name=method))
        handler = _find("posthog.ai.langchain.callbacks", "CallbackHandler")
        if handler is not None:
            for method, role in HANDLER_METHODS:
                if callable(handler.__dict__.get(method)):
                    _patch(handler, method, wrap_start if role == "start" else wrap_end)
        from .. import web

        if request_scope not in web.REQUEST_SCOPES:
            web.REQUEST_SCOPES.append(request_scope)
        _state.active = True


def uninstall() -> None:
    """Undo :func:`install`."""
    with _state.lock:
        _state.active = False
        for cls, name, original in reversed(_state.saved):
            setattr(cls, name, original)
        _state.saved.clear()
        from .. import web

        if request_scope in web.REQUEST_SCOPES:
            web.REQUEST_SCOPES.remove(request_scope)


def _patch(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    original = cls.__dict__[name]
    _state.saved.append((cls, name, original))
    setattr(cls, name, make(original))


def _find(module: str, cls_name: str) -> type | None:
    """A wrapper class, if its module imports (its SDK is installed)."""
    import importlib
    import importlib.util

    try:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
            return None
        cls = getattr(importlib.import_module(module), cls_name, None)
    except Exception:  # the SDK is missing, or of a version that posthog-python rejects
        return None
    return cls if isinstance(cls, type) else None


#: (module, class, method, kind) of every wrapper method bracketed by a span of ours.
_WRAPPED = (
    *(
        (f"posthog.ai.openai.{module}", cls, method, "generation")
        for module in ("openai", "openai_async")
        for cls in ("WrappedCompletions", "WrappedResponses", "WrappedBetaCompletions")
        for method in ("create", "parse")
    ),
    ("posthog.ai.openai.openai", "WrappedEmbeddings", "create", "embedding"),
    ("posthog.ai.openai.openai_async", "WrappedEmbeddings", "create", "embedding"),
    ("posthog.ai.anthropic.anthropic", "WrappedMessages", "create", "generation"),
    ("posthog.ai.anthropic.anthropic", "WrappedMessages", "stream", "generation"),
    ("posthog.ai.anthropic.anthropic_async", "AsyncWrappedMessages", "create", "generation"),
    ("posthog.ai.anthropic.anthropic_async", "AsyncWrappedMessages", "stream", "generation"),
    ("posthog.ai.gemini.gemini", "Models", "generate_content", "generation"),
    ("posthog.ai.gemini.gemini", "Models", "generate_content_stream", "generation"),
    ("posthog.ai.gemini.gemini", "Models", "embed_content", "embedding"),
    ("posthog.ai.gemini.gemini_async", "AsyncModels", "generate_content", "generation"),
    ("posthog.ai.gemini.gemini_async", "AsyncModels", "generate_content_stream", "generation"),
    ("posthog.ai.gemini.gemini_async", "AsyncModels", "embed_content", "embedding"),
)


# --- the capture entry -----------------------------------------------------------------------


def _capture_hook(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def capture(self: Any, event: Any = None, *args: Any, **kwargs: Any) -> Any:
        if _state.active and not delivering():
            try:
                taken, result = _take(self, event, kwargs)
            except Exception:  # never raise inside posthog-python: let it capture as usual
                logger.debug("posthog-llm-trace could not take a posthog event", exc_info=True)
                taken, result = False, None
            if taken:
                return result
        return original(self, event, *args, **kwargs)

    return capture


def _take(client: Any, event: Any, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Take ``event`` into the current trace: (True, its uuid) -- or (True, None) when our
    sampling dropped it -- or (False, None) to let posthog-python capture it as usual."""
    props = kwargs.get("properties")
    bracket = None
    if isinstance(props, dict) and MARKER in props:
        key = props[MARKER]
        kwargs["properties"] = {k: v for k, v in props.items() if k != MARKER}
        bracket = _brackets.pop(key, None)
    elif isinstance(props, dict) and event == "$ai_generation":
        bracket = bracket_for(props)  # an LLM run of the LangChain handler
    if type(event) is not str or event not in _EVENTS:
        _identify_for(kwargs)
        return False, None
    kind = _EVENTS[event]
    node = context.current_node()
    trace = bracket.gen.trace if bracket is not None else (None if node is None else node.trace)
    if (
        trace is None
        or _bypass.get()
        or getattr(client, "disabled", False)
        or not getattr(client, "send", True)
    ):
        if bracket is not None:
            bracket.release()
        return False, None
    if not trace.recording:
        if bracket is not None:
            bracket.release()
        # Sampled out by us: dropped like the rest of its trace. Export off: posthog's own.
        return (True, None) if trace.client.enabled else (False, None)
    props = _properties(client, kwargs)
    if bracket is not None and kind == bracket.kind:
        return True, bracket.capture(props)
    if bracket is not None:
        bracket.release()
    distinct_id = _explicit_distinct_id(kwargs.get("distinct_id"), props)
    return True, _add(event, kind, props, distinct_id, node, trace)


def _properties(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The event's properties as posthog-python would have sent them: context tags under the
    explicit properties, super properties over them, the context's session and the groups."""
    from posthog import contexts

    props = {**contexts.get_tags(), **(kwargs.get("properties") or {})}
    supers = getattr(client, "super_properties", None)
    if isinstance(supers, dict) and supers:
        props.update(supers)
    if "$session_id" not in props:
        session = contexts.get_context_session_id()
        if session:
            props["$session_id"] = session
    groups = kwargs.get("groups")
    if isinstance(groups, dict) and groups:
        props["$groups"] = groups
    return props


def _explicit_distinct_id(value: Any, props: dict[str, Any]) -> str | None:
    """A distinct id the application gave this event, or None for the ones posthog-python makes
    up (its trace or run id for personless events) and the one we put in its context."""
    if value is None or value == "" or props.get("$process_person_profile") is False:
        return None
    did = _safe_str(value)
    ids = {_safe_str(props.get("$ai_trace_id")), _safe_str(props.get("$ai_span_id"))}
    told = _told.get()
    if did in ids or (told is not None and did == told[0]):
        return None
    return did


def _add(
    event: str,
    kind: str | None,
    props: dict[str, Any],
    distinct_id: str | None,
    node: Trace | Span | None,
    trace: Trace,
) -> str:
    """A span of ours for a captured event; returns its event uuid."""
    from ..events import _event_uuid

    name = event if event in ("$ai_generation", "$ai_embedding") else "$ai_span"
    if kind is None:
        span_type = props.get("$ai_span_type")
        if event == "$ai_trace":
            kind = "chain" if props.get("$ai_framework") == "langchain" else "trace"
        else:
            kind = span_type if isinstance(span_type, str) and span_type else "span"
    captured = CapturedEvent(name, props, kind=kind, distinct_id=distinct_id)
    foreign_trace = props.get("$ai_trace_id")
    parent = props.get("$ai_parent_id")
    span_id = props.get("$ai_span_id")
    if event == "$ai_trace" and foreign_trace not in (None, ""):
        # The root of the other SDK's tree (LangChain's outermost run): its children point at
        # its trace id, which becomes this span's id.
        span_id = foreign_trace
    if event == "$ai_trace" or parent is None or parent == "":
        # A root (or a lone call): it hangs under our current span.
        if isinstance(node, Span) and not node._end_perf and node.trace is trace:
            parent_id = node.id
        else:
            parent_id = trace.parent_id or trace.id
    else:
        parent_id = _safe_str(parent)
    captured.place(trace, None if span_id in (None, "") else _safe_str(span_id), parent_id)
    trace._add(captured)
    return _event_uuid(captured.id)


# --- posthog-python's context during a request -------------------------------------------------


def request_scope(trace: Trace) -> Callable[[], None] | None:
    """Open a posthog-python context for the request whose trace is ``trace`` (called by
    :mod:`..web` where the view runs): its ``$session_id`` is the browser session, and its
    distinct id the request's user, looked up when posthog-python first captures an event
    in it. Returns what closes it."""
    if not _state.active:
        return None
    try:
        from posthog import contexts

        manager = contexts.new_context(fresh=False, capture_exceptions=False)
        manager.__enter__()
        if trace.replay_session_id:
            contexts.set_context_session(trace.replay_session_id)
        told = _told.set((None, trace))
        scope = contexts._get_current_context()
        _scopes[id(trace)] = scope
    except Exception:
        logger.debug("posthog-llm-trace could not open a posthog context", exc_info=True)
        return None

    def close() -> None:
        _scopes.pop(id(trace), None)
        # Closed from another context (the request's own is being discarded): nothing to undo.
        with contextlib.suppress(ValueError):
            _told.reset(told)
        try:
            manager.__exit__(None, None, None)
        except Exception:
            logger.debug("posthog-llm-trace could not close a posthog context", exc_info=True)

    return close


_resolving: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "posthog_llm_trace_posthog_resolving", default=False
)

#: The posthog-python context scope of each open request trace, by the trace's id().
_scopes: dict[int, Any] = {}


def _identify_for(kwargs: dict[str, Any]) -> None:
    """Before posthog-python captures a product event in a request, put the request's user in
    the request's posthog context -- unless the application identified the context itself.
    Looked up now, not when the request began, so a login during the view counts."""
    told = _told.get()
    if told is None or kwargs.get("distinct_id"):
        return
    said, trace = told
    scope = _scopes.get(id(trace))
    if scope is None or trace.ended or scope.distinct_id not in (None, said) or _resolving.get():
        return
    token = _resolving.set(True)  # a resolver that captures an event must not recurse here
    try:
        trace.resolve_identity()
    finally:
        _resolving.reset(token)
    distinct_id = trace.distinct_id
    if distinct_id and distinct_id != said:
        scope.set_distinct_id(distinct_id)
        _told.set((distinct_id, trace))
