"""Prompts and completions as PostHog renders them (research/posthog.md §1.8), and token usage
read from the providers' own usage objects."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
from core_support import make_client, props

from posthog_llm_trace import generation, trace
from posthog_llm_trace.testing import capture_events


def recorded(input: Any = None, output: Any = None, usage: Any = None) -> dict[str, Any]:
    """The properties of the ``$ai_generation`` recorded for one call."""
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p", input=input) as gen,
    ):
        if output is not None:
            gen.set_output(output)
        if usage is not None:
            gen.set_usage(usage)
    return props(events.named("$ai_generation")[0])


def test_a_string_prompt_is_a_user_message_and_a_string_completion_an_assistant_one():
    p = recorded("What is 2+2?", "4")
    assert p["$ai_input"] == [{"role": "user", "content": "What is 2+2?"}]
    assert p["$ai_output_choices"] == [{"role": "assistant", "content": "4"}]


def test_openai_chat_messages_pass_through_with_tool_calls_as_function_parts():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    p = recorded(messages)
    assert p["$ai_input"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "function",
                    "id": "call_1",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]


def test_an_assistant_message_with_text_and_tool_calls_keeps_both_text_first():
    message = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "c1", "function": {"name": "lookup", "arguments": "{}"}}],
    }
    assert recorded(output=message)["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "function", "id": "c1", "function": {"name": "lookup", "arguments": "{}"}},
            ],
        }
    ]


def test_anthropic_content_blocks_become_text_and_function_parts():
    response = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": [
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    p = recorded([{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}], response)
    assert p["$ai_input"] == [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]
    assert p["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "function",
                    "id": "toolu_1",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
            ],
        }
    ]


def test_messages_wrappers_are_unwrapped():
    wrapped = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    assert recorded(wrapped)["$ai_input"] == [{"role": "user", "content": "hi"}]
    assert recorded({"messages": []})["$ai_input"] == []


def test_an_openai_like_response_object_with_choices_becomes_its_messages():
    response = SimpleNamespace(
        id="chatcmpl-1",
        model="gpt-4o-mini",
        choices=[
            SimpleNamespace(
                index=0,
                finish_reason="tool_calls",
                message=SimpleNamespace(
                    role="assistant",
                    content=None,
                    refusal=None,
                    tool_calls=[
                        SimpleNamespace(
                            id="call_9",
                            type="function",
                            function=SimpleNamespace(name="search", arguments='{"q": "x"}'),
                        )
                    ],
                ),
            )
        ],
        usage=SimpleNamespace(prompt_tokens=30, completion_tokens=7),
    )
    assert recorded(output=response)["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "function",
                    "id": "call_9",
                    "function": {"name": "search", "arguments": '{"q": "x"}'},
                },
            ],
        }
    ]


def test_pydantic_models_are_read_through_model_dump():
    pydantic = pytest.importorskip("pydantic")

    class Function(pydantic.BaseModel):
        name: str
        arguments: str

    class ToolCall(pydantic.BaseModel):
        id: str
        type: str = "function"
        function: Function

    class Message(pydantic.BaseModel):
        role: str
        content: str | None = None
        tool_calls: list[ToolCall] | None = None

    class Choice(pydantic.BaseModel):
        index: int
        message: Message

    class ChatCompletion(pydantic.BaseModel):
        id: str
        choices: list[Choice]

    completion = ChatCompletion(
        id="c",
        choices=[
            Choice(
                index=0,
                message=Message(
                    role="assistant",
                    content="On it.",
                    tool_calls=[ToolCall(id="t1", function=Function(name="f", arguments="{}"))],
                ),
            )
        ],
    )
    p = recorded([Message(role="user", content="go")], completion)
    assert p["$ai_input"] == [{"role": "user", "content": "go"}]
    assert p["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "On it."},
                {"type": "function", "id": "t1", "function": {"name": "f", "arguments": "{}"}},
            ],
        }
    ]


@dataclasses.dataclass
class Turn:
    role: str
    content: str


def test_dataclasses_are_read_field_by_field():
    p = recorded([Turn("user", "hello")], Turn("assistant", "hi"))
    assert p["$ai_input"] == [{"role": "user", "content": "hello"}]
    assert p["$ai_output_choices"] == [{"role": "assistant", "content": "hi"}]


def test_anything_else_becomes_one_message_holding_its_json():
    p = recorded({"question": "x", "k": 3})
    assert p["$ai_input"] == [{"role": "user", "content": '{"question": "x", "k": 3}'}]


def test_openai_chat_usage_is_read():
    usage = SimpleNamespace(
        prompt_tokens=120,
        completion_tokens=40,
        total_tokens=160,
        prompt_tokens_details=SimpleNamespace(cached_tokens=100),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=12),
    )
    p = recorded(usage=usage)
    assert (p["$ai_input_tokens"], p["$ai_output_tokens"]) == (120, 40)  # gross, as reported
    assert p["$ai_cache_read_input_tokens"] == 100
    assert p["$ai_reasoning_tokens"] == 12
    assert p["$ai_cache_reporting_exclusive"] is False


def test_openai_responses_usage_is_read():
    usage = {
        "input_tokens": 300,
        "output_tokens": 50,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens_details": {"reasoning_tokens": 20},
    }
    p = recorded(usage=usage)
    assert (p["$ai_input_tokens"], p["$ai_output_tokens"]) == (300, 50)
    assert p["$ai_cache_read_input_tokens"] == 200
    assert p["$ai_reasoning_tokens"] == 20


def test_anthropic_usage_input_tokens_become_gross():
    # Anthropic counts input tokens *without* the cache; PostHog gets them with it.
    usage = SimpleNamespace(
        input_tokens=50,
        output_tokens=20,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=200,
    )
    p = recorded(usage=usage)
    assert p["$ai_input_tokens"] == 1250
    assert p["$ai_cache_read_input_tokens"] == 1000
    assert p["$ai_cache_creation_input_tokens"] == 200
    assert p["$ai_cache_reporting_exclusive"] is False


def test_anthropic_usage_without_cache_is_taken_as_is():
    usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
    }
    p = recorded(usage=usage)
    assert p["$ai_input_tokens"] == 50
    assert "$ai_cache_read_input_tokens" not in p
    assert "$ai_cache_reporting_exclusive" not in p


def test_explicit_counts_win_over_a_usage_object():
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p") as gen,
    ):
        gen.set_usage({"prompt_tokens": 10, "completion_tokens": 2}, output_tokens=3)
    p = props(events[0])
    assert (p["$ai_input_tokens"], p["$ai_output_tokens"]) == (10, 3)
