"""An instrumented chat turn: the model may call ``get_weather``; the answer can be streamed.

Without ``OPENAI_API_KEY`` a deterministic fake provider answers, so the examples run offline
and their events are predictable. With it, the real OpenAI Chat Completions API is called.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from posthog_llm_trace import generation, tool

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


def _fake_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What the fake model says: a tool call when asked about the weather, text otherwise."""
    last = messages[-1]
    if last["role"] == "tool":
        data = json.loads(last["content"])
        return {
            "role": "assistant",
            "content": f"It is {data['temperature_c']} °C in {data['city']}.",
        }
    match = re.search(r"weather in ([A-Za-z ]+)", str(last["content"]), re.I)
    if match:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps({"city": match.group(1).strip()}),
                    },
                }
            ],
        }
    return {"role": "assistant", "content": f"You said: {last['content']}"}


def _complete(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One model call, recorded as a generation."""
    with generation(
        "chat",
        model=MODEL,
        provider="openai",
        input=messages,
        model_parameters={"temperature": 0.2},
        tools=[WEATHER_TOOL],
    ) as gen:
        if os.environ.get("OPENAI_API_KEY"):
            from openai import OpenAI  # optional dependency of the example

            response = OpenAI().chat.completions.create(
                model=MODEL, messages=messages, tools=[WEATHER_TOOL], temperature=0.2
            )
            reply = response.choices[0].message.model_dump(exclude_none=True)
            gen.set_usage(response.usage)
            gen.set_stop_reason(response.choices[0].finish_reason)
        else:
            reply = _fake_reply(messages)
            gen.set_usage(
                input_tokens=sum(len(str(m.get("content"))) // 4 + 1 for m in messages),
                output_tokens=len(str(reply.get("content"))) // 4 + 1,
            )
            gen.set_stop_reason("tool_calls" if reply.get("tool_calls") else "stop")
        gen.set_output(reply)
        return reply


def answer(question: str, history: list[dict[str, Any]] | None = None) -> str:
    """A chat turn: call the model, run any tool it asks for, call it again."""
    messages = [*(history or []), {"role": "user", "content": question}]
    reply = _complete(messages)
    for _ in range(3):
        if not reply.get("tool_calls"):
            break
        messages.append(reply)
        for call in reply["tool_calls"]:
            args = json.loads(call["function"]["arguments"])
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": json.dumps(get_weather(**args)),
                }
            )
        reply = _complete(messages)
    return str(reply.get("content") or "")


def stream_answer(question: str) -> Iterator[str]:
    """A streamed answer: yields text pieces as they come, recorded with time to first token."""
    messages = [{"role": "user", "content": question}]
    with generation(
        "chat-stream", model=MODEL, provider="openai", input=messages, stream=True
    ) as gen:
        if os.environ.get("OPENAI_API_KEY"):
            from openai import OpenAI

            chunks = OpenAI().chat.completions.create(
                model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                if chunk.usage:
                    gen.set_usage(chunk.usage)
                if chunk.choices and chunk.choices[0].delta.content:
                    piece = chunk.choices[0].delta.content
                    gen.chunk(piece)
                    yield piece
        else:
            words = f"You said: {question}".split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                gen.chunk(piece)
                yield piece
            gen.set_usage(input_tokens=len(question) // 4 + 1, output_tokens=len(words))
