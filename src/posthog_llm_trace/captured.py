"""AI events made elsewhere (posthog-python's wrappers, its LangChain handler, an app's own
``ph.capture("$ai_generation", ...)``) taken into one of our traces.

A :class:`CapturedEvent` is a span whose content is the other SDK's property dict, as that SDK
built it. It lives in the trace like any span, so the trace's identity (bound when the trace
ends), session, groups and properties, our privacy mode, ``mask``, size limit, delivery and
``stats()`` all apply to it; :mod:`.events` renders it. Which events are taken, and how their
parent links are re-rooted, is :mod:`.providers.posthog`'s business.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .records import _safe_str
from .sizing import approx_size
from .spans import Span, Trace, _new_id

__all__ = ["CONTENT_PROPERTIES", "LINK_PROPERTIES", "CapturedEvent"]

#: Properties holding prompts, completions or state: withheld by privacy mode, passed to mask.
CONTENT_PROPERTIES = (
    "$ai_input",
    "$ai_output_choices",
    "$ai_input_state",
    "$ai_output_state",
    "$ai_instructions",
)

#: Properties that place an event in a trace: ours replace the other SDK's.
LINK_PROPERTIES = frozenset(
    {"$ai_trace_id", "$ai_parent_id", "$ai_span_id", "$process_person_profile"}
)

#: Token counts, taken as one group: from one record or the other, never mixed.
TOKEN_PROPERTIES = frozenset(
    {
        "$ai_input_tokens",
        "$ai_output_tokens",
        "$ai_cache_read_input_tokens",
        "$ai_cache_creation_input_tokens",
        "$ai_cache_reporting_exclusive",
        "$ai_reasoning_tokens",
    }
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 and value == value and value != float("inf") else None


class CapturedEvent(Span):
    """One AI event another SDK captured, now a span of the current trace."""

    __slots__ = ("distinct_id", "event", "foreign")

    def __init__(
        self,
        event: str,
        properties: Mapping[str, Any],
        *,
        kind: str,
        distinct_id: str | None = None,
    ) -> None:
        name = properties.get("$ai_span_name")
        super().__init__(None if name is None else _safe_str(name), kind=kind)
        #: ``$ai_generation``, ``$ai_embedding`` or ``$ai_span``.
        self.event = event
        #: The other SDK's properties, minus the links to its own trace.
        self.foreign = {k: v for k, v in properties.items() if k not in LINK_PROPERTIES}
        #: A distinct id the application gave this one event explicitly (it wins, as in
        #: posthog-python); None for the trace's.
        self.distinct_id = distinct_id

    _sized_extra = True

    def _extra_bytes(self) -> int:
        return approx_size(self.foreign)

    def place(self, trace: Trace, span_id: str | None, parent_id: str) -> None:
        """Put the event in ``trace``: ended now, started ``$ai_latency`` seconds ago."""
        self.trace = trace
        self.id = span_id or _new_id()
        self.parent_id = parent_id
        latency = _number(self.foreign.get("$ai_latency")) or 0.0
        self.end_time = time.time()
        self._end_perf = time.perf_counter()
        self.start_time = self.end_time - latency
        self._start_perf = self._end_perf - latency
