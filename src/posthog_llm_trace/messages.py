"""Content handling: any Python value to JSON, prompts and completions to PostHog's message
shape, tool definitions to OpenAI's function shape, and events to a size budget.

Everything here is pure and total: whatever a user passes (bytes, datetimes, Decimals, sets,
NaN, cyclic structures, invalid surrogates, objects with no JSON form, a 50 MB string), the
result is valid JSON and no exception escapes.

Message shape (research/posthog.md §1.8): a list of ``{"role", "content"}`` where content is a
string or a list of parts ``{"type": "text", "text"}`` and, for tool calls,
``{"type": "function", "id", "function": {"name", "arguments"}}`` -- the form PostHog's Tools tab
extracts. A top-level ``tool_calls`` array is *not* recognised by PostHog, so it is converted.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import inspect
import json
import math
import types
import typing
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TRUNCATION_MARKER",
    "jsonable",
    "normalize_messages",
    "normalize_tools",
    "shrink_event",
    "snapshot",
]

MAX_DEPTH = 32
TRUNCATION_MARKER = "... [truncated {n} characters by posthog-llm-trace]"


# --- capture time: cheap, so the caller's thread does not pay for serialisation ------------


def snapshot(value: Any) -> Any:
    """A shallow copy of a list or dict, so that a message list the application appends to
    after the call (the usual chat loop) is recorded as it was. One level only: each copied
    object is one more for the garbage collector to walk while the trace waits for export, and
    messages themselves are rarely changed after they are sent."""
    kind = type(value)
    if kind is list:
        return value.copy()
    if kind is dict:
        return value.copy()
    return value


# --- export time ------------------------------------------------------------------------------


def _clean_str(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + TRUNCATION_MARKER.format(n=len(text) - limit)
    if text.isascii():  # the common case, checked in C without encoding
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates are valid in Python strings but rejected by JSON parsers.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def jsonable(value: Any, limit: int = 1_000_000) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None).

    Strings longer than ``limit`` characters are cut with a marker; cycles become
    ``"[cycle]"``; objects with no JSON form become ``"<ClassName>"`` or their ``repr``.
    """
    try:
        return _jsonable(value, limit, set(), 0)
    except Exception:  # pragma: no cover - _jsonable guards each step; this is the last net
        return f"<{type(value).__name__}>"


_SEQUENCES = (tuple, set, frozenset)


def _jsonable(value: Any, limit: int, seen: set[int], depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return _clean_str(value, limit)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return "[max depth]"
    # Plain dicts and lists first: an isinstance check against the Mapping ABC is slow.
    if kind is dict or kind is list or isinstance(value, Mapping) or kind in _SEQUENCES:
        marker = id(value)
        if marker in seen:
            return "[cycle]"
        seen.add(marker)
        try:
            if kind is dict or (kind is not list and isinstance(value, Mapping)):
                return {
                    (k if type(k) is str and k.isascii() else _key(k, limit)): _jsonable(
                        v, limit, seen, depth + 1
                    )
                    for k, v in list(value.items())
                }
            return [_jsonable(v, limit, seen, depth + 1) for v in list(value)]
        finally:
            seen.discard(marker)
    return _jsonable_other(value, limit, seen, depth)


def _key(key: Any, limit: int) -> str:
    converted = _jsonable(key, limit, set(), MAX_DEPTH - 1)
    return converted if isinstance(converted, str) else json.dumps(converted)


def _jsonable_other(value: Any, limit: int, seen: set[int], depth: int) -> Any:
    if isinstance(value, str):  # str subclasses
        return _clean_str(str.__str__(value), limit)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _jsonable(float(value), limit, seen, depth)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"[{len(value)} bytes]"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, limit, seen, depth + 1)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _jsonable(list(value), limit, seen, depth)
    marker = id(value)
    if marker in seen:
        return "[cycle]"
    seen.add(marker)
    try:
        converted = _as_data(value)
        if converted is not None:
            return _jsonable(converted, limit, seen, depth + 1)
    finally:
        seen.discard(marker)
    try:
        return _clean_str(repr(value), min(limit, 2000))
    except Exception:
        return f"<{type(value).__name__}>"


def _as_data(value: Any) -> Any:
    """A dict for pydantic models, dataclasses and SDK objects; None when there is none."""
    try:
        if isinstance(value, types.SimpleNamespace):
            return vars(value)
        if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic v2, SDKs
            try:
                return value.model_dump(mode="json", exclude_none=True)
            except Exception:  # a field with no JSON form: let jsonable() handle it
                return value.model_dump(exclude_none=True)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if hasattr(value, "dict") and callable(value.dict) and hasattr(value, "__fields__"):
            return value.dict()  # pydantic v1
        if hasattr(value, "to_dict") and callable(value.to_dict):
            return value.to_dict()
        if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
            return value.tolist()
    except Exception:
        return None
    return None


# --- messages -----------------------------------------------------------------------------------


def normalize_messages(value: Any, default_role: str, limit: int = 1_000_000) -> list[Any] | None:
    """A prompt or completion as PostHog's message list, or None when there is nothing.

    Accepts a plain string, an OpenAI chat message or list of them, Anthropic messages and
    content blocks, ``{"messages": [...]}`` wrappers, OpenAI/Anthropic response objects,
    pydantic models and dataclasses. Anything else becomes one message whose content is the
    value's JSON text.
    """
    if value is None:
        return None
    data = jsonable(value, limit)
    return _messages(data, default_role)


def _messages(data: Any, role: str) -> list[Any]:
    if isinstance(data, str):
        return [{"role": role, "content": data}]
    if isinstance(data, list):
        if all(isinstance(m, str) for m in data):
            return [{"role": role, "content": m} for m in data]
        out: list[Any] = []
        for item in data:
            out.extend(_messages(item, role) if not _is_message(item) else [_message(item, role)])
        return out
    if isinstance(data, dict):
        if isinstance(data.get("messages"), list):  # {"messages": [...]} wrappers
            return _messages(data["messages"], role)
        if isinstance(data.get("choices"), list):  # an OpenAI ChatCompletion
            return [
                _message(c.get("message") or c.get("delta") or c, "assistant")
                for c in data["choices"]
                if isinstance(c, dict)
            ]
        if isinstance(data.get("output"), list) and data.get("object") == "response":
            return _responses_output(data["output"])  # OpenAI Responses API
        if _is_message(data):
            return [_message(data, role)]
        if "text" in data and isinstance(data["text"], str):  # AI-SDK style {"text", ...}
            message: dict[str, Any] = {"role": role, "content": data["text"]}
            calls = data.get("tool_calls") or data.get("toolCalls")
            if isinstance(calls, list) and calls:
                message["tool_calls"] = calls
            return [_message(message, role)]
        if data.get("type") in ("text", "tool_use", "function", "tool_result", "image"):
            return [_message({"role": role, "content": [data]}, role)]
    return [{"role": role, "content": json.dumps(data, ensure_ascii=False)}]


def _is_message(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and "role" in item
        and ("content" in item or "tool_calls" in item or "parts" in item)
    )


#: Keys of a message that PostHog shows; the rest of a provider object (ids, usage, model...)
#: is noise in a prompt or completion.
MESSAGE_KEYS = frozenset(
    ("role", "content", "name", "tool_call_id", "tool_calls", "refusal", "audio", "parts")
)


def _message(msg: dict[str, Any], default_role: str) -> dict[str, Any]:
    content = msg.get("content")
    if len(msg) == 2 and type(content) is str and type(msg.get("role")) is str:
        # The common case, {"role", "content": text}: nothing to convert.
        return {"role": msg["role"] or default_role, "content": content}
    out = {k: v for k, v in msg.items() if v is not None and k in MESSAGE_KEYS}
    out["role"] = str(msg.get("role") or default_role)
    if content is None and isinstance(msg.get("parts"), list):  # Gemini-style parts
        content = [
            {"type": "text", "text": p["text"]} if isinstance(p, dict) and "text" in p else p
            for p in msg["parts"]
        ]
        out.pop("parts", None)
    parts: list[Any] | None = None
    if isinstance(content, list):
        parts = [_part(p) for p in content]
    calls = msg.get("tool_calls")
    if isinstance(calls, list) and calls:
        if parts is None:
            parts = [{"type": "text", "text": content}] if content else []
        parts.extend(_tool_call_part(c) for c in calls)
        out.pop("tool_calls", None)
    out["content"] = parts if parts is not None else ("" if content is None else content)
    return out


def _part(part: Any) -> Any:
    if not isinstance(part, dict):
        return {"type": "text", "text": part} if isinstance(part, str) else part
    if part.get("type") == "tool_use":  # Anthropic tool call block
        return {
            "type": "function",
            "id": part.get("id"),
            "function": {"name": part.get("name"), "arguments": _arguments(part.get("input"))},
        }
    if part.get("type") in ("tool-call", "tool_call"):
        return _tool_call_part(part)
    return part


def _tool_call_part(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict):
        return {"type": "function", "function": {"name": str(call), "arguments": ""}}
    fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
    name = fn.get("name") or call.get("name") or call.get("toolName") or call.get("tool_name")
    arguments = fn.get("arguments", call.get("arguments", call.get("args", call.get("input"))))
    part: dict[str, Any] = {
        "type": "function",
        "function": {"name": name, "arguments": _arguments(arguments)},
    }
    call_id = call.get("id") or call.get("toolCallId") or call.get("tool_call_id")
    if call_id is not None:
        part["id"] = call_id
    return part


def _arguments(arguments: Any) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _responses_output(items: list[Any]) -> list[Any]:
    parts: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for c in item.get("content") or []:
                if isinstance(c, dict) and c.get("type") in ("output_text", "text"):
                    parts.append({"type": "text", "text": c.get("text", "")})
        elif item.get("type") == "function_call":
            parts.append(
                _tool_call_part(
                    {
                        "id": item.get("call_id"),
                        "name": item.get("name"),
                        "arguments": item.get("arguments"),
                    }
                )
            )
    return [{"role": "assistant", "content": parts}]


# --- tools ----------------------------------------------------------------------------------


def normalize_tools(tools: Any, limit: int = 1_000_000) -> list[Any] | None:
    """Tool definitions in OpenAI's function shape ``{"type": "function", "function": {...}}``.

    Accepts OpenAI tool dicts, Anthropic tool dicts (``input_schema``), bare
    ``{"name", "description", "parameters"}`` dicts and plain Python functions. Provider tools
    of another type pass through unchanged.
    """
    if tools is None:
        return None
    if isinstance(tools, Mapping) and "type" not in tools and "name" not in tools:
        tools = list(tools.values())  # {"name": definition} maps
    if not isinstance(tools, (list, tuple, Mapping)) and callable(getattr(tools, "tolist", None)):
        tools = tools.tolist()  # a numpy array (its truth value is ambiguous, it is not JSON)
    if not isinstance(tools, (list, tuple)):
        tools = [tools]
    out: list[Any] = []
    for tool in tools:
        if callable(tool) and not isinstance(tool, Mapping):
            out.append(_function_tool(tool))
            continue
        data = jsonable(tool, limit)
        if isinstance(data, dict) and data.get("type") == "function" and "function" in data:
            out.append(data)
        elif (
            isinstance(data, dict)
            and "name" in data
            and data.get("type") in (None, "function", "custom")
        ):
            fn = {"name": data["name"]}
            if data.get("description"):
                fn["description"] = data["description"]
            params = data.get("parameters", data.get("input_schema"))
            if params is not None:
                fn["parameters"] = params
            out.append({"type": "function", "function": fn})
        else:
            out.append(data)
    return out or None


_JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    tuple: "array",
    set: "array",
    dict: "object",
}


def _function_tool(fn: Any) -> dict[str, Any]:
    """A Python function as an OpenAI function tool: name, docstring, and a JSON schema of its
    parameters from the type hints (``str`` -> string, ``int`` -> integer...)."""
    function: dict[str, Any] = {"name": getattr(fn, "__name__", type(fn).__name__)}
    doc = inspect.getdoc(fn)
    if doc:
        function["description"] = doc
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except Exception:  # no signature (a builtin) or unresolvable annotations
        return {"type": "function", "function": function}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in signature.parameters.items():
        if name in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(name)
        origin = typing.get_origin(hint) or hint
        json_type = _JSON_TYPES.get(origin) if isinstance(origin, type) else None
        properties[name] = {"type": json_type} if json_type else {}
        if param.default is param.empty:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    function["parameters"] = schema
    return {"type": "function", "function": function}


# --- size budget ----------------------------------------------------------------------------

#: Properties shortened first when an event is over budget: the content, never the ids.
CONTENT_KEYS = (
    "$ai_input",
    "$ai_output_choices",
    "$ai_input_state",
    "$ai_output_state",
    "$ai_tools",
    "$ai_error",
)


#: Properties kept whole while they are short: they link and name the event.
KEEP_KEYS = frozenset(
    {
        "$ai_trace_id",
        "$ai_span_id",
        "$ai_parent_id",
        "$ai_session_id",
        "$session_id",
        "$ai_span_name",
        "$ai_trace_name",
        "$ai_span_type",
        "$ai_model",
        "$ai_provider",
        "$ai_lib",
        "$ai_lib_version",
        "$lib",
        "$lib_version",
        "$process_person_profile",
    }
)
_KEEP_LENGTH = 1000  # a kept property longer than this is shortened like any other
#: Characters kept of a property key that is longer (keys count towards the size too).
MAX_KEY_LENGTH = 200
#: The property that says how many properties were removed to fit the budget.
REMOVED_KEY = "posthog_llm_trace_removed_properties"
_MIN_LEAF = 64  # bytes: shorter strings are left alone by the shortening pass
_MARKER_BYTES = len(TRUNCATION_MARKER.format(n=10**12)) + 2


def json_size(event: Any) -> int:
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def shrink_event(event: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """``event`` cut to at most ``max_bytes`` of JSON, in time linear in its size (up to a
    sort of its strings). Returns the event itself when it fits, else a new event (the
    original, whose values may be shared with other events, is not changed), or None when even
    its bare ids are over budget.

    In order, until it fits: property keys longer than ``MAX_KEY_LENGTH`` are cut (a hash of
    the full key keeps them distinct); then the longest strings are cut to a common length
    with a marker saying how much went -- content fields (``CONTENT_KEYS``) first, then every
    property, custom or ``$``-prefixed, except the short ids and names of ``KEEP_KEYS``; then
    whole properties go, largest first, counted in ``posthog_llm_trace_removed_properties``."""
    size = json_size(event)
    if size <= max_bytes:
        return event
    props = event.get("properties")
    if not isinstance(props, dict):
        return None
    props = json.loads(json.dumps(props, ensure_ascii=False))
    event = {**event, "properties": props}
    if _cut_keys(props):
        size = json_size(event)
    for content_only in (True, False):
        for _ in range(3):  # a second pass only when escapes made the estimate short
            if size <= max_bytes:
                return event
            leaves = _string_leaves(props, content_only)
            if not leaves:
                break
            enough = _shorten(leaves, size - max_bytes)
            size = json_size(event)
            if not enough:
                break
    if size <= max_bytes:
        return event
    return _remove_properties(event, props, size, max_bytes)


def _cut_keys(props: dict[str, Any]) -> bool:
    """Shorten over-long keys at every level, in place. True if any was."""
    changed = False
    stack: list[Any] = [props]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(len(k) > MAX_KEY_LENGTH for k in node):
                items = [(_short_key(k), v) for k, v in node.items()]
                node.clear()
                node.update(items)
                changed = True
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        else:
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return changed


def _short_key(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:10]
    return f"{key[:MAX_KEY_LENGTH]}...[key of {len(key)} characters, {digest}]"


def _string_leaves(props: dict[str, Any], content_only: bool) -> list[tuple[Any, Any, str, int]]:
    """(container, key, text, JSON bytes) of every string worth shortening."""
    leaves: list[tuple[Any, Any, str, int]] = []
    stack: list[tuple[Any, Any]] = []
    for key, value in props.items():
        if content_only and key not in CONTENT_KEYS:
            continue
        if key in KEEP_KEYS and not (isinstance(value, str) and len(value) > _KEEP_LENGTH):
            continue
        stack.append((props, key))
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, str):
            if len(value) * 3 >= _MIN_LEAF:  # else too short to matter, even in UTF-8
                cost = _json_bytes(value)
                if cost >= _MIN_LEAF:
                    leaves.append((container, key, value, cost))
        elif isinstance(value, dict):
            stack.extend((value, k) for k in value)
        elif isinstance(value, list):
            stack.extend((value, i) for i in range(len(value)))
    return leaves


def _shorten(leaves: list[tuple[Any, Any, str, int]], over: int) -> bool:
    """Cut the longest strings to one common size so that about ``over`` bytes go. False if
    even cutting all of them to their marker would not save enough."""
    if not leaves:
        return False
    leaves.sort(key=lambda leaf: -leaf[3])
    costs = [leaf[3] for leaf in leaves]
    # The largest ceiling T (bytes a cut string keeps, marker included) with
    # sum(max(0, cost - T)) >= over: the first k where (top-k total - over) / k >= next cost.
    total = 0
    ceiling = -1.0
    for k, cost in enumerate(costs, 1):
        total += cost
        level = (total - over) / k
        following = costs[k] if k < len(costs) else 0
        if level >= following:
            ceiling = level
            break
    keep_bytes = int(ceiling) - _MARKER_BYTES - 8  # a little room for the estimate
    if ceiling < 0 or keep_bytes < 0:
        for container, key, text, _ in leaves:
            container[key] = TRUNCATION_MARKER.format(n=len(text))
        return False
    for container, key, text, cost in leaves:
        if cost <= ceiling:
            break
        # Characters to keep, scaled from bytes by this string's own bytes per character.
        keep = keep_bytes * len(text) // cost
        container[key] = text[:keep] + TRUNCATION_MARKER.format(n=len(text) - keep)
    return True


def _remove_properties(
    event: dict[str, Any], props: dict[str, Any], size: int, max_bytes: int
) -> dict[str, Any] | None:
    """The last resort: remove whole properties, content first, then the largest."""
    removable = [k for k in props if not (k in KEEP_KEYS and _json_bytes(props[k]) <= 2000)]
    sizes = {k: _json_bytes(props[k]) + _json_bytes(k) + 2 for k in removable}
    order = [k for k in CONTENT_KEYS if k in sizes] + sorted(
        (k for k in removable if k not in CONTENT_KEYS), key=lambda k: -sizes[k]
    )
    removed = 0
    estimate = size + len(REMOVED_KEY) + 16
    for key in order:
        if estimate <= max_bytes:
            break
        del props[key]
        removed += 1
        estimate -= sizes[key]
    if removed:
        props[REMOVED_KEY] = removed
    return event if json_size(event) <= max_bytes else None
