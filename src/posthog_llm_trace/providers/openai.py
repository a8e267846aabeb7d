"""The ``openai`` SDK: reading its objects and recording its calls.

The readers take the SDK's pydantic objects or their ``model_dump()`` dicts, and OpenAI-compatible
answers from other servers (gateways, local model servers) alike. They never raise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..generations import Embedding, Generation
from ..spans import UNSET
from . import _calls, begin_call, begin_embedding, recording

__all__ = ["install", "read_response", "read_usage", "uninstall"]

logger = logging.getLogger("posthog_llm_trace")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _num(value: Any) -> int | None:
    return value if type(value) is int else None


# --- reading ----------------------------------------------------------------------------------


def read_usage(usage: Any) -> dict[str, int] | None:
    """Token counts of a Chat Completions ``CompletionUsage`` or a Responses ``ResponseUsage``
    (object or dict), in the package's usage keys; None for another provider's shape."""
    try:
        return _read_usage(usage)
    except Exception:
        return None


def _read_usage(usage: Any) -> dict[str, int] | None:
    out: dict[str, int] = {}
    prompt = _num(_get(usage, "prompt_tokens"))
    if prompt is not None:  # Chat Completions: prompt tokens are gross (cache included)
        out["input_tokens"] = prompt
        completion = _num(_get(usage, "completion_tokens"))
        if completion is not None:
            out["output_tokens"] = completion
        in_details = _get(usage, "prompt_tokens_details")
        out_details = _get(usage, "completion_tokens_details")
    else:
        in_details = _get(usage, "input_tokens_details")
        out_details = _get(usage, "output_tokens_details")
        if in_details is None and _get(out_details, "reasoning_tokens") is None:
            return None  # not the Responses shape either (Anthropic's details: thinking_tokens)
        inp, outp = _num(_get(usage, "input_tokens")), _num(_get(usage, "output_tokens"))
        if inp is not None:  # Responses: input tokens are gross as well
            out["input_tokens"] = inp
        if outp is not None:
            out["output_tokens"] = outp
    if in_details is not None:
        cached = _num(_get(in_details, "cached_tokens"))
        if cached is not None:
            out["cache_read_input_tokens"] = cached
        written = _num(_get(in_details, "cache_write_tokens"))
        if written:
            out["cache_creation_input_tokens"] = written
    if out_details is not None:
        reasoning = _num(_get(out_details, "reasoning_tokens"))
        if reasoning is not None:
            out["reasoning_tokens"] = reasoning
    return out


def read_response(obj: Any) -> dict[str, Any] | None:
    """What a ``ChatCompletion``, a Responses ``Response`` or an embeddings answer says:
    ``output`` (messages as PostHog renders them), ``stop_reason``, ``model``, ``usage``.
    None for anything else."""
    try:
        kind = _get(obj, "object")
        if kind == "chat.completion":
            return _read_chat(obj)
        if kind == "response":
            return _read_responses(obj)
        if kind == "list" and _get(obj, "data") is not None:  # embeddings
            return _common(obj, {})
    except Exception:
        return None
    return None


def _common(obj: Any, out: dict[str, Any]) -> dict[str, Any]:
    model = _get(obj, "model")
    if isinstance(model, str):
        out["model"] = model
    usage = _get(obj, "usage")
    if usage is not None:
        counts = read_usage(usage)
        if counts:
            out["usage"] = counts
    return out


def _read_chat(obj: Any) -> dict[str, Any]:
    messages = []
    stop: str | None = None
    for choice in _get(obj, "choices") or ():
        message = _get(choice, "message")
        if message is not None:
            messages.append(chat_message(message))
        if stop is None:
            reason = _get(choice, "finish_reason")
            stop = reason if isinstance(reason, str) else None
    out: dict[str, Any] = {"output": messages}
    if stop is not None:
        out["stop_reason"] = stop
    return _common(obj, out)


def chat_message(message: Any) -> dict[str, Any]:
    """A Chat Completions assistant message as PostHog renders it: a string content when it is
    text alone, else content parts with tool calls as ``{"type": "function", ...}``."""
    content = _get(message, "content")
    parts: list[Any] = []
    # OpenAI-compatible servers (DeepSeek, vLLM) add the reasoning as an extra field.
    extra = (
        message if isinstance(message, Mapping) else getattr(message, "__pydantic_extra__", None)
    )
    reasoning = (extra.get("reasoning_content") or extra.get("reasoning")) if extra else None
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "text": reasoning})
    refusal = _get(message, "refusal")
    calls = _get(message, "tool_calls")
    if not parts and not refusal and not calls:
        return {"role": "assistant", "content": content if isinstance(content, str) else ""}
    if isinstance(content, str) and content:
        parts.append({"type": "text", "text": content})
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    for call in calls or ():
        fn = _get(call, "function")
        parts.append(
            {
                "type": "function",
                "id": _get(call, "id"),
                "function": {"name": _get(fn, "name"), "arguments": _get(fn, "arguments") or ""},
            }
        )
    return {"role": "assistant", "content": parts}


def _read_responses(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"output": [responses_message(_get(obj, "output") or ())]}
    stop = _responses_stop(obj)
    if stop is not None:
        out["stop_reason"] = stop
    return _common(obj, out)


def _responses_stop(obj: Any) -> str | None:
    """The Responses API has no finish reason: its status, or why it is incomplete."""
    status = _get(obj, "status")
    if status == "incomplete":
        reason = _get(_get(obj, "incomplete_details"), "reason")
        if isinstance(reason, str):
            return reason
    return status if isinstance(status, str) else None


def responses_message(items: Any) -> dict[str, Any]:
    """The output items of a Responses ``Response`` as one assistant message: text, function
    calls as ``{"type": "function", ...}`` parts, reasoning summaries."""
    parts: list[Any] = []
    for item in items:
        kind = _get(item, "type")
        if kind == "message":
            for c in _get(item, "content") or ():
                ctype = _get(c, "type")
                if ctype == "output_text":
                    parts.append({"type": "text", "text": _get(c, "text") or ""})
                elif ctype == "refusal":
                    parts.append({"type": "refusal", "refusal": _get(c, "refusal") or ""})
        elif kind == "function_call":
            parts.append(
                {
                    "type": "function",
                    "id": _get(item, "call_id"),
                    "function": {
                        "name": _get(item, "name"),
                        "arguments": _get(item, "arguments") or "",
                    },
                }
            )
        elif kind == "reasoning":
            summary = [_get(s, "text") for s in _get(item, "summary") or ()]
            text = "\n".join(s for s in summary if isinstance(s, str))
            parts.append({"type": "reasoning", "text": text})
        elif isinstance(kind, str):  # built-in tools (web search, ...): name what happened
            parts.append({"type": kind})
    if len(parts) == 1 and parts[0].get("type") == "text":
        return {"role": "assistant", "content": parts[0]["text"]}
    return {"role": "assistant", "content": parts}


# --- request arguments ------------------------------------------------------------------------

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


def responses_input(value: Any, instructions: Any = None) -> list[dict[str, Any]]:
    """A Responses ``input`` (a string or a list of items) and ``instructions`` as the message
    list PostHog renders: instructions first as a system message, ``function_call`` items as
    assistant tool calls, ``function_call_output`` items as tool messages."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
        return messages
    for item in value or ():
        kind = _get(item, "type")
        role = _get(item, "role")
        if kind == "function_call":
            messages.append({"role": "assistant", "content": [_responses_call(item)]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _get(item, "call_id"),
                    "content": _get(item, "output"),
                }
            )
        elif role is not None:
            messages.append({"role": role, "content": _responses_content(_get(item, "content"))})
        elif kind == "reasoning":
            messages.append({"role": "assistant", "content": [_reasoning_part(item)]})
        else:  # an item we do not render (item_reference, a built-in tool's call): name it
            messages.append({"role": "assistant", "content": [{"type": str(kind)}]})
    return messages


def _responses_call(item: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "id": _get(item, "call_id"),
        "function": {"name": _get(item, "name"), "arguments": _get(item, "arguments") or ""},
    }


def _reasoning_part(item: Any) -> dict[str, Any]:
    summary = [_get(s, "text") for s in _get(item, "summary") or ()]
    return {"type": "reasoning", "text": "\n".join(s for s in summary if isinstance(s, str))}


def _responses_content(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    parts: list[Any] = []
    for part in content:
        kind = _get(part, "type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _get(part, "text") or ""})
        elif kind == "input_image":
            parts.append({"type": "image", "image": _get(part, "image_url") or ""})
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _get(part, "refusal") or ""})
        else:
            parts.append(part)
    return parts


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


def install() -> None:
    """Patch the SDK's resource classes, so that every client (``OpenAI``, ``AzureOpenAI``,
    a custom ``base_url``, subclasses such as posthog-python's wrapper) is recorded. Called
    once by :func:`..instrument.instrument`."""
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


def uninstall() -> None:
    """Undo :func:`install`: the SDK's own methods are back."""
    _patches.restore()
