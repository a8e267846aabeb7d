"""The ``openai`` SDK: reading its objects and recording its calls.

This module reads: usage, responses, request arguments. :mod:`._record` follows the calls
(patched methods, streams) and is imported by :func:`install` only.

The readers take the SDK's pydantic objects or their ``model_dump()`` dicts, and OpenAI-compatible
answers from other servers (gateways, local model servers) alike. They never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["install", "read_response", "read_usage", "uninstall"]


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


# --- recording ----------------------------------------------------------------------------------


def install() -> None:
    """Patch the SDK's resource classes, so that every client (``OpenAI``, ``AzureOpenAI``,
    a custom ``base_url``, subclasses such as posthog-python's wrapper) is recorded. Called
    once by :func:`..instrument.instrument`."""
    from . import _record

    _record.patch()


def uninstall() -> None:
    """Undo :func:`install`: the SDK's own methods are back."""
    from . import _record

    _record.unpatch()
