"""The provider-reading interface shared by the manual API and the instrumentation:
``providers.read_usage`` / ``read_response`` and what ``Generation`` does with them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from posthog_llm_trace import generation, trace
from posthog_llm_trace.providers import read_response, read_usage
from posthog_llm_trace.testing import capture_events
from tests.core_support import make_client, props


def recorded(body: Any) -> dict[str, Any]:
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p") as gen,
    ):
        body(gen)
    return props(events.by_span_name("g"))


def test_read_usage_knows_each_shape() -> None:
    chat = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 8},
    }
    assert read_usage(chat) == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_input_tokens": 60,
        "reasoning_tokens": 8,
    }
    responses = SimpleNamespace(
        input_tokens=50,
        output_tokens=5,
        input_tokens_details=SimpleNamespace(cached_tokens=10, cache_write_tokens=0),
        output_tokens_details=SimpleNamespace(reasoning_tokens=2),
    )
    assert read_usage(responses) == {
        "input_tokens": 50,
        "output_tokens": 5,
        "cache_read_input_tokens": 10,
        "reasoning_tokens": 2,
    }
    anthropic = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 100}
    assert read_usage(anthropic)["input_tokens"] == 105  # type: ignore[index]
    assert read_usage({"input_tokens": 3, "output_tokens": 1}) == {
        "input_tokens": 3,
        "output_tokens": 1,
    }
    assert read_usage("nothing") is None and read_usage(object()) is None


def test_read_response_of_a_chat_completion_and_a_responses_response() -> None:
    chat = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    assert read_response(chat) == {
        "output": [{"role": "assistant", "content": "hi"}],
        "stop_reason": "length",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    incomplete = {
        "object": "response",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [],
    }
    assert read_response(incomplete)["stop_reason"] == "max_output_tokens"  # type: ignore[index]
    assert read_response({"role": "assistant", "content": "x"}) is None


def test_set_output_of_a_response_dict_records_its_stop_reason_and_usage() -> None:
    chat = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    p = recorded(lambda gen: gen.set_output(chat))
    assert p["$ai_stop_reason"] == "stop" and p["$ai_input_tokens"] == 3
    assert p["$ai_model"] == "m"  # the application's model wins


def test_a_later_usage_does_not_make_a_gross_input_net_again() -> None:
    def body(gen: Any) -> None:
        gen.set_usage({"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 90})
        gen.set_usage({"input_tokens": 10, "output_tokens": 30})  # a stream's last usage

    p = recorded(body)
    assert p["$ai_input_tokens"] == 100 and p["$ai_output_tokens"] == 30
    assert p["$ai_cache_read_input_tokens"] == 90


def test_the_exclusive_flag_only_comes_with_a_gross_input_count() -> None:
    p = recorded(lambda gen: gen.set_usage(cache_read_input_tokens=5, output_tokens=1))
    assert "$ai_cache_reporting_exclusive" not in p
    p = recorded(lambda gen: gen.set_usage(input_tokens=9, cache_read_input_tokens=5))
    assert p["$ai_cache_reporting_exclusive"] is False


def test_empty_chunks_do_not_set_the_time_to_first_token() -> None:
    def body(gen: Any) -> None:
        gen.chunk("")
        gen.chunk(None)
        assert gen.time_to_first_token is None
        gen.chunk("hello")
        assert gen.time_to_first_token is not None

    p = recorded(body)
    assert p["$ai_output_choices"] == [{"role": "assistant", "content": "hello"}]
