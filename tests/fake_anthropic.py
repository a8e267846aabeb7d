"""The Anthropic Messages API on the fake provider: ``/v1/messages``, JSON and SSE as the real API
sends them.

The answers are deterministic. A message echoes the last user text (``"echo: <text>"``); with
``tools`` and no ``tool_result`` yet in the conversation it says ``"checking"`` and calls the
first tool with ``{"q": <text>}``. With ``thinking`` enabled a thinking block (``"thinking about
<text>"``, with a signature) comes first and ``output_tokens_details.thinking_tokens`` counts it.
``max_tokens`` smaller than the answer's words truncates it (``stop_reason: "max_tokens"``).
Usage always has the cache counts the real API sends (0 by default); a request can ask for cache
activity with ``extra_body={"fake_cache": {"read": R, "5m": A, "1h": B}}``. Streams send
``message_start`` (input usage), ``ping``, each block's ``content_block_start`` / deltas (words
for text and thinking, then a ``signature_delta``; the tool input JSON in pieces, the first one
empty, as the API does) / ``content_block_stop``, ``message_delta`` (stop reason, cumulative
usage) and ``message_stop``. ``extra_body={"fake_delta_usage": "output"}`` makes
``message_delta`` carry ``output_tokens`` alone, as the API did before it sent cumulative input
counts there too.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.fake_provider import FakeProvider, Json, Request, Sse

__all__ = ["error", "messages", "register", "stream_error"]

_ids = itertools.count(1)


def register(provider: FakeProvider) -> None:
    provider.route("POST", "/v1/messages", messages)


def error(status: int, kind: str, message: str) -> Json:
    """An error answer as the API sends it (``rate_limit_error``, ``overloaded_error``...)."""
    return Json({"type": "error", "error": {"type": kind, "message": message}}, status)


def stream_error(kind: str = "overloaded_error", message: str = "Overloaded") -> Sse:
    """A stream that starts, then fails with an ``error`` event (status 200, as the API does)."""
    start = _message_start("claude-sonnet-4-5", {"input_tokens": 3, "output_tokens": 1})
    return Sse(
        [
            ("message_start", start),
            ("error", {"type": "error", "error": {"type": kind, "message": message}}),
        ]
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """The content blocks, the stop reason and the usage of the answer to ``body``."""
    history = body.get("messages") or []
    user = next((m for m in reversed(history) if m.get("role") == "user"), {})
    question = _text_of(user.get("content")).strip()
    answered = any(
        isinstance(m.get("content"), list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in m["content"])
        for m in history
    )
    blocks: list[dict[str, Any]] = []
    thinking_tokens = 0
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        thought = f"thinking about {question}"
        thinking_tokens = _words(thought)
        blocks.append({"type": "thinking", "thinking": thought, "signature": "c2lnbmF0dXJl"})
    tools = body.get("tools") or []
    stop = "end_turn"
    if tools and not answered:
        blocks.append({"type": "text", "text": "checking", "citations": None})
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{next(_ids):04d}",
                "name": tools[0].get("name"),
                "input": {"q": question},
            }
        )
        stop = "tool_use"
    else:
        words = f"echo: {question}".split(" ")
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit < len(words):
            words, stop = words[:limit], "max_tokens"
        blocks.append({"type": "text", "text": " ".join(words), "citations": None})
    text = " ".join(b.get("text", "") for b in blocks if b["type"] == "text")
    prompt = (
        _text_of(body.get("system")) + " " + " ".join(_text_of(m.get("content")) for m in history)
    )
    cache = body.get("fake_cache") or {}
    five, hour = int(cache.get("5m", 0)), int(cache.get("1h", 0))
    usage: dict[str, Any] = {
        "input_tokens": _words(prompt),
        "cache_creation_input_tokens": five + hour,
        "cache_read_input_tokens": int(cache.get("read", 0)),
        "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
        "output_tokens": _words(text) + thinking_tokens + (10 if stop == "tool_use" else 0),
        "service_tier": "standard",
        "server_tool_use": None,
    }
    if thinking_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return blocks, stop, usage


def messages(request: Request) -> Json | Sse:
    body = request.body
    blocks, stop, usage = _answer(body)
    model = body.get("model")
    if not body.get("stream"):
        return Json(
            {
                "id": f"msg_{next(_ids):04d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
        )
    return Sse(_stream(model, blocks, stop, usage, body.get("fake_delta_usage")))


def _message_start(model: Any, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": f"msg_{next(_ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }


def _stream(
    model: Any, blocks: list[dict[str, Any]], stop: str, usage: dict[str, Any], delta_usage: Any
) -> list[tuple[str | None, Any]]:
    start_usage = dict(usage, output_tokens=1)
    start_usage.pop("output_tokens_details", None)
    events: list[tuple[str | None, Any]] = [
        ("message_start", _message_start(model, start_usage)),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [
                {"type": "text_delta", "text": w if i == 0 else " " + w}
                for i, w in enumerate(words)
            ]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            words = block["thinking"].split(" ")
            deltas = [
                {"type": "thinking_delta", "thinking": w if i == 0 else " " + w}
                for i, w in enumerate(words)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:  # tool_use
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            text = json.dumps(block["input"])
            middle = len(text) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in ("", text[:middle], text[middle:])
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    if delta_usage == "output":
        final: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
    else:  # cumulative totals, as the API sends them today
        final = {
            key: usage[key]
            for key in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
                "server_tool_use",
            )
        }
    if "output_tokens_details" in usage:
        final["output_tokens_details"] = usage["output_tokens_details"]
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": final,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events
