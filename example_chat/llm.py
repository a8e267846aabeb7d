"""A chat turn with a plain ``openai`` client: the model may call ``get_weather``; the answer
can be streamed. There is no hand-written ``generation()``: posthog-llm-trace instruments the
SDK (its ``instrument`` setting), so every call lands in the current request's trace.

Without ``OPENAI_API_KEY`` the client talks to a small deterministic OpenAI-compatible server
started in this process (:mod:`example_chat.fake_openai`), so the examples run offline and
their events are predictable. With it, the real OpenAI API is called.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from openai import OpenAI

from example_chat import fake_openai
from posthog_llm_trace import tool

MODEL = os.environ.get("EXAMPLE_MODEL", "gpt-4o-mini")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@tool()
def get_weather(city: str) -> dict[str, Any]:
    """A tool: deterministic, so the example needs no network."""
    return {"city": city, "temperature_c": 12 + len(city) % 15}


_client: OpenAI | None = None


def client() -> OpenAI:
    """A plain ``openai.OpenAI`` client: OpenAI itself with ``OPENAI_API_KEY``, else the
    example's fake OpenAI-compatible server. posthog-llm-trace records its calls by itself."""
    global _client
    if _client is None:
        if os.environ.get("OPENAI_API_KEY"):
            _client = OpenAI()
        else:
            _client = OpenAI(base_url=fake_openai.url(), api_key="not-needed-offline")
    return _client


def answer(question: str, history: list[dict[str, Any]] | None = None) -> str:
    """A chat turn: call the model, run any tool it asks for, call it again. Each model call is
    recorded as a generation of the request's trace; nothing here says so."""
    messages: list[Any] = [*(history or []), {"role": "user", "content": question}]
    for _ in range(3):
        response = client().chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER_TOOL], temperature=0.2
        )
        reply = response.choices[0].message
        if not reply.tool_calls:
            return reply.content or ""
        messages.append(reply)
        for call in reply.tool_calls:
            args = json.loads(call.function.arguments)  # type: ignore[union-attr]
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": json.dumps(get_weather(**args)),
                }
            )
    return ""


def stream_answer(question: str) -> Iterator[str]:
    """A streamed answer: yields text pieces as they come. The generation gets the text, the
    token counts (``include_usage``) and the time to first token."""
    chunks = client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content
