"""The ``anthropic`` SDK: reading its objects and recording its calls.

The readers take the SDK's pydantic objects or their ``model_dump()`` dicts alike, and never
raise. Anthropic's ``input_tokens`` excludes the prompt cache; the package's count is gross (what
OpenAI reports), so cache reads and writes are added to it here, once, where the shape is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["input_messages", "install", "read_response", "read_usage", "uninstall"]


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


# --- instrumentation --------------------------------------------------------------------------


def install() -> None:
    """Patch the SDK so its calls are recorded. Called once by :func:`..instrument.instrument`."""


def uninstall() -> None:
    """Undo :func:`install`."""
