"""The OpenAI API on the fake provider: ``/v1/chat/completions``, ``/v1/responses`` and
``/v1/embeddings``, JSON and SSE as the real API sends them.

The answers are deterministic. Chat and Responses echo the last user text (``"echo: <text>"``);
with ``tools`` and no tool result yet in the conversation they call the first tool instead,
with ``{"q": <text>}`` as arguments. Streams split the text into words, or into the number of
pieces a request asks for with ``extra_body={"fake_chunks": N}``. Chat streams start with the
role-only chunk and, with ``stream_options={"include_usage": True}``, end with the usage chunk
whose ``choices`` is empty, as the real API does. A Responses request with ``reasoning`` gets a
reasoning item with a summary first.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.fake_provider import FakeProvider, Json, Request, Sse

__all__ = ["register"]

CREATED = 1_767_225_600
_ids = itertools.count(1)


def register(provider: FakeProvider) -> None:
    provider.route("POST", "/v1/chat/completions", chat_completions)
    provider.route("POST", "/v1/responses", responses)
    provider.route("POST", "/v1/embeddings", embeddings)


# --- shared ------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _pieces(text: str, count: int | None) -> list[str]:
    if not count:
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    size = max(1, -(-len(text) // count))
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    while len(pieces) < count:
        pieces.append(".")
    return pieces[:count]


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _tool_name(tool: dict[str, Any]) -> str:
    fn = tool.get("function")
    return str((fn or {}).get("name") if isinstance(fn, dict) else tool.get("name"))


# --- chat completions -------------------------------------------------------------------------


def chat_completions(request: Request) -> Json | Sse:
    body = request.body
    messages = body.get("messages") or []
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    question = _text_of(user.get("content"))
    answered = any(m.get("role") == "tool" for m in messages)
    tools = body.get("tools") or []
    call = None
    if tools and not answered:
        call = {
            "id": f"call_{next(_ids)}",
            "type": "function",
            "function": {"name": _tool_name(tools[0]), "arguments": json.dumps({"q": question})},
        }
    text = f"echo: {question}"
    prompt = sum(_tokens(_text_of(m.get("content"))) for m in messages) + 7
    completion = _tokens(call["function"]["arguments"] if call else text)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    model = body.get("model", "gpt-4o-mini")
    ident = f"chatcmpl-{next(_ids)}"
    reason = "tool_calls" if call else "stop"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        message["refusal"] = None
        return Json(
            {
                "id": ident,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )
    base = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
        if include_usage:
            out["usage"] = None
        return out

    events: list[tuple[str | None, Any]] = [
        (None, chunk({"role": "assistant", "content": "", "refusal": None}))
    ]
    if call:
        args = call["function"]["arguments"]
        first = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        events.append((None, chunk({"tool_calls": [first]})))
        for piece in _pieces(args, body.get("fake_chunks")):
            events.append(
                (None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            )
    else:
        for piece in _pieces(text, body.get("fake_chunks")):
            events.append((None, chunk({"content": piece})))
    events.append((None, chunk({}, reason)))
    if include_usage:
        events.append((None, dict(base, choices=[], usage=usage)))
    events.append((None, "[DONE]"))
    return Sse(events)


# --- responses --------------------------------------------------------------------------------


def _responses_question(value: Any) -> tuple[str, bool]:
    """The last user text of a Responses input, and whether a tool result is in it."""
    if isinstance(value, str):
        return value, False
    question, answered = "", False
    for item in value or []:
        if item.get("type") == "function_call_output":
            answered = True
        elif item.get("role") == "user":
            question = _text_of(
                [{"text": p.get("text")} if isinstance(p, dict) else p for p in item["content"]]
                if isinstance(item.get("content"), list)
                else item.get("content")
            )
    return question, answered


def responses(request: Request) -> Json | Sse:
    body = request.body
    question, answered = _responses_question(body.get("input"))
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    model = body.get("model", "gpt-4.1-mini")
    rid = f"resp_{next(_ids)}"
    output: list[dict[str, Any]] = []
    if body.get("reasoning"):
        output.append(
            {
                "id": f"rs_{next(_ids)}",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": f"thinking about {question}"}],
            }
        )
    text = f"echo: {question}"
    if tools and not answered:
        output.append(
            {
                "id": f"fc_{next(_ids)}",
                "type": "function_call",
                "status": "completed",
                "call_id": f"call_{next(_ids)}",
                "name": tools[0]["name"],
                "arguments": json.dumps({"q": question}),
            }
        )
    else:
        output.append(
            {
                "id": f"msg_{next(_ids)}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    prompt = _tokens(question) + 9
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 4 if body.get("reasoning") else 0},
        "total_tokens": prompt + 12,
    }

    def response(status: str, out: list[Any], use: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": model,
            "output": out,
            "instructions": body.get("instructions"),
            "tools": body.get("tools") or [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "temperature": body.get("temperature", 1.0),
            "top_p": 1.0,
            "usage": use,
            "error": None,
            "incomplete_details": None,
            "metadata": {},
        }

    if not body.get("stream"):
        return Json(response("completed", output, usage))
    seq = itertools.count()
    events: list[tuple[str | None, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(seq), **fields}))

    emit("response.created", response=response("in_progress", [], None))
    emit("response.in_progress", response=response("in_progress", [], None))
    for index, item in enumerate(output):
        if item["type"] == "reasoning":
            emit("response.output_item.added", output_index=index, item=dict(item, summary=[]))
            summary = item["summary"][0]["text"]
            for piece in _pieces(summary, None):
                emit(
                    "response.reasoning_summary_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    delta=piece,
                )
            emit(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=summary,
            )
        elif item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item=dict(item, arguments="", status="in_progress"),
            )
            for piece in _pieces(item["arguments"], body.get("fake_chunks")):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        else:
            emit(
                "response.output_item.added",
                output_index=index,
                item=dict(item, content=[], status="in_progress"),
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            for piece in _pieces(text, body.get("fake_chunks")):
                emit(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response("completed", output, usage))
    return Sse(events)


# --- embeddings -------------------------------------------------------------------------------


def embeddings(request: Request) -> Json:
    body = request.body
    value = body.get("input")
    texts = [value] if isinstance(value, str) else list(value or [])
    data = [
        {"object": "embedding", "index": i, "embedding": [0.5, float(len(str(t))), 0.25]}
        for i, t in enumerate(texts)
    ]
    tokens = sum(_tokens(str(t)) for t in texts)
    return Json(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
