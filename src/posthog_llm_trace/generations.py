"""The spans of LLM calls: :class:`Generation` (``$ai_generation``) and :class:`Embedding`
(``$ai_embedding``), with token usage read from provider responses, streaming chunks and costs.

Like every span they only keep references and clock readings; the mapping to PostHog's
properties is in :mod:`.events`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .messages import snapshot
from .providers import read_response, read_usage
from .records import _NO_COST, UNSET, _safe_str
from .sizing import EVENT_OVERHEAD, approx_size
from .spans import Span

__all__ = ["Embedding", "Generation"]


class _ModelCall(Span):
    """What generations and embeddings share: the model, the provider's endpoint and status,
    token usage and, only when the application knows them, real costs."""

    __slots__ = (
        "base_url",
        "captured",
        "cost",
        "http_status",
        "model",
        "provider",
        "provider_call",
        "usage",
    )

    def __init__(
        self,
        name: str | None,
        model: str | None,
        provider: str | None,
        input: Any,
        base_url: str | None,
        properties: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(name, input=input, properties=properties)
        self.model = model
        self.provider = provider
        self.base_url = base_url
        self.usage: dict[str, Any] = {}
        self.cost: Mapping[str, float] = _NO_COST  # a dict once a cost is set
        self.http_status: int | None = None
        #: True once an instrumented SDK call fills this span (one call, one event).
        self.provider_call = False
        #: What posthog-python's wrapper captured for this same call (see
        #: :mod:`.providers.posthog`): merged field by field, ours winning where we know more.
        self.captured: dict[str, Any] | None = None

    def set_model(self, model: str, provider: str | None = None) -> None:
        self.model = model
        if provider is not None:
            self.provider = provider

    def set_http_status(self, status: int) -> None:
        self.http_status = status

    def _set_costs(self, **usd: float | None) -> None:
        cost = dict(self.cost)
        cost.update((key, value) for key, value in usd.items() if value is not None)
        self.cost = cost


class Generation(_ModelCall):
    """One LLM call: ``$ai_generation``. Record usage, streaming chunks, stop reason and, only
    when the application knows them, real costs."""

    __slots__ = (
        "_first_token_perf",
        "_segments",
        "model_parameters",
        "sdk_stream",
        "stop_reason",
        "stream",
        "tools",
    )

    default_kind = "generation"

    def __init__(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        input: Any = UNSET,
        model_parameters: Mapping[str, Any] | None = None,
        tools: Any = None,
        base_url: str | None = None,
        stream: bool | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, model, provider, input, base_url, properties)
        self.model_parameters = dict(model_parameters) if model_parameters else None
        self.tools = tools
        self.stream = stream
        self.stop_reason: str | None = None
        self._first_token_perf = 0.0
        #: True while an instrumented SDK stream records this generation's chunks.
        self.sdk_stream = False
        #: Streamed segments: [kind, start_wall, start_perf, end_wall, end_perf, parts, meta]
        self._segments: list[list[Any]] | None = None

    def set_output(self, value: Any, *, stop_reason: str | None = None) -> None:
        """The completion: a string, a message, a list of messages or a provider response
        (tool calls included). A provider response (OpenAI ``ChatCompletion`` or Responses
        ``Response``, Anthropic ``Message``) also gives the stop reason and, when they are not
        set yet, the usage and the model."""
        kind = type(value)
        read = None if kind is str or kind is list or value is None else read_response(value)
        if read is None:
            self.output = snapshot(value)
        else:
            self._fill(read, output=True)
        if stop_reason is not None:
            self.stop_reason = stop_reason

    def _fill(self, read: dict[str, Any], *, output: bool) -> None:
        """Record what a provider response said (see :func:`.providers.read_response`)."""
        if output and "output" in read:
            self.output = read["output"]
        reason = read.get("stop_reason")
        if reason is not None and (output or self.stop_reason is None):
            self.stop_reason = reason
        if "usage" in read and not self.usage:
            self.usage.update(read["usage"])
        if self.model is None and "model" in read:
            self.model = read["model"]

    def set_stop_reason(self, reason: str) -> None:
        self.stop_reason = reason

    def set_usage(
        self,
        usage: Any = None,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_input_tokens: int | None = None,
        cache_creation_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        web_search_count: int | None = None,
    ) -> None:
        """Token counts. ``input_tokens`` is gross (cache reads and writes included), the way
        OpenAI reports it. Pass a provider's usage object (OpenAI Chat or Responses, Anthropic)
        as ``usage`` to have it read for you. Counts you do not know: leave them out."""
        counts = self.usage
        if usage is not None:
            _merge_usage(counts, _usage_from(usage))
        if input_tokens is not None:
            counts["input_tokens"] = input_tokens
        if output_tokens is not None:
            counts["output_tokens"] = output_tokens
        if cache_read_input_tokens is not None:
            counts["cache_read_input_tokens"] = cache_read_input_tokens
        if cache_creation_input_tokens is not None:
            counts["cache_creation_input_tokens"] = cache_creation_input_tokens
        if reasoning_tokens is not None:
            counts["reasoning_tokens"] = reasoning_tokens
        if web_search_count is not None:
            counts["web_search_count"] = web_search_count

    def set_cost(
        self,
        *,
        input_usd: float | None = None,
        output_usd: float | None = None,
        total_usd: float | None = None,
    ) -> None:
        """Real costs, when the application knows them (a gateway's bill). Otherwise PostHog
        prices the generation from model, provider and tokens."""
        self._set_costs(input=input_usd, output=output_usd, total=total_usd)

    def chunk(
        self,
        delta: str = "",
        *,
        kind: str = "text",
        tool_call_id: str | None = None,
        tool_name: str | None = None,
    ) -> None:
        """One streamed piece. The first that carries something (text, or a tool call's name)
        sets the time to first token; empty pieces (a role-only first chunk) are ignored. Text
        pieces add up to the output unless ``set_output`` is called. ``kind`` is ``text``,
        ``reasoning`` or ``tool_call`` (``delta`` then being a piece of the call's JSON
        arguments).

        While an instrumented SDK stream fills this generation, it records the pieces itself
        and these calls are ignored: the text is not counted twice."""
        if self.sdk_stream:
            return
        self._chunk(delta, kind, tool_call_id, tool_name)

    def _chunk(
        self, delta: Any, kind: str, tool_call_id: str | None, tool_name: str | None
    ) -> None:
        if type(delta) is not str:
            delta = "" if delta is None else _safe_str(delta)
        if not delta and not tool_name and tool_call_id is None:
            return
        now = time.perf_counter()
        if not self._first_token_perf:
            self._first_token_perf = now
        segments = self._segments
        if segments is None:
            segments = self._segments = []
        last = segments[-1] if segments else None
        if (
            last is None
            or last[0] != kind
            or (kind == "tool_call" and tool_call_id is not None and last[6][0] != tool_call_id)
        ):
            wall = time.time()
            segments.append([kind, wall, now, wall, now, [delta], [tool_call_id, tool_name]])
            return
        last[5].append(delta)
        last[4] = now
        if tool_name and not last[6][1]:
            last[6][1] = tool_name

    _has_finish = True

    def _finish(self) -> None:
        if self._segments:
            wall_now, perf_now = self.end_time, self._end_perf
            for segment in self._segments:
                # Wall time of a segment's end, from the monotonic reading, so that chunk spans
                # carry timestamps consistent with their latency.
                segment[3] = wall_now - (perf_now - segment[4])

    _sized_extra = True

    def _extra_bytes(self) -> int:
        total = 0
        if self.tools is not None:
            total += approx_size(self.tools)
        if self.captured:
            total += approx_size(self.captured)
        segments = self._segments
        if segments:
            # The parts, counted twice: the output built from them, and chunk spans if any.
            for segment in segments:
                total += 2 * sum(map(len, segment[5])) + EVENT_OVERHEAD
        return total

    def _record_item(self, item: Any) -> None:
        if isinstance(item, str):
            self._chunk(item, "text", None, None)

    def _record_result(self, result: Any) -> None:
        # A provider response also says what it cost, why it stopped and which model answered.
        if type(result) is str:
            super()._record_result(result)
            return
        read = read_response(result)
        if read is not None:
            self._fill(read, output=self.output is UNSET)
            return
        super()._record_result(result)
        try:  # any other object or dict with ``usage`` / ``model``
            if isinstance(result, dict):
                usage, model = result.get("usage"), result.get("model")
            else:
                usage, model = getattr(result, "usage", None), getattr(result, "model", None)
        except Exception:
            return
        if usage is not None and not self.usage:
            self.usage.update(_usage_from(usage))
        if self.model is None and isinstance(model, str):
            self.model = model

    @property
    def time_to_first_token(self) -> float | None:
        if not self._first_token_perf:
            return None
        return max(0.0, self._first_token_perf - self._start_perf)

    def streamed_output(self) -> dict[str, Any] | None:
        """The assistant message built from text and tool-call chunks."""
        segments = self._segments or ()
        text = "".join("".join(s[5]) for s in segments if s[0] == "text")
        calls = [
            {"id": s[6][0], "function": {"name": s[6][1], "arguments": "".join(s[5])}}
            for s in segments
            if s[0] == "tool_call"
        ]
        if not text and not calls:
            return None
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        return message


def _usage_from(usage: Any) -> dict[str, int]:
    """Token counts from any supported provider's usage object or dict; an empty dict for
    anything else (never an exception)."""
    return read_usage(usage) or {}


_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")


def _merge_usage(counts: dict[str, Any], new: dict[str, int]) -> None:
    """Add counts read from a usage object. A read without cache counts gives a net input
    count (Anthropic's stream events do); once a gross one is known it is not lowered."""
    if (
        "input_tokens" in new
        and "input_tokens" in counts
        and not any(k in new for k in _CACHE_KEYS)
        and any(k in counts for k in _CACHE_KEYS)
    ):
        new = dict(new)
        new["input_tokens"] = max(new["input_tokens"], counts["input_tokens"])
    counts.update(new)


class Embedding(_ModelCall):
    """One embedding call: ``$ai_embedding``."""

    __slots__ = ()

    default_kind = "embedding"

    _sized_extra = True

    def _extra_bytes(self) -> int:
        return approx_size(self.captured) if self.captured else 0

    def __init__(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        input: Any = UNSET,
        base_url: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, model, provider, input, base_url, properties)

    def set_usage(self, usage: Any = None, *, input_tokens: int | None = None) -> None:
        """Input tokens, given or read from a provider's usage object."""
        if usage is not None:
            self.usage.update(_usage_from(usage))
        if input_tokens is not None:
            self.usage["input_tokens"] = input_tokens

    def set_cost(self, *, input_usd: float | None = None, total_usd: float | None = None) -> None:
        """Real costs, when the application knows them."""
        self._set_costs(input=input_usd, total=total_usd)
