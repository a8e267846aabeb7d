"""What a trace hands to the delivery layer: :class:`TraceRecord`, and the small values spans
keep (:class:`ErrorInfo` for a failure, :data:`UNSET` for "not given")."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .sizing import EVENT_OVERHEAD, approx_size

if TYPE_CHECKING:
    from .spans import Span

__all__ = ["UNSET", "ErrorInfo", "TraceRecord"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What is kept of an exception: its type, message and HTTP status, not the object itself
    (a traceback would keep every frame of the request alive until export)."""

    type: str
    message: str
    status: int | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, asyncio.CancelledError):
            return cls("CancelledError", "cancelled")
        status = _status_of(exc)
        try:
            message = str(exc)
        except Exception:
            message = ""
        return cls(type(exc).__name__, message, status)

    @classmethod
    def coerce(cls, error: BaseException | ErrorInfo | str) -> ErrorInfo:
        if isinstance(error, ErrorInfo):
            return error
        if isinstance(error, BaseException):
            return cls.from_exception(error)
        return cls("Error", _safe_str(error))  # str() of a hostile object may raise


def _safe_str(value: Any) -> str:
    """``str(value)`` for ids and names from the application, which must never raise into it."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _status_of(exc: BaseException) -> int | None:
    try:
        candidates = (
            getattr(exc, "status_code", None),
            getattr(getattr(exc, "response", None), "status_code", None),
            getattr(exc, "status", None),
            getattr(exc, "code", None),
        )
    except Exception:  # an exception class with a hostile __getattr__
        return None
    for candidate in candidates:
        if (
            isinstance(candidate, int)
            and not isinstance(candidate, bool)
            and (100 <= candidate <= 599)
        ):
            return candidate
    return None


@dataclass(slots=True)
class TraceRecord:
    """A finished trace (or an early part of one), as handed to the delivery layer."""

    trace_id: str
    name: str
    distinct_id: str | None
    session_id: str | None
    replay_session_id: str | None
    properties: dict[str, Any]
    groups: dict[str, Any]
    start: float
    end: float
    latency: float
    input_state: Any
    output_state: Any
    error: ErrorInfo | None
    emit_trace_event: bool
    spans: list[Span] = field(default_factory=list)
    #: Whether streamed segments render as chunk spans (``settings.chunk_spans``).
    chunk_spans: bool = False
    #: Feedback given while the trace was open (``trace_feedback.FeedbackItem``): it is about other
    #: traces, and only borrows this one's identity.
    feedback: Sequence[Any] = ()

    @property
    def event_count(self) -> int:
        """How many events this record renders to (chunk spans included only when they are
        rendered: the exporter counts exactly this many as ``queued``)."""
        count = len(self.spans) + (1 if self.emit_trace_event else 0)
        for item in self.feedback:
            count += item.event_count
        if self.chunk_spans:
            for span in self.spans:
                segments = getattr(span, "_segments", None)
                if segments:
                    count += len(segments)
        return count

    @property
    def approx_bytes(self) -> int:
        """About how much memory this record's events hold (see :mod:`.sizing`): what the
        exporter's ``max_queue_bytes`` bound counts. Cheap: no serialisation."""
        events = len(self.spans) + 1
        total = EVENT_OVERHEAD * events
        if self.properties:
            total += approx_size(self.properties) * events
        if self.input_state is not None:
            total += approx_size(self.input_state)
        if self.output_state is not None:
            total += approx_size(self.output_state)
        # Inlined (no call per span when it can be helped): this runs on the request thread.
        for span in self.spans:
            value = span.input
            if value is not UNSET:
                total += len(value) if type(value) is str else approx_size(value)
            value = span.output
            if value is not UNSET:
                total += len(value) if type(value) is str else approx_size(value)
            if span.properties:
                total += approx_size(span.properties)
            if span.error is not None:
                total += len(span.error.message)
            if span._sized_extra:
                total += span._extra_bytes()
        for item in self.feedback:
            total += EVENT_OVERHEAD * item.event_count
        return total


UNSET: Any = object()
_NO_COST: Mapping[str, float] = MappingProxyType({})
