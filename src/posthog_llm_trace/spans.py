"""The trace model: a :class:`Trace` (one per request, task or ``trace(...)`` block) holding
:class:`Span` objects (generations, embeddings, tools and other steps).

Recording is cheap by design: a span keeps references to what it was given (containers are
copied two levels deep so later mutation does not leak in) and two clock readings. Nothing is
serialised here. When the trace ends, its finished spans are handed to the trace's client as one
:class:`TraceRecord`; the mapping to PostHog events happens later, off the caller's thread.

Spans know nothing of HTTP, Django, Flask or Celery.
"""

from __future__ import annotations

import inspect
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from . import context, registry
from .decorate import decorate
from .messages import snapshot
from .records import UNSET, ErrorInfo, TraceRecord, _safe_str

if TYPE_CHECKING:
    from types import TracebackType

    from .client import Client

__all__ = [
    "KINDS",
    "UNSET",
    "ErrorInfo",
    "Span",
    "Trace",
    "TraceRecord",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Span kinds. ``generation`` becomes ``$ai_generation``, ``embedding`` ``$ai_embedding``, every
#: other kind an ``$ai_span`` with the kind in ``$ai_span_type``.
KINDS = (
    "generation",
    "embedding",
    "tool",
    "agent",
    "workflow",
    "step",
    "chunk",
    "retrieval",
    "span",
)

_KIND_SET = frozenset(KINDS)

#: The longest ``$ai_span_type`` accepted; a longer (or non-string) kind becomes ``span``.
MAX_KIND_LENGTH = 64


def _kind(kind: object, default: str) -> str:
    """The span's kind: a known kind, or any other short printable string an integration needs
    (``handoff``, ``guardrail``, ``mcp_tools``); anything else (not a string, too long, blank)
    falls back to ``default``, since a label must never raise into the application."""
    if not isinstance(kind, str):
        return default
    if kind in _KIND_SET:
        return kind
    kind = kind.strip()
    if kind and len(kind) <= MAX_KIND_LENGTH and kind.isprintable():
        return kind
    return default


#: A trace hands its spans over early once this many have finished, so that a long-running
#: trace (a worker loop, an agent with thousands of steps) never holds them all in memory.
SPANS_PER_HANDOVER = 500


def _id_prefix() -> str:
    bits = random.SystemRandom().getrandbits
    # 8-4-4-4 hex digits of a version 4, RFC 4122 variant UUID: 74 random bits.
    return "%08x-%04x-4%03x-%04x-" % (bits(32), bits(16), bits(12), bits(14) | 0x8000)  # noqa: UP031


class _Ids:
    """Span and trace ids: UUID strings made of a random per-process prefix and a counter.

    This runs on the request thread for every span, where ``str(uuid.uuid4())`` (an urandom
    call and a pure-Python object) costs several microseconds; this costs a tenth of that. Ids
    must be unique, not secret: 74 random bits per process keep processes apart, the counter
    (atomic under the GIL) keeps ids within a process apart, and a forked child (a preloaded
    gunicorn worker, a Celery prefork child) draws a new prefix."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = _id_prefix()
        self.counter = itertools.count(random.getrandbits(40))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


class _Locks:
    """One lock for every trace's span list, held for a few bytecodes at a time (a lock per
    trace would be one more object for the garbage collector to walk per queued trace)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # In a forked child the lock may have been held by a thread that does not exist there.
        self.handover = threading.Lock()


_new_id = _Ids()
_locks = _Locks()
#: The span list of an ended trace: never appended to (``_add`` checks ``_ended`` first).
_ENDED: list[Any] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id.reset)
    os.register_at_fork(after_in_child=_locks.reset)


def _default_client() -> Client:
    return registry.default_client()


class _Timed:
    """Clock readings shared by traces and spans: wall time for timestamps, a monotonic
    counter for latency (both follow freezegun in tests)."""

    __slots__ = ("_end_perf", "_start_perf", "end_time", "start_time")

    def __init__(self) -> None:
        self.start_time = 0.0
        self.end_time = 0.0
        self._start_perf = 0.0
        self._end_perf = 0.0

    def _stamp_start(self) -> None:
        self.start_time = time.time()
        self._start_perf = time.perf_counter()

    def _stamp_end(self) -> None:
        self.end_time = time.time()
        self._end_perf = time.perf_counter()

    @property
    def latency(self) -> float:
        """Seconds between start and end (so far, when not ended)."""
        end = self._end_perf or time.perf_counter()
        return max(0.0, end - self._start_perf)


class Trace(_Timed):
    """One trace: the root of a request, a Celery task or a ``trace(...)`` block.

    Becomes a ``$ai_trace`` event when it ends, if at least one span was recorded in it.
    ``distinct_id``, ``session_id``, ``properties`` and ``groups`` can be changed at any time
    before the end; identity set by the application wins over what a framework adapter
    resolves.
    """

    __slots__ = (
        "_distinct_explicit",
        "_distinct_id",
        "_ended",
        "_feedback",
        "_had_children",
        "_session_explicit",
        "_session_id",
        "_spans",
        "_token",
        "_token_previous",
        "_trace_sent",
        "client",
        "emit_trace_event",
        "error",
        "groups",
        "id",
        "identify",
        "implicit",
        "input_state",
        "name",
        "output_state",
        "parent_id",
        "properties",
        "recording",
        "replay_session_id",
        "sampled",
    )

    def __init__(
        self,
        name: str,
        *,
        distinct_id: str | None = None,
        session_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        groups: Mapping[str, Any] | None = None,
        input: Any = None,
        client: Client | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        sampled: bool | None = None,
        emit_trace_event: bool = True,
        implicit: bool = False,
    ) -> None:
        # Attributes are set inline, not through helpers: this runs once per request.
        self.start_time = time.time()
        self._start_perf = time.perf_counter()
        self.end_time = self._end_perf = 0.0
        self.client = client = client or _default_client()
        self.id = trace_id or _new_id()
        self.name = name
        self._distinct_id = None if distinct_id is None else _safe_str(distinct_id)
        self._session_id = None if session_id is None else _safe_str(session_id)
        self._distinct_explicit = distinct_id is not None
        self._session_explicit = session_id is not None
        self.replay_session_id: str | None = None
        self.properties: dict[str, Any] = dict(properties) if properties else {}
        self.groups: dict[str, Any] = dict(groups) if groups else {}
        self.input_state = None if input is None else snapshot(input)
        self.output_state: Any = None
        self.error: ErrorInfo | None = None
        #: The span this trace continues (a Celery task started from a request's span).
        self.parent_id = parent_id
        if sampled is None:
            rate = client.settings.sample_rate
            sampled = rate >= 1.0 or random.random() < rate
        self.sampled = sampled
        self.recording = sampled and client.recording
        self.emit_trace_event = emit_trace_event
        self.implicit = implicit
        #: Set by a framework adapter: returns ``(distinct_id, session_id)`` while the request
        #: runs, for work that must carry the user before the trace ends (a Celery task).
        self.identify: Callable[[], tuple[str | None, str | None]] | None = None
        self._spans: list[Span] = []
        self._had_children = False
        self._feedback: list[Any] | None = None
        self._trace_sent = False
        self._ended = False
        self._token: Any = None
        self._token_previous: Any = None

    # Identity the application sets wins over what an adapter resolves at the end (bind()).
    @property
    def distinct_id(self) -> str | None:
        """PostHog's ``distinct_id`` for every event of this trace."""
        return self._distinct_id

    @distinct_id.setter
    def distinct_id(self, value: Any) -> None:
        self._distinct_id = None if value is None else _safe_str(value)
        self._distinct_explicit = True

    @property
    def session_id(self) -> str | None:
        """``$ai_session_id``: groups traces into a conversation or session."""
        return self._session_id

    @session_id.setter
    def session_id(self, value: Any) -> None:
        self._session_id = None if value is None else _safe_str(value)
        self._session_explicit = True

    def __repr__(self) -> str:
        return f"<Trace {self.name!r} id={self.id}>"

    @property
    def trace(self) -> Trace:
        return self

    @property
    def ended(self) -> bool:
        return self._ended

    # --- the application's API -------------------------------------------------------------

    def set_input(self, value: Any) -> None:
        """The whole trace's input, sent as ``$ai_input_state``."""
        self.input_state = snapshot(value)

    def set_output(self, value: Any) -> None:
        """The whole trace's output, sent as ``$ai_output_state``."""
        self.output_state = snapshot(value)

    def set_property(self, key: str, value: Any) -> None:
        """A custom property on every event of this trace."""
        self.properties[key] = value

    def set_error(self, error: BaseException | ErrorInfo | str) -> None:
        """Mark the trace as failed (``$ai_is_error``, ``$ai_error``)."""
        self.error = ErrorInfo.coerce(error)

    def resolve_identity(self) -> None:
        """Bind the identity now, if the framework adapter can tell it before the end: a task
        published from a view must carry the user. The end of the request binds it again."""
        identify = self.identify
        if identify is None:
            return
        try:
            distinct_id, session_id = identify()
        except Exception:  # outside the request (another thread), or a failing lookup
            return
        self.bind(distinct_id=distinct_id, session_id=session_id)

    @property
    def feedback_token(self) -> str | None:
        """A signed reference to this trace for its user, to put in the page: the browser sends
        it back with its feedback, and ``feedback(token=...)`` checks it (see ``sign_trace``).
        None, with a warning, when no key is configured."""
        from .trace_feedback import token_for

        return token_for(self)

    def bind(self, *, distinct_id: str | None = None, session_id: str | None = None) -> None:
        """Identity resolved by a framework adapter. Values the application set win."""
        if distinct_id is not None and not self._distinct_explicit:
            self._distinct_id = _safe_str(distinct_id)
        if session_id is not None and not self._session_explicit:
            self._session_id = _safe_str(session_id)

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._token_previous = context.current_node()
        self._token = context.activate(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.set_error(exc)
        if self._token is not None:
            context.restore(self._token, self._token_previous)
            self._token = None
        self.end()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _add(self, span: Span) -> None:
        """Called by a span when it ends."""
        emit = False
        with _locks.handover:
            if self._ended:
                # A span that outlived its trace (a thread still running after the response):
                # export it on its own so nothing is lost -- with the trace event, if the trace
                # had nothing to send when it ended.
                spans = [span]
                emit = self.emit_trace_event and not self._trace_sent
                self._trace_sent = True
            else:
                self._spans.append(span)
                if len(self._spans) < SPANS_PER_HANDOVER:
                    return
                spans, self._spans = self._spans, []
                self._had_children = True
        self.client.submit(self._record(spans, emit=emit))

    def _add_feedback(self, item: Any) -> bool:
        """Hold ``item`` until the end, to send it under this trace's identity. False once the
        trace has ended (the caller sends it on its own)."""
        with _locks.handover:
            if self._ended:
                return False
            if self._feedback is None:
                self._feedback = [item]
            else:
                self._feedback.append(item)
        return True

    def end(self) -> None:
        """Finish the trace and hand its spans to the exporter. Idempotent."""
        with _locks.handover:
            if self._ended:
                return
            self._ended = True
            spans, self._spans = self._spans, _ENDED
            feedback, self._feedback = self._feedback, None
            # A request that recorded nothing sends nothing (unless a span it started ends
            # later: see _add). Feedback alone sends just the feedback, never a $ai_trace.
            send = self.recording and bool(spans or self._had_children)
            if send:
                self._trace_sent = True
        self._stamp_end()
        if send or feedback:
            record = self._record(spans, emit=send and self.emit_trace_event, final=True)
            if feedback:
                record.feedback = feedback
            self.client.submit(record)

    def _record(self, spans: list[Span], *, emit: bool, final: bool = False) -> TraceRecord:
        # The final record may share the ended trace's dicts; an early one gets copies, since
        # the application may still change them.
        return TraceRecord(  # positional: this runs once per request
            self.id,
            self.name,
            self._distinct_id,
            self._session_id,
            self.replay_session_id,
            self.properties if final else dict(self.properties),
            self.groups if final else dict(self.groups),
            self.start_time,
            self.end_time or time.time(),
            self.latency,
            self.input_state,
            self.output_state,
            self.error,
            emit,
            spans,
            self.client.settings.chunk_spans,
        )


class Span(_Timed):
    """A unit of work inside a trace: a tool call, a retrieval, an agent step...

    Use it as a context manager (sync or async) or as a decorator; ``start()`` / ``end()`` work
    too. An exception leaving the block marks the span as failed and propagates unchanged.
    Created outside any trace, a span opens an implicit trace of its own.
    """

    __slots__ = (
        "_implicit",
        "_previous",
        "_token",
        "error",
        "id",
        "input",
        "kind",
        "name",
        "output",
        "parent_id",
        "properties",
        "trace",
    )

    default_kind = "span"

    def __init__(
        self,
        name: str | None = None,
        *,
        kind: str | None = None,
        input: Any = UNSET,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        self.start_time = self.end_time = self._start_perf = self._end_perf = 0.0
        self.kind = kind = _kind(kind, self.default_kind)
        self.name = name or kind
        self.input: Any = UNSET if input is UNSET else snapshot(input)
        self.output: Any = UNSET
        self.properties: dict[str, Any] = dict(properties) if properties else {}
        self.error: ErrorInfo | None = None
        self.id = ""
        self.parent_id = ""
        self.trace: Trace = cast("Trace", None)
        self._implicit: Trace | None = None
        self._token: Any = None
        self._previous: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} id={self.id or '(not started)'}>"

    # --- the application's API -------------------------------------------------------------

    def set_input(self, value: Any) -> None:
        self.input = snapshot(value)

    def set_output(self, value: Any) -> None:
        self.output = snapshot(value)

    def set_property(self, key: str, value: Any) -> None:
        """A custom property on this span's event. It cannot overwrite a computed ``$ai_*``."""
        self.properties[key] = value

    def set_properties(self, values: Mapping[str, Any]) -> None:
        self.properties.update(values)

    def set_error(self, error: BaseException | ErrorInfo | str) -> None:
        """Mark the span as failed without raising."""
        self.error = ErrorInfo.coerce(error)

    #: Whether this kind of span holds more than input, output, properties and error, told by
    #: ``_extra_bytes()`` to :attr:`TraceRecord.approx_bytes`.
    _sized_extra = False

    def _extra_bytes(self) -> int:
        return 0

    @property
    def trace_id(self) -> str:
        return self.trace.id if self.trace is not None else ""

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Open the span under the current span or trace (or an implicit trace)."""
        self._open(context.current_node())
        return self

    def _open(self, parent: Trace | Span | None) -> None:
        trace = None if parent is None else parent.trace
        if trace is None or trace._ended:
            self._implicit = trace = parent = Trace(self.name, implicit=True)
        self.trace = trace
        # Top-level spans point at the trace id -- or, in a trace continued from another
        # process (a Celery task), at the span that started it there.
        if parent is None or parent is trace:
            self.parent_id = trace.parent_id or trace.id
        else:
            self.parent_id = parent.id
        self.id = _new_id()
        self.start_time = time.time()
        self._start_perf = time.perf_counter()

    def end(self, error: BaseException | ErrorInfo | str | None = None) -> None:
        """Finish the span. Idempotent."""
        trace = self.trace
        if self._end_perf or trace is None:
            return
        if error is not None:
            self.set_error(error)
        self.end_time = time.time()
        self._end_perf = time.perf_counter()
        if self._has_finish:
            self._finish()
        if trace.recording:
            trace._add(self)
        if self._implicit is not None:
            self._implicit.end()

    def _finish(self) -> None:
        """Hook for subclasses: last chance to settle state before the span is handed over."""

    _has_finish = False  # True in subclasses that override _finish (saves a call per span)

    def __enter__(self) -> Self:
        self._previous = previous = context.current_node()
        self._open(previous)
        self._token = context.activate(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            context.restore(self._token, self._previous)
            self._token = None
        self.end(exc)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- decorator -----------------------------------------------------------------------------

    def _copy(self) -> Span:
        """A fresh, unstarted span with this one's settings (one per decorated call)."""
        clone = object.__new__(type(self))
        _Timed.__init__(clone)
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if slot not in _Timed.__slots__ and hasattr(self, slot):
                    value = getattr(self, slot)
                    if isinstance(value, (dict, list)):
                        value = value.copy()
                    object.__setattr__(clone, slot, value)
        return clone

    def _record_call(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        if self.input is UNSET:
            self.input = _call_arguments(fn, args, kwargs)

    def _record_result(self, result: Any) -> None:
        if self.output is UNSET:
            self.output = snapshot(result)

    def _record_item(self, item: Any) -> None:
        """An item yielded by a decorated generator (a generation streams its text)."""

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call runs in a new span whose input is the call's arguments and
        whose output is the return value."""
        if self.name == self.kind:
            self.name = getattr(fn, "__name__", self.kind)
        return decorate(self, fn)


def _call_arguments(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """The call's arguments by parameter name, without ``self`` / ``cls``."""
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return snapshot({"args": list(args), "kwargs": dict(kwargs)} if kwargs else list(args))
    arguments = dict(bound.arguments)
    first = next(iter(arguments), None)
    if first in ("self", "cls"):
        arguments.pop(first)
    return snapshot(arguments)
