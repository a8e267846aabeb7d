"""The ``anthropic`` SDK: reading its objects and recording its calls.

The readers take the SDK's pydantic objects or their ``model_dump()`` dicts alike, and never
raise. Anthropic's ``input_tokens`` excludes the prompt cache; the package's count is gross (what
OpenAI reports), so cache reads and writes are added to it here, once, where the shape is known.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..spans import UNSET
from . import _calls, begin_call, recording

if TYPE_CHECKING:
    from ..generations import Generation

__all__ = ["input_messages", "install", "read_response", "read_usage", "uninstall"]

logger = logging.getLogger("posthog_llm_trace")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _num(value: Any) -> int | None:
    return value if type(value) is int else None


# --- reading ----------------------------------------------------------------------------------


def read_usage(usage: Any) -> dict[str, int] | None:
    """Token counts of a Messages ``Usage`` or a stream's ``MessageDeltaUsage`` (object or dict),
    in the package's usage keys, input gross; None for another provider's shape."""
    try:
        return _read_usage(usage)
    except Exception:
        return None


def _read_usage(usage: Any) -> dict[str, int] | None:
    if usage is None or isinstance(usage, (str, bytes, int, float, list, tuple)):
        return None
    if _get(usage, "prompt_tokens") is not None or _get(usage, "input_tokens_details") is not None:
        return None  # OpenAI's shapes
    details = _get(usage, "output_tokens_details")
    if details is not None and _get(details, "reasoning_tokens") is not None:
        return None  # OpenAI Responses
    inp, outp = _num(_get(usage, "input_tokens")), _num(_get(usage, "output_tokens"))
    read = _num(_get(usage, "cache_read_input_tokens"))
    write = _num(_get(usage, "cache_creation_input_tokens"))
    if inp is None and outp is None and read is None and write is None:
        return None
    out: dict[str, int] = {}
    if inp is not None:
        out["input_tokens"] = inp + (read or 0) + (write or 0)
    if outp is not None:
        out["output_tokens"] = outp
    if read is not None:
        out["cache_read_input_tokens"] = read
    if write is not None:
        out["cache_creation_input_tokens"] = write
    split = _get(usage, "cache_creation")
    if split is not None:
        five, hour = (
            _num(_get(split, "ephemeral_5m_input_tokens")),
            _num(_get(split, "ephemeral_1h_input_tokens")),
        )
        if five is not None:
            out["cache_creation_5m_input_tokens"] = five
        if hour is not None:
            out["cache_creation_1h_input_tokens"] = hour
    if details is not None:
        thinking = _num(_get(details, "thinking_tokens"))
        if thinking is not None:
            out["reasoning_tokens"] = thinking
    searches = _num(_get(_get(usage, "server_tool_use"), "web_search_requests"))
    if searches:
        out["web_search_count"] = searches
    return out


def read_response(obj: Any) -> dict[str, Any] | None:
    """What a Messages ``Message`` (object or dict) says: ``output`` (one assistant message as
    PostHog renders it), ``stop_reason``, ``model``, ``usage``. None for anything else."""
    try:
        if _get(obj, "type") != "message" or _get(obj, "role") != "assistant":
            return None
        content = _get(obj, "content")
        if not isinstance(content, (list, tuple)):
            return None
        out: dict[str, Any] = {"output": [output_message(content)]}
        reason = _get(obj, "stop_reason")
        if isinstance(reason, str):
            out["stop_reason"] = reason
        model = _get(obj, "model")
        if isinstance(model, str):
            out["model"] = model
        usage = _get(obj, "usage")
        if usage is not None:
            counts = read_usage(usage)
            if counts:
                out["usage"] = counts
        return out
    except Exception:
        return None


def output_message(blocks: Any) -> dict[str, Any]:
    """A response's content blocks as one assistant message of parts: text, tool calls as
    ``{"type": "function", ...}`` (arguments a JSON string), thinking blocks."""
    return {"role": "assistant", "content": [_part(block) for block in blocks]}


def _part(block: Any) -> dict[str, Any]:
    kind = _get(block, "type")
    if kind == "text":
        return {"type": "text", "text": _get(block, "text") or ""}
    if kind in ("tool_use", "server_tool_use"):
        return {
            "type": "function",
            "id": _get(block, "id"),
            "function": {
                "name": _get(block, "name"),
                "arguments": _arguments(_get(block, "input")),
            },
        }
    if kind == "thinking":
        return {"type": "thinking", "thinking": _get(block, "thinking") or ""}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking"}
    if isinstance(block, Mapping):
        return dict(block)
    from ..messages import jsonable

    data = jsonable(block)
    return data if isinstance(data, dict) else {"type": str(kind)}


def _arguments(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    import json

    from ..messages import jsonable

    return json.dumps(jsonable(value), ensure_ascii=False)


# --- request arguments ------------------------------------------------------------------------


def input_messages(messages: Any, system: Any = None) -> list[dict[str, Any]]:
    """A Messages call's ``system`` and ``messages`` as the message list PostHog renders: the
    system prompt first as a system message, ``tool_use`` blocks as ``{"type": "function"}``
    parts, ``tool_result`` blocks as ``tool`` messages."""
    out: list[dict[str, Any]] = []
    if isinstance(system, str):
        if system:
            out.append({"role": "system", "content": system})
    elif isinstance(system, (list, tuple)) and system:
        out.append({"role": "system", "content": [_input_part(b) for b in system]})
    for message in messages or ():
        role = _get(message, "role")
        content = _get(message, "content")
        if isinstance(content, str) or content is None:
            out.append({"role": str(role or "user"), "content": content or ""})
            continue
        parts: list[Any] = []
        for block in content:
            if _get(block, "type") == "tool_result":
                if parts:
                    out.append({"role": str(role or "user"), "content": parts})
                    parts = []
                out.append(_tool_message(block))
            else:
                parts.append(_input_part(block))
        if parts or not content:
            out.append({"role": str(role or "user"), "content": parts})
    return out


def _input_part(block: Any) -> Any:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    kind = _get(block, "type")
    if kind == "text":  # without cache_control and citations: noise in a prompt
        return {"type": "text", "text": _get(block, "text") or ""}
    if kind in ("tool_use", "server_tool_use", "thinking", "redacted_thinking"):
        return _part(block)
    return block


def _tool_message(block: Any) -> dict[str, Any]:
    content = _get(block, "content")
    if isinstance(content, (list, tuple)):
        parts = [_input_part(b) for b in content]
        if all(isinstance(p, Mapping) and p.get("type") == "text" for p in parts):
            content = "\n".join(p["text"] for p in parts)
        else:
            content = parts
    return {
        "role": "tool",
        "tool_call_id": _get(block, "tool_use_id"),
        "content": "" if content is None else content,
    }


#: Call arguments that are model parameters (``$ai_model_parameters``).
MODEL_PARAMETERS = frozenset(
    (
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "thinking",
        "tool_choice",
        "service_tier",
        "inference_geo",
        "speed",
    )
)

_SAMPLING = frozenset(("temperature", "top_p", "top_k"))

#: The SDK's "not given" sentinels (``NOT_GIVEN``, ``omit``), set by :func:`install`.
_SENTINELS: tuple[type, ...] = ()


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, _SENTINELS)


def model_parameters(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    params = {
        key: value for key, value in kwargs.items() if key in MODEL_PARAMETERS and _given(value)
    }
    extra = kwargs.get("extra_body")
    if isinstance(extra, Mapping):  # sampling settings this SDK no longer has arguments for
        params.update((k, v) for k, v in extra.items() if k in _SAMPLING and v is not None)
    config = kwargs.get("output_config")
    if _given(config) and isinstance(config, Mapping) and _given(config.get("effort")):
        params["effort"] = config["effort"]
    return params or None


def _base_url(resource: Any) -> str | None:
    try:
        return str(resource._client.base_url).rstrip("/")
    except Exception:
        return None


def _begin(resource: Any, kwargs: dict[str, Any], stream: bool) -> tuple[Generation, bool] | None:
    messages = kwargs.get("messages")
    if messages is not None and type(messages) is not list:
        # Any iterable is accepted: read it once, hand the SDK the same items.
        messages = kwargs["messages"] = list(messages)
    system = kwargs.get("system")
    system = system if _given(system) else None
    tools = kwargs.get("tools")
    return begin_call(
        "messages",
        provider="anthropic",
        model=kwargs.get("model"),
        input=input_messages(messages, system) if messages is not None or system else UNSET,
        model_parameters=model_parameters(kwargs),
        tools=tools if _given(tools) else None,
        base_url=_base_url(resource),
        stream=stream,
    )


# --- streams ----------------------------------------------------------------------------------


def _stream_event(gen: Generation, state: dict[str, Any], event: Any) -> None:
    """One raw stream event. Usage: ``message_start`` carries the input side, each
    ``message_delta`` cumulative totals that replace what came before."""
    kind = event.type
    if kind == "content_block_delta":
        delta = event.delta
        dtype = delta.type
        if dtype == "text_delta":
            piece, chunk_kind = delta.text, "text"
        elif dtype == "input_json_delta":
            piece, chunk_kind = delta.partial_json, "tool_call"
        elif dtype == "thinking_delta":
            piece, chunk_kind = delta.thinking, "reasoning"
        else:  # signature and citations: nothing to show, no content for the first token
            return
        if not piece:
            return
        block = state["blocks"].get(event.index)
        if block is None:  # a delta before its block started: keep it anyway
            block = state["blocks"][event.index] = _Block({"type": _DELTA_BLOCK[dtype]})
        block.pieces.append(piece)
        if chunk_kind == "tool_call":
            gen._chunk(piece, "tool_call", block.get("id"), block.get("name"))
        else:
            gen._chunk(piece, chunk_kind, None, None)
    elif kind == "content_block_start":
        block = event.content_block
        data = block.to_dict()
        data.pop("signature", None)
        data.pop("citations", None)
        state["blocks"][event.index] = _Block(data)
    elif kind == "message_start":
        message = event.message
        usage = state["usage"] = message.usage.to_dict()
        gen.set_usage(usage)
        if gen.model is None and message.model:
            gen.model = message.model
    elif kind == "message_delta":
        reason = event.delta.stop_reason
        if reason:
            gen.stop_reason = reason
        usage = state["usage"]
        usage.update(event.usage.to_dict(exclude_none=True))
        gen.set_usage(usage)


#: The block a delta belongs to, when its ``content_block_start`` was not seen.
_DELTA_BLOCK = {"text_delta": "text", "input_json_delta": "tool_use", "thinking_delta": "thinking"}
#: Where a block's streamed pieces go.
_PIECES_KEY = {"text": "text", "thinking": "thinking"}


class _Block(dict[str, Any]):
    """A content block being streamed: its start, and the pieces its deltas carried."""

    __slots__ = ("pieces",)

    def __init__(self, start: dict[str, Any]) -> None:
        super().__init__(start)
        self.pieces: list[str] = []

    def final(self) -> dict[str, Any]:
        block = dict(self)
        if self.pieces:
            joined = "".join(self.pieces)
            key = _PIECES_KEY.get(block.get("type", ""))
            if key is not None:
                block[key] = (block.get(key) or "") + joined
            else:  # a tool call's input, as the JSON text the model wrote
                block["input"] = joined
        return block


def _stream_end(gen: Generation, state: dict[str, Any], owned: bool) -> None:
    """The streamed blocks as the output, in order (a stream ended early: what came)."""
    blocks = state["blocks"]
    if not blocks or not (owned or gen.output is UNSET):
        return
    gen.output = [output_message([blocks[index].final() for index in sorted(blocks)])]


def _follow(stream: Any, gen: Generation, owned: bool) -> bool:
    state: dict[str, Any] = {"blocks": {}, "usage": {}}

    def on_item(gen: Generation, _state: dict[str, Any], event: Any) -> None:
        _stream_event(gen, state, event)

    def on_end(gen: Generation, _state: dict[str, Any]) -> None:
        _stream_end(gen, state, owned)

    return _calls.follow_stream(stream, gen, owned, on_item, on_end)


# --- recording ----------------------------------------------------------------------------------

_patches = _calls.Patches()


def _raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    """``"raw"`` under ``with_raw_response``, ``"stream"`` under ``with_streaming_response``."""
    headers = kwargs.get("extra_headers")
    if headers:
        mode = headers.get("X-Stainless-Raw-Response")
        return mode if isinstance(mode, str) else None
    return None


def _settle(gen: Generation, owned: bool, result: Any, stream: bool, raw: str | None) -> None:
    """Record a call's result; streams are followed and end their generation themselves."""
    if raw is not None and getattr(result, "http_response", None) is not None:
        gen.http_status = result.status_code
        if raw != "raw":  # the application reads the body itself; we do not
            _calls.end(gen, owned)
            return
        result = result.parse()  # cached: the application's parse() gets this very object
    if stream:
        response = getattr(result, "response", None)
        if gen.http_status is None and response is not None:
            gen.http_status = response.status_code
        if _follow(result, gen, owned):
            return
    if gen.http_status is None:
        gen.http_status = 200
    read = read_response(result)
    if read is not None:
        gen._fill(read, output=owned or gen.output is UNSET)
    _calls.end(gen, owned)


def _start(resource: Any, kwargs: dict[str, Any], stream: bool) -> tuple[Generation, bool] | None:
    try:
        return _begin(resource, kwargs, stream)
    except Exception:
        logger.warning("posthog-llm-trace could not read a call", exc_info=True)
        return None


def _settle_safely(
    gen: Generation, owned: bool, result: Any, stream: bool, raw: str | None = None
) -> None:
    try:
        _settle(gen, owned, result, stream, raw)
    except Exception:
        logger.warning("posthog-llm-trace could not read a response", exc_info=True)
        _calls.end(gen, owned)


def _wrap_create(original: Any) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.active or not recording():
            return original(self, *args, **kwargs)
        stream = kwargs.get("stream") is True
        call = _start(self, kwargs, stream)
        if call is None:
            return original(self, *args, **kwargs)
        gen, owned = call
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            _calls.end(gen, owned, exc)
            raise
        _settle_safely(gen, owned, result, stream, _raw_mode(kwargs))
        return result

    return create


def _wrap_async_create(original: Any) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _patches.active or not recording():
            return await original(self, *args, **kwargs)
        stream = kwargs.get("stream") is True
        call = _start(self, kwargs, stream)
        if call is None:
            return await original(self, *args, **kwargs)
        gen, owned = call
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            _calls.end(gen, owned, exc)
            raise
        raw = _raw_mode(kwargs)
        if raw == "raw":  # the async parse() is awaited here; it is cached for the application
            gen.http_status = result.status_code
            try:
                parsed = await result.parse()
            except Exception:
                _calls.end(gen, owned)
                return result
            _settle_safely(gen, owned, parsed, stream)
            return result
        _settle_safely(gen, owned, result, stream, raw)
        return result

    return create


#: Where ``MessageStreamManager`` / ``AsyncMessageStreamManager`` keep the request they make on
#: ``__enter__``: ``messages.stream()`` posts itself, it does not go through ``create``.
_SYNC_REQUEST = "_MessageStreamManager__api_request"
_ASYNC_REQUEST = "_AsyncMessageStreamManager__api_request"


def _wrap_stream(original: Any) -> Any:
    """``messages.stream()``: the call is recorded when the manager is entered (when the request
    is made), and its raw stream followed in place under the ``MessageStream``."""

    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        if not _patches.active:
            return manager
        request: Callable[[], Any] | None = getattr(manager, _SYNC_REQUEST, None)
        if request is None:
            return manager

        def traced_request() -> Any:
            if not _patches.active or not recording():
                return request()
            call = _start(self, kwargs, True)
            if call is None:
                return request()
            gen, owned = call
            try:
                raw = request()
            except BaseException as exc:
                _calls.end(gen, owned, exc)
                raise
            _settle_safely(gen, owned, raw, True)
            return raw

        setattr(manager, _SYNC_REQUEST, traced_request)
        return manager

    return stream


def _wrap_async_stream(original: Any) -> Any:
    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        if not _patches.active:
            return manager
        request = getattr(manager, _ASYNC_REQUEST, None)
        if request is None:
            return manager

        async def traced_request() -> Any:
            if not _patches.active or not recording():
                return await request
            call = _start(self, kwargs, True)
            if call is None:
                return await request
            gen, owned = call
            try:
                raw = await request
            except BaseException as exc:
                _calls.end(gen, owned, exc)
                raise
            _settle_safely(gen, owned, raw, True)
            return raw

        setattr(manager, _ASYNC_REQUEST, traced_request())
        return manager

    return stream


def install() -> None:
    """Patch the SDK's ``Messages`` resource classes, so that every client (``Anthropic``, a
    custom ``base_url``, subclasses such as posthog-python's wrapper) is recorded: ``create``
    (streamed or not), ``parse`` and the ``stream()`` helper, sync and async. Called once by
    :func:`..instrument.instrument`."""
    global _SENTINELS
    import anthropic._types
    from anthropic.resources.messages import messages

    _SENTINELS = tuple(
        t for t in (getattr(anthropic._types, n, None) for n in ("NotGiven", "Omit")) if t
    )
    patches = _patches
    patches.patch(messages.Messages, "create", _wrap_create)
    patches.patch(messages.AsyncMessages, "create", _wrap_async_create)
    patches.patch(messages.Messages, "parse", _wrap_create)
    patches.patch(messages.AsyncMessages, "parse", _wrap_async_create)
    patches.patch(messages.Messages, "stream", _wrap_stream)
    patches.patch(messages.AsyncMessages, "stream", _wrap_async_stream)
    patches.active = True


def uninstall() -> None:
    """Undo :func:`install`: the SDK's own methods are back."""
    _patches.restore()
