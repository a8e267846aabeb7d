"""The ``anthropic`` SDK: reading its objects and recording its calls.

This module reads: usage, responses, request arguments. :mod:`._record` follows the calls
(patched methods, streams) and is imported by :func:`install` only.

The readers take the SDK's pydantic objects or their ``model_dump()`` dicts alike, and never
raise. Anthropic's ``input_tokens`` excludes the prompt cache; the package's count is gross (what
OpenAI reports), so cache reads and writes are added to it here, once, where the shape is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...spans import UNSET
from .. import begin_call

if TYPE_CHECKING:
    from ...generations import Generation

__all__ = ["input_messages", "install", "read_response", "read_usage", "uninstall"]


def _get(obj: Any, key: str) -> Any:
    if type(obj) is dict:
        return obj.get(key)
    value = getattr(obj, key, None)  # the SDK's pydantic objects: the common case
    if value is None and isinstance(obj, Mapping):
        return obj.get(key)
    return value


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
    details = _get(usage, "output_tokens_details")
    if not type(usage).__module__.startswith("anthropic."):  # a dict, or another SDK's object
        if _get(usage, "prompt_tokens") is not None or _get(usage, "input_tokens_details"):
            return None  # OpenAI's shapes
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
    from ...messages import jsonable

    data = jsonable(block)
    return data if isinstance(data, dict) else {"type": str(kind)}


def _arguments(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    import json

    from ...messages import jsonable

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


def install() -> None:
    """Patch the SDK's ``Messages`` resource classes, so that every client (``Anthropic``, a
    custom ``base_url``, subclasses such as posthog-python's wrapper) is recorded: ``create``
    (streamed or not), ``parse`` and the ``stream()`` helper, sync and async. Called once by
    :func:`..instrument.instrument`."""
    global _SENTINELS
    import anthropic._types

    from . import _record

    _SENTINELS = tuple(
        t for t in (getattr(anthropic._types, n, None) for n in ("NotGiven", "Omit")) if t
    )
    _record.patch()


def uninstall() -> None:
    """Undo :func:`install`: the SDK's own methods are back."""
    from . import _record

    _record.unpatch()
