"""Finished spans to PostHog events: pure functions, run off the caller's thread.

=========================  ===========================================
span                       event
=========================  ===========================================
the trace (root)           ``$ai_trace``, only if it recorded a span
generation                 ``$ai_generation``
embedding                  ``$ai_embedding``
everything else            ``$ai_span`` (kind in ``$ai_span_type``)
=========================  ===========================================

Properties follow PostHog's schema (research/posthog.md §1): ``$ai_parent_id`` is the parent
span's id or the trace id for top-level spans; ``$ai_latency`` is in seconds; the timestamp is
the span's end; the event ``uuid`` is the span id (stable, so a retried event deduplicates);
token counts the application did not give are omitted, not sent as 0; costs appear only when
the application supplied them. Custom properties come first, so they can never overwrite a
computed ``$ai_*`` key.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from .captured import CONTENT_PROPERTIES, TOKEN_PROPERTIES, CapturedEvent
from .generations import Embedding, Generation, _ModelCall
from .jsonenc import json_float
from .messages import jsonable, normalize_messages, normalize_tools, shrink_event
from .settings import Settings
from .spans import UNSET, ErrorInfo, Span, TraceRecord
from .stats import Stats

__all__ = ["LIB", "LIB_VERSION", "render"]

logger = logging.getLogger("posthog_llm_trace")

LIB = "posthog-llm-trace"
try:
    LIB_VERSION = metadata.version(LIB)
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    LIB_VERSION = "0"

_EVENT_NAMES = {"generation": "$ai_generation", "embedding": "$ai_embedding"}
_LIB_PROPERTIES = {
    "$ai_lib": LIB,
    "$ai_lib_version": LIB_VERSION,
    "$lib": LIB,
    "$lib_version": LIB_VERSION,
}
#: Longest string kept when events go to PostHog's AI lane (8 MiB per event, less room).
AI_STRING_LIMIT = 8 * 1024 * 1024 - 64 * 1024


def iso(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds, the form PostHog's SDKs send."""
    # datetime.fromtimestamp's own rounding (to the microsecond, half to even), then the
    # milliseconds truncated as isoformat() does. The date and time of day are formatted once
    # per second (a process's events crowd into the same few seconds) and the milliseconds
    # come from a table: this runs for every event on the export thread.
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    second = int(whole)
    last = _last_second
    if last[0] != second:
        last = _remember_second(second)
    return last[1] + _MILLIS[micros // 1000]


def _remember_second(second: int) -> tuple[int, str]:
    global _last_second
    text = _dt.datetime.fromtimestamp(second, _dt.UTC).replace(tzinfo=None).isoformat()
    _last_second = (second, text)  # one tuple, swapped whole: safe across threads
    return _last_second


_last_second: tuple[int, str] = (-(2**63), "")
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def render(
    record: TraceRecord, settings: Settings, stats: Stats | None = None, *, fit: bool = True
) -> list[dict[str, Any]]:
    """All PostHog events of one trace record. Never raises: a span that cannot be rendered is
    logged (without its content) and counted as ``invalid``.

    With ``fit`` every event is cut to ``settings.max_event_bytes``. The HTTP transport passes
    False: it serialises each event anyway and shrinks the rare one over the limit then, which
    saves a JSON encoding per event on the export path.
    """
    mapper = _Mapper(record, settings, fit)
    events: list[dict[str, Any]] = []
    for span in record.spans:
        try:
            events.extend(mapper.span_events(span))
        except Exception:
            logger.exception("posthog-llm-trace could not render a %s span", span.kind)
            if stats is not None:
                # Every event the span stood for in event_count (its chunk spans too).
                segments = getattr(span, "_segments", None) if record.chunk_spans else None
                stats.dropped("invalid", 1 + (len(segments) if segments else 0))
    if record.emit_trace_event:
        try:
            events.append(mapper.trace_event())
        except Exception:
            logger.exception("posthog-llm-trace could not render a trace")
            if stats is not None:
                stats.dropped("invalid")
    if record.feedback:
        events.extend(_feedback_events(record, settings, stats, fit))
    return events


def _feedback_events(
    record: TraceRecord, settings: Settings, stats: Stats | None, fit: bool
) -> list[dict[str, Any]]:
    from .trace_feedback import render_feedback  # a cycle: trace_feedback imports this module

    return render_feedback(record, settings, stats, fit=fit)


class _Mapper:
    def __init__(self, record: TraceRecord, settings: Settings, fit: bool = True) -> None:
        self.fit = fit
        self.record = record
        self.settings = settings
        # Strings are cut at the budget of the endpoint the events go to: the AI lane takes
        # 8 MiB per event, and the transport shrinks an event for /batch/ if it must go there.
        self.limit = settings.max_event_bytes
        if not fit and settings.ai_endpoint:
            self.limit = max(self.limit, AI_STRING_LIMIT)
        default = settings.default_distinct_id
        self.distinct_id = _text(record.distinct_id) or default
        # Custom properties (the trace's, then a span's own) come first; the computed keys in
        # ``base`` are written over them, so a custom property can never shadow one.
        props = record.properties
        self.custom: dict[str, Any] = jsonable(props, self.limit) if props else {}
        base: dict[str, Any] = {"$ai_trace_id": _text(record.trace_id)}
        if record.session_id:
            base["$ai_session_id"] = _text(record.session_id)
        if record.replay_session_id:
            base["$session_id"] = _text(record.replay_session_id)
        if record.groups:
            base["$groups"] = jsonable(record.groups, self.limit)
        if self.distinct_id == default:
            # One shared id for all anonymous traffic must never become one giant person.
            base["$process_person_profile"] = False
        base.update(_LIB_PROPERTIES)
        self.base = base

    def props(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new property dict: custom properties, then the computed base over them."""
        props = dict(self.custom)
        if own:
            props.update(jsonable(own, self.limit))
        props.update(self.base)
        return props

    # --- content ------------------------------------------------------------------------------

    def content(self, value: Any, shape: Callable[[Any], Any] | None = None) -> Any:
        """A content field: removed by privacy mode, shaped, then passed through ``mask``."""
        if self.settings.privacy_mode:
            return None
        data = shape(value) if shape is not None else jsonable(value, self.limit)
        mask = self.settings.mask
        if mask is not None and data is not None:
            try:
                data = jsonable(mask(data), self.limit)
            except Exception:
                # Never send unmasked content because a mask failed.
                logger.warning("posthog-llm-trace mask raised; the field is withheld")
                data = "[withheld: mask failed]"
        return data

    def error(self, props: dict[str, Any], error: ErrorInfo | None) -> None:
        if error is None:
            return
        props["$ai_is_error"] = True
        props["$ai_error_type"] = error.type
        if self.settings.privacy_mode:
            # The message may quote the prompt: keep only what identifies the failure.
            props["$ai_error"] = error.type + (f": {error.status}" if error.status else "")
        else:
            text = f"{error.type}: {error.message}" if error.message else error.type
            props["$ai_error"] = self.content(text)

    def event(self, name: str, props: dict[str, Any], uuid: str, ts: float) -> dict[str, Any]:
        event = {
            "event": name,
            "distinct_id": self.distinct_id,
            "properties": props,
            "timestamp": iso(ts),
            "uuid": uuid,
        }
        if not self.fit:
            return event
        return shrink_event(event, self.limit) or _bare(event)

    # --- events -------------------------------------------------------------------------------

    def trace_event(self) -> dict[str, Any]:
        record = self.record
        props = self.props()
        name = _text(record.name) or "trace"
        props["$ai_span_name"] = name
        props["$ai_trace_name"] = name  # older PostHog versions read this name
        props["$ai_latency"] = json_float(record.latency)
        if record.input_state is not None:
            props["$ai_input_state"] = self.content(record.input_state)
        if record.output_state is not None:
            props["$ai_output_state"] = self.content(record.output_state)
        self.error(props, record.error)
        return self.event("$ai_trace", props, _event_uuid(record.trace_id), record.end)

    def span_events(self, span: Span) -> list[dict[str, Any]]:
        if type(span) is CapturedEvent:
            return [self.captured_event(span)]
        props = self.props(span.properties)
        props["$ai_span_id"] = span.id
        props["$ai_span_name"] = _text(span.name) or span.kind
        props["$ai_parent_id"] = span.parent_id or self.record.trace_id
        props["$ai_latency"] = json_float(span.latency)
        events: list[dict[str, Any]] = []
        if isinstance(span, Generation):
            self.generation(span, props)
            if self.settings.chunk_spans:
                events.extend(self.chunk_events(span))
        elif isinstance(span, Embedding):
            self.embedding(span, props)
        else:
            props["$ai_span_type"] = span.kind
            if span.input is not UNSET:
                props["$ai_input_state"] = self.content(span.input)
            if span.output is not UNSET:
                props["$ai_output_state"] = self.content(span.output)
        self.error(props, span.error)
        if isinstance(span, _ModelCall) and span.captured:
            self.merge_captured(span, props)
        name = _EVENT_NAMES.get(span.kind, "$ai_span")
        events.insert(0, self.event(name, props, _event_uuid(span.id), span.end_time))
        return events

    # --- events captured by another SDK (see captured.py) ----------------------------------------

    def foreign(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The other SDK's properties under our privacy mode, mask and size limit."""
        out: dict[str, Any] = {}
        privacy = self.settings.privacy_mode
        for key, value in values.items():
            if key in CONTENT_PROPERTIES:
                out[key] = None if value is None else self.content(value)
            elif key == "$ai_error" and privacy:
                status = _count(values.get("$ai_http_status"))
                out[key] = "Error" + (f": {status}" if status else "")
            else:
                out[key] = jsonable(value, self.limit)
        return out

    def groups(self, props: dict[str, Any], foreign: Mapping[str, Any]) -> None:
        theirs = foreign.get("$groups")
        if isinstance(theirs, dict) and theirs:
            props["$groups"] = {**theirs, **props.get("$groups", {})}

    def captured_event(self, span: CapturedEvent) -> dict[str, Any]:
        foreign = self.foreign(span.foreign)
        props = dict(self.custom)
        props.update(foreign)
        props.update(self.base)
        self.groups(props, foreign)
        props["$ai_span_id"] = span.id
        props["$ai_parent_id"] = span.parent_id or self.record.trace_id
        props["$ai_span_name"] = _text(span.name) or span.kind
        props.setdefault("$ai_latency", json_float(span.latency))
        if span.event == "$ai_span":
            props["$ai_span_type"] = span.kind
        self.error(props, span.error)
        event = self.event(span.event, props, _event_uuid(span.id), span.end_time)
        if span.distinct_id and span.distinct_id != self.distinct_id:
            # A distinct id given to this one event wins, as it does in posthog-python.
            event["distinct_id"] = span.distinct_id
            event["properties"].pop("$process_person_profile", None)
        return event

    def merge_captured(self, call: _ModelCall, props: dict[str, Any]) -> None:
        """One call seen twice -- by our SDK instrumentation and by posthog-python's wrapper --
        becomes one event, field by field: what we computed wins (links, identity, time to first
        token, streaming), what only the wrapper knew is added (``$ai_usage``, service tier,
        instructions...). Token counts come from one side as a group, never mixed."""
        foreign = self.foreign(call.captured or {})
        ours_tokens = any(key in props for key in TOKEN_PROPERTIES)
        own = call.properties
        for key, value in foreign.items():
            if key in self.base or (ours_tokens and key in TOKEN_PROPERTIES):
                continue
            if key in own:
                continue  # the application's own property on its generation
            placeholder = key in ("$ai_model", "$ai_provider") and props.get(key) == "unknown"
            if key in props and key not in self.custom and not placeholder:
                continue  # computed by us
            props[key] = value
        self.groups(props, foreign)

    def generation(self, gen: Generation, props: dict[str, Any]) -> None:
        props["$ai_model"] = _text(gen.model) or "unknown"
        props["$ai_provider"] = (_text(gen.provider) or "unknown").lower()
        if gen.input is not UNSET:
            props["$ai_input"] = self.content(
                gen.input, lambda v: normalize_messages(v, "user", self.limit)
            )
        output = gen.output if gen.output is not UNSET else gen.streamed_output()
        if output is not None:
            props["$ai_output_choices"] = self.content(
                output, lambda v: normalize_messages(v, "assistant", self.limit)
            )
        self.usage(gen.usage, props)
        if gen.model_parameters:
            props["$ai_model_parameters"] = jsonable(gen.model_parameters, self.limit)
        if gen.tools is not None:  # not truthiness: an array's is ambiguous and raises
            try:
                tools = normalize_tools(gen.tools, self.limit)
            except Exception:  # tool objects of an unknown kind: send what JSON can say
                tools = jsonable(gen.tools, self.limit)
            if tools:
                props["$ai_tools"] = tools
        if gen.stop_reason:
            props["$ai_stop_reason"] = _text(gen.stop_reason)
        self.http(gen, props)
        ttft = gen.time_to_first_token
        streamed = bool(gen.stream) or ttft is not None
        if streamed or gen.stream is False:
            props["$ai_stream"] = streamed
        if ttft is not None:
            props["$ai_time_to_first_token"] = json_float(ttft)
        self.cost(gen.cost, props)

    def embedding(self, emb: Embedding, props: dict[str, Any]) -> None:
        props["$ai_model"] = _text(emb.model) or "unknown"
        props["$ai_provider"] = (_text(emb.provider) or "unknown").lower()
        if emb.input is not UNSET:
            props["$ai_input"] = self.content(emb.input)
        self.usage(emb.usage, props)
        self.http(emb, props)
        self.cost(emb.cost, props)

    @staticmethod
    def http(call: _ModelCall, props: dict[str, Any]) -> None:
        status = _count(call.http_status)
        if status is None and call.error is not None:
            status = call.error.status
        if status is not None:
            props["$ai_http_status"] = status
        if call.base_url:
            props["$ai_base_url"] = _text(call.base_url)

    @staticmethod
    def usage(usage: dict[str, Any], props: dict[str, Any]) -> None:
        for key, prop in (
            ("input_tokens", "$ai_input_tokens"),
            ("output_tokens", "$ai_output_tokens"),
            ("cache_read_input_tokens", "$ai_cache_read_input_tokens"),
            ("cache_creation_input_tokens", "$ai_cache_creation_input_tokens"),
            ("cache_creation_5m_input_tokens", "$ai_cache_creation_5m_input_tokens"),
            ("cache_creation_1h_input_tokens", "$ai_cache_creation_1h_input_tokens"),
            ("reasoning_tokens", "$ai_reasoning_tokens"),
            ("web_search_count", "$ai_web_search_count"),
        ):
            count = _count(usage.get(key))
            if count is not None:  # unknown counts are omitted, never sent as 0
                props[prop] = count
        if "$ai_input_tokens" in props and (
            "$ai_cache_read_input_tokens" in props or "$ai_cache_creation_input_tokens" in props
        ):
            # Our input count is gross (cache included). Saying so explicitly stops PostHog
            # from guessing "exclusive" for Claude models and double-billing the cache.
            props["$ai_cache_reporting_exclusive"] = False

    @staticmethod
    def cost(raw: Mapping[str, Any], props: dict[str, Any]) -> None:
        cost = {k: v for k, v in ((k, _usd(v)) for k, v in raw.items()) if v is not None}
        if not cost:
            return
        if "input" in cost:
            props["$ai_input_cost_usd"] = cost["input"]
        if "output" in cost:
            props["$ai_output_cost_usd"] = cost["output"]
        if "total" in cost:
            props["$ai_total_cost_usd"] = cost["total"]
            if "input" not in cost or "output" not in cost:
                # A total alone is only trusted by PostHog as a passthrough.
                props["$ai_cost_passthrough"] = True
        elif "input" in cost and "output" in cost:
            props["$ai_total_cost_usd"] = json_float(cost["input"] + cost["output"])

    def chunk_events(self, gen: Generation) -> list[dict[str, Any]]:
        """One ``$ai_span`` of kind chunk per streamed segment, never one per token."""
        events = []
        for seq, (kind, _start, start_perf, end, end_perf, parts, meta) in enumerate(
            gen._segments or ()
        ):
            chunk_id = f"{gen.id}-chunk-{seq}"
            props = self.props()
            props.update(
                {
                    "$ai_span_id": chunk_id,
                    "$ai_span_name": f"chunk: {kind}",
                    "$ai_parent_id": gen.id,
                    "$ai_span_type": "chunk",
                    "$ai_latency": json_float(max(0.0, end_perf - start_perf)),
                    "chunk_type": kind,
                    "chunk_sequence_number": seq,
                }
            )
            text = "".join(parts)
            if kind == "tool_call":
                output: Any = {"tool_call_id": meta[0], "tool_name": meta[1], "arguments": text}
            else:
                output = {"text": text}
            props["$ai_output_state"] = self.content(output)
            events.append(self.event("$ai_span", props, _chunk_uuid(gen.id, seq), end))
        return events


def _chunk_uuid(span_id: str, seq: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{span_id}/{seq}"))


def _event_uuid(ident: str) -> str:
    """The event's uuid: the span (or trace) id when it is a UUID -- ours always are -- else a
    UUID derived from it, so that the event still deduplicates on retry."""
    if _UUID.fullmatch(ident):  # a regular expression is several times cheaper than UUID()
        return ident.lower()
    return str(uuid.uuid5(uuid.NAMESPACE_OID, str(ident)))


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _text(value: Any) -> str | None:
    """A scalar property as a clean string (names, model, provider...), or None."""
    if type(value) is str and len(value) <= 1000 and value.isprintable():
        return value  # the usual name, model or id: nothing to clean
    if value is None:
        return None
    text = value if isinstance(value, str) else jsonable(value, 1000)
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False)
    return jsonable(text, 1000) if len(text) > 1000 or not text.isprintable() else text


def _count(value: Any) -> int | None:
    """A token count or status: a non-negative int, or None when unknown or invalid."""
    if type(value) is int:
        return value if value >= 0 else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def _usd(value: Any) -> float | None:
    """A cost in USD: a finite number, or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return json_float(number) if math.isfinite(number) else None


def _bare(event: dict[str, Any]) -> dict[str, Any]:
    """Last resort for an event whose ids alone break the budget: keep only the linking keys."""
    props = event["properties"]
    keep = ("$ai_trace_id", "$ai_span_id", "$ai_parent_id", "$ai_span_name", "$ai_session_id")
    event["properties"] = {k: props[k] for k in keep if k in props and len(str(props[k])) < 200}
    event["properties"]["$ai_error"] = "[event over the size budget: content removed]"
    return event
