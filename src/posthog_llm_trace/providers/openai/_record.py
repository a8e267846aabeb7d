"""Recording the ``openai`` SDK's calls: its resource classes patched, its streams followed.

Imported by :func:`.install` only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ...generations import Embedding, Generation
from ...spans import UNSET
from .. import _calls, begin_call, begin_embedding, recording
from . import read_response, responses_input

logger = logging.getLogger("posthog_llm_trace")

#: Call arguments that are model parameters (``$ai_model_parameters``).
MODEL_PARAMETERS = frozenset(
    (
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "seed",
        "reasoning_effort",
        "reasoning",
        "service_tier",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "verbosity",
        "truncation",
        "modalities",
        "prediction",
        "dimensions",
        "encoding_format",
    )
)

#: The SDK's "not given" sentinels (``NOT_GIVEN``, ``omit``), set by :func:`install`.
_SENTINELS: tuple[type, ...] = ()
#: The SDK's raw response types (``with_raw_response``, ``with_streaming_response``) and the
#: legacy one of ``with_raw_response``, whose body is read; set by :func:`install`.
_RAW: tuple[type, ...] = ()
_LEGACY: tuple[type, ...] = ()


def model_parameters(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    params = {
        key: value
        for key, value in kwargs.items()
        if key in MODEL_PARAMETERS and value is not None and not isinstance(value, _SENTINELS)
    }
    return params or None


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, _SENTINELS)


def _base_url(resource: Any) -> str | None:
    try:
        return str(resource._client.base_url).rstrip("/")
    except Exception:
        return None


# --- streams -----------------------------------------------------------------------------------


def _chat_chunk(gen: Generation, state: dict[str, Any], chunk: Any) -> None:
    choices = chunk.choices
    if choices:
        choice = choices[0]
        if choice.index == 0:
            delta = choice.delta
            if delta is not None:
                extra = delta.__pydantic_extra__
                if extra:  # OpenAI-compatible servers stream reasoning as an extra field
                    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                    if isinstance(reasoning, str) and reasoning:
                        gen._chunk(reasoning, "reasoning", None, None)
                content = delta.content
                if content:
                    gen._chunk(content, "text", None, None)
                calls = delta.tool_calls
                if calls:
                    ids = state.setdefault("ids", {})
                    for call in calls:
                        if call.id:
                            ids[call.index] = call.id
                        fn = call.function
                        gen._chunk(
                            (fn.arguments or "") if fn is not None else "",
                            "tool_call",
                            ids.get(call.index, str(call.index)),
                            fn.name if fn is not None else None,
                        )
            reason = choice.finish_reason
            if reason:
                gen.stop_reason = reason
    usage = chunk.usage
    if usage is not None:
        gen.set_usage(usage)
    if gen.model is None and chunk.model:
        gen.model = chunk.model


def _responses_event(gen: Generation, state: dict[str, Any], event: Any) -> None:
    kind = event.type
    if kind == "response.output_text.delta":
        gen._chunk(event.delta, "text", None, None)
    elif kind == "response.function_call_arguments.delta":
        call_id, name = state.get(event.item_id) or (event.item_id, None)
        gen._chunk(event.delta, "tool_call", call_id, name)
    elif kind == "response.output_item.added":
        item = event.item
        if item.type == "function_call":
            state[item.id] = (item.call_id, item.name)
            gen._chunk("", "tool_call", item.call_id, item.name)
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        gen._chunk(event.delta, "reasoning", None, None)
    elif kind in ("response.completed", "response.incomplete", "response.failed"):
        response = event.response
        read = read_response(response)
        if read is not None:
            gen._fill(read, output=True)
        error = getattr(response, "error", None)
        if kind == "response.failed" and error is not None:
            gen.set_error(str(getattr(error, "message", None) or error))
    elif kind == "error":
        gen.set_error(str(getattr(event, "message", None) or "stream error"))


def _stream_end(gen: Generation, state: dict[str, Any]) -> None:
    """Nothing to settle: chunks and the final event have said it all."""


# --- recording ----------------------------------------------------------------------------------

_patches = _calls.Patches()


def _begin_chat(resource: Any, kwargs: dict[str, Any]) -> tuple[Generation, bool] | None:
    messages = kwargs.get("messages")
    if messages is not None and type(messages) is not list:
        # Any iterable is accepted: read it once, hand the SDK the same items.
        messages = kwargs["messages"] = list(messages)
    tools = kwargs.get("tools")
    stream = kwargs.get("stream")
    return begin_call(
        "chat.completions",
        provider="openai",
        model=kwargs.get("model"),
        input=UNSET if messages is None else messages,
        model_parameters=model_parameters(kwargs),
        tools=tools if _given(tools) else None,
        base_url=_base_url(resource),
        stream=stream is True,
    )


def _begin_responses(resource: Any, kwargs: dict[str, Any]) -> tuple[Generation, bool] | None:
    value = kwargs.get("input")
    if value is not None and not isinstance(value, str | list):
        value = kwargs["input"] = list(value)
    instructions = kwargs.get("instructions")
    tools = kwargs.get("tools")
    given = _given(value)
    return begin_call(
        "responses",
        provider="openai",
        model=kwargs.get("model"),
        input=responses_input(value if given else None, instructions)
        if given or _given(instructions)
        else UNSET,
        model_parameters=model_parameters(kwargs),
        tools=tools if _given(tools) else None,
        base_url=_base_url(resource),
        stream=kwargs.get("stream") is True,
    )


def _begin_embeddings(resource: Any, kwargs: dict[str, Any]) -> tuple[Embedding, bool] | None:
    value = kwargs.get("input")
    return begin_embedding(
        "embeddings",
        provider="openai",
        model=kwargs.get("model"),
        input=UNSET if value is None else value,
        base_url=_base_url(resource),
    )


def _settle(
    span: Generation | Embedding, owned: bool, result: Any, on_item: _calls.OnItem | None
) -> None:
    """Record a call's result; streams are followed and end their span themselves."""
    if isinstance(result, _RAW):  # with_raw_response / with_streaming_response
        raw: Any = result
        span.http_status = raw.status_code
        legacy = isinstance(raw, _LEGACY)
        if legacy:  # with_raw_response: body read, parse() is cached
            result = raw.parse()
        else:  # the application reads the body itself; we do not
            _calls.end(span, owned)
            return
    if on_item is not None and isinstance(span, Generation):
        response = getattr(result, "response", None)
        if span.http_status is None and response is not None:
            span.http_status = response.status_code
        if _calls.follow_stream(result, span, owned, on_item, _stream_end):
            return
    if span.http_status is None:
        span.http_status = 200
    read = read_response(result)
    if read is not None:
        if isinstance(span, Generation):
            span._fill(read, output=owned or span.output is UNSET)
        else:
            if "usage" in read and not span.usage:
                span.usage.update(read["usage"])
            if span.model is None and "model" in read:
                span.model = read["model"]
    _calls.end(span, owned)


Begin = Callable[[Any, dict[str, Any]], "tuple[Generation | Embedding, bool] | None"]


def _wrap_sync(begin: Begin, on_item: _calls.OnItem | None) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        def create(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _patches.active or not recording():
                return original(self, *args, **kwargs)
            try:
                call = begin(self, kwargs)
            except Exception:
                logger.warning("posthog-llm-trace could not read a call", exc_info=True)
                call = None
            if call is None:
                return original(self, *args, **kwargs)
            span, owned = call
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                _calls.end(span, owned, exc)
                raise
            streamed = on_item if kwargs.get("stream") is True else None
            try:
                _settle(span, owned, result, streamed)
            except Exception:
                logger.warning("posthog-llm-trace could not read a response", exc_info=True)
                _calls.end(span, owned)
            return result

        return create

    return make


def _wrap_async(begin: Begin, on_item: _calls.OnItem | None) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _patches.active or not recording():
                return await original(self, *args, **kwargs)
            try:
                call = begin(self, kwargs)
            except Exception:
                logger.warning("posthog-llm-trace could not read a call", exc_info=True)
                call = None
            if call is None:
                return await original(self, *args, **kwargs)
            span, owned = call
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                _calls.end(span, owned, exc)
                raise
            streamed = on_item if kwargs.get("stream") is True else None
            try:
                _settle(span, owned, result, streamed)
            except Exception:
                logger.warning("posthog-llm-trace could not read a response", exc_info=True)
                _calls.end(span, owned)
            return result

        return create

    return make


def patch() -> None:
    """Patch the SDK's resource classes (all or nothing)."""
    global _SENTINELS, _RAW, _LEGACY
    import openai._legacy_response
    import openai._response
    import openai._types
    from openai.resources import embeddings
    from openai.resources.chat import completions
    from openai.resources.responses import responses

    _SENTINELS = tuple(
        t for t in (getattr(openai._types, n, None) for n in ("NotGiven", "Omit")) if t
    )
    _LEGACY = (openai._legacy_response.LegacyAPIResponse,)
    _RAW = (*_LEGACY, openai._response.BaseAPIResponse)
    try:
        _patch_all(completions, responses, embeddings)
    except Exception:
        _patches.restore()  # a layout we do not know: all or nothing
        raise
    _patches.active = True


def _patch_all(completions: Any, responses: Any, embeddings: Any) -> None:
    patches = _patches
    chat = _begin_chat
    patches.patch(completions.Completions, "create", _wrap_sync(chat, _chat_chunk))
    patches.patch(completions.AsyncCompletions, "create", _wrap_async(chat, _chat_chunk))
    patches.patch(completions.Completions, "parse", _wrap_sync(chat, None))
    patches.patch(completions.AsyncCompletions, "parse", _wrap_async(chat, None))
    rsp = _begin_responses
    patches.patch(responses.Responses, "create", _wrap_sync(rsp, _responses_event))
    patches.patch(responses.AsyncResponses, "create", _wrap_async(rsp, _responses_event))
    emb = _begin_embeddings
    patches.patch(embeddings.Embeddings, "create", _wrap_sync(emb, None))
    patches.patch(embeddings.AsyncEmbeddings, "create", _wrap_async(emb, None))


def unpatch() -> None:
    """Put the SDK's own methods back."""
    _patches.restore()
