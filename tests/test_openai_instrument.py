"""The real ``openai`` client, instrumented, against the fake provider: every call is one
generation (or embedding) with the fields PostHog reads, streams are unchanged, errors reach the
application unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from openai.resources.chat import completions as chat_resources

import posthog_llm_trace as plt
from posthog_llm_trace import client as client_module
from posthog_llm_trace import generation, span, trace
from posthog_llm_trace.testing import CapturedEvents, capture_events
from tests.core_support import make_client, props
from tests.fake_provider import FakeProvider, Json, Sse

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    before = plt.instrumented()
    plt.instrument("openai")
    yield
    plt.uninstrument()
    if before:
        plt.instrument(*before)


@pytest.fixture
def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def aclient(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0)


def generations(events: CapturedEvents) -> list[dict[str, Any]]:
    return [props(e) for e in events.named("$ai_generation")]


def only_generation(events: CapturedEvents) -> dict[str, Any]:
    [gen] = generations(events)
    return gen


@contextmanager
def default_client(**settings: Any) -> Iterator[None]:
    """A default client of the test's own; the suite's is put back afterwards."""
    with client_module._lock:
        saved = (client_module._default, client_module._explicit)
    client_module.set_default_client(make_client(**settings))
    try:
        yield
    finally:
        with client_module._lock:
            client_module._default, client_module._explicit = saved


def traced(**settings: Any) -> Any:
    return trace("script", client=make_client(**settings))


# --- chat completions ---------------------------------------------------------------------------


def test_a_chat_completion_is_one_generation_with_every_field(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "weather in Paris?"},
    ]
    with capture_events() as events, traced():
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            temperature=0.3,
            max_tokens=50,
            top_p=0.9,
            seed=7,
            stop=["\n\n"],
            frequency_penalty=0.1,
            presence_penalty=0.2,
            n=1,
            service_tier="default",
            reasoning_effort="low",
            max_completion_tokens=60,
        )
    assert reply.choices[0].message.content == "echo: weather in Paris?"
    gen = only_generation(events)
    usage = reply.usage
    assert usage is not None
    assert gen["$ai_model"] == "gpt-4o-mini"
    assert gen["$ai_provider"] == "openai"
    assert gen["$ai_input"] == messages
    assert gen["$ai_output_choices"] == [
        {"role": "assistant", "content": "echo: weather in Paris?"}
    ]
    assert gen["$ai_input_tokens"] == usage.prompt_tokens
    assert gen["$ai_output_tokens"] == usage.completion_tokens
    assert gen["$ai_cache_read_input_tokens"] == 2
    assert gen["$ai_cache_reporting_exclusive"] is False
    assert gen["$ai_stop_reason"] == "stop"
    assert gen["$ai_model_parameters"] == {
        "temperature": 0.3,
        "max_tokens": 50,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "n": 1,
        "service_tier": "default",
        "reasoning_effort": "low",
        "max_completion_tokens": 60,
    }
    assert gen["$ai_http_status"] == 200
    assert gen["$ai_base_url"] == fake.url + "/v1"
    assert gen["$ai_stream"] is False
    assert "$ai_time_to_first_token" not in gen
    assert gen["$ai_parent_id"] == gen["$ai_trace_id"]


def test_tool_calls_and_tool_results_are_rendered_as_posthog_shows_them(
    client: openai.OpenAI,
) -> None:
    question = [{"role": "user", "content": "weather in Paris?"}]
    with capture_events() as events, traced():
        first = client.chat.completions.create(model="gpt-4o-mini", messages=question, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        history = [
            *question,
            first.choices[0].message,  # the SDK object, as applications append it
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
        ]
        client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
    asked, answered = generations(events)
    assert asked["$ai_tools"] == TOOLS
    assert asked["$ai_stop_reason"] == "tool_calls"
    tool_part = {
        "type": "function",
        "id": call.id,
        "function": {"name": "weather", "arguments": '{"q": "weather in Paris?"}'},
    }
    assert asked["$ai_output_choices"] == [{"role": "assistant", "content": [tool_part]}]
    assert answered["$ai_input"][1] == {"role": "assistant", "content": [tool_part]}
    assert answered["$ai_input"][2] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": '{"sky": "clear"}',
    }
    assert answered["$ai_stop_reason"] == "stop"


def test_a_generator_of_messages_is_read_once_and_still_sent(client: openai.OpenAI) -> None:
    messages = ({"role": "user", "content": w} for w in ["only once"])
    with capture_events() as events, traced():
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert reply.choices[0].message.content == "echo: only once"
    assert only_generation(events)["$ai_input"] == [{"role": "user", "content": "only once"}]


def test_async_chat_completion(aclient: openai.AsyncOpenAI) -> None:
    async def main() -> str | None:
        with traced():
            reply = await aclient.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "async hi"}]
            )
        return reply.choices[0].message.content

    with capture_events() as events:
        assert asyncio.run(main()) == "echo: async hi"
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: async hi"}]
    assert gen["$ai_stop_reason"] == "stop" and gen["$ai_http_status"] == 200


def test_parse_is_recorded(client: openai.OpenAI) -> None:
    with capture_events() as events, traced():
        parsed = client.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "parse me"}]
        )
    assert parsed.choices[0].message.content == "echo: parse me"
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: parse me"}]
    assert gen["$ai_input_tokens"] == parsed.usage.prompt_tokens  # type: ignore[union-attr]


# --- chat streams -------------------------------------------------------------------------------


def stream_chunks(client: openai.OpenAI, **kwargs: Any) -> tuple[type, list[dict[str, Any]]]:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me more"}], **kwargs
    )
    return type(stream), [chunk.model_dump() for chunk in stream]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_is_unchanged_chunk_for_chunk_and_recorded(
    client: openai.OpenAI, include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    with capture_events() as events, traced():
        kind, chunks = stream_chunks(client, stream=True, **options)
    plt.uninstrument("openai")
    bare_kind, bare = stream_chunks(client, stream=True, **options)
    assert kind is bare_kind is openai.Stream
    strip = [{k: v for k, v in c.items() if k != "id"} for c in chunks]
    assert strip == [{k: v for k, v in c.items() if k != "id"} for c in bare]
    assert (chunks[-1]["choices"] == []) is include_usage
    gen = only_generation(events)
    assert gen["$ai_stream"] is True
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: tell me more"}]
    assert gen["$ai_stop_reason"] == "stop"
    assert gen["$ai_time_to_first_token"] <= gen["$ai_latency"]
    assert gen["$ai_http_status"] == 200
    if include_usage:
        assert gen["$ai_input_tokens"] == chunks[-1]["usage"]["prompt_tokens"]
        assert gen["$ai_output_tokens"] == chunks[-1]["usage"]["completion_tokens"]
    else:
        assert "$ai_input_tokens" not in gen


def test_time_to_first_token_is_the_first_content_not_the_role_chunk(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    from tests import fake_openai

    def slow(request: Any) -> Any:
        answer = fake_openai.chat_completions(request)
        answer.delay = 0.05  # type: ignore[union-attr]
        events = list(answer.events)  # type: ignore[union-attr]
        answer.events = events  # type: ignore[union-attr]
        return answer

    fake.route("POST", "/v1/chat/completions", slow)
    try:
        with capture_events() as events, traced():
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "a b"}], stream=True
            )
            list(stream)
    finally:
        fake.route("POST", "/v1/chat/completions", fake_openai.chat_completions)
    gen = only_generation(events)
    # The role-only chunk arrives after one delay, the first text after two.
    assert gen["$ai_time_to_first_token"] >= 0.1


def test_streamed_tool_call_deltas_become_the_output(client: openai.OpenAI) -> None:
    with capture_events() as events, traced():
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    call_id = chunks[1].choices[0].delta.tool_calls[0].id  # type: ignore[index]
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "function",
                    "id": call_id,
                    "function": {"name": "weather", "arguments": '{"q": "weather?"}'},
                }
            ],
        }
    ]
    assert gen["$ai_stop_reason"] == "tool_calls"
    assert gen["$ai_tools"] == TOOLS


def test_async_stream(aclient: openai.AsyncOpenAI) -> None:
    async def main() -> list[str]:
        with traced():
            stream = await aclient.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "async stream"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            assert isinstance(stream, openai.AsyncStream)
            return [c.choices[0].delta.content or "" async for c in stream if c.choices]

    with capture_events() as events:
        assert "".join(asyncio.run(main())) == "echo: async stream"
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: async stream"}]
    assert gen["$ai_input_tokens"] > 0 and gen["$ai_stream"] is True


def test_an_abandoned_stream_still_ends_its_generation(client: openai.OpenAI) -> None:
    def start() -> openai.Stream[Any]:
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "one two three four"}],
            stream=True,
        )

    with capture_events() as events, traced():
        with start() as stream:  # break, then leave the with block
            for chunk in stream:
                if chunk.choices[0].delta.content:
                    break
        closed = start()
        next(closed)
        next(closed)
        closed.close()
        collected = start()
        next(collected)
        del collected
        gc.collect()
        never_read = start()
        del never_read
        gc.collect()
    gens = generations(events)
    assert len(gens) == 4
    assert gens[0]["$ai_output_choices"] == [{"role": "assistant", "content": "echo:"}]
    assert all(g["$ai_stream"] is True and "$ai_is_error" not in g for g in gens)


def test_the_sdk_stream_helpers_are_recorded(client: openai.OpenAI) -> None:
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "helper"}]}
    with capture_events() as events, traced():
        with client.chat.completions.stream(**ask) as chat_stream:
            for _ in chat_stream:
                pass
        with client.responses.stream(model="gpt-4.1-mini", input="helper") as responses_stream:
            for _ in responses_stream:
                pass
    chat, responses = generations(events)
    assert chat["$ai_output_choices"] == [{"role": "assistant", "content": "echo: helper"}]
    assert responses["$ai_output_choices"] == [{"role": "assistant", "content": "echo: helper"}]
    assert chat["$ai_stream"] is responses["$ai_stream"] is True


# --- responses ----------------------------------------------------------------------------------


def test_responses_with_instructions_tools_reasoning_and_tool_history(
    client: openai.OpenAI,
) -> None:
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "weather in Rome?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "rain"}'},
        {"role": "user", "content": "and in Paris?"},
    ]
    with capture_events() as events, traced():
        response = client.responses.create(
            model="gpt-4.1-mini",
            instructions="You are terse.",
            input=history,
            tools=tools,
            reasoning={"effort": "low"},
            max_output_tokens=200,
        )
    gen = only_generation(events)
    assert gen["$ai_input"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "weather in Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "function",
                    "id": "call_1",
                    "function": {"name": "weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "rain"}'},
        {"role": "user", "content": "and in Paris?"},
    ]
    # the fake answers with text once a tool result is in the conversation
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "reasoning", "text": "thinking about and in Paris?"},
                {"type": "text", "text": "echo: and in Paris?"},
            ],
        }
    ]
    assert response.usage is not None
    assert gen["$ai_input_tokens"] == response.usage.input_tokens
    assert gen["$ai_reasoning_tokens"] == 4
    assert gen["$ai_cache_read_input_tokens"] == 1
    assert gen["$ai_model_parameters"] == {"reasoning": {"effort": "low"}, "max_output_tokens": 200}
    assert gen["$ai_tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    assert gen["$ai_stop_reason"] == "completed"


def test_a_responses_function_call_is_output_and_never_user_text(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    with capture_events() as events, traced():
        response = client.responses.create(model="gpt-4.1-mini", input="Rome?", tools=tools)
    call = response.output[0]
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "function",
                    "id": call.call_id,  # type: ignore[union-attr]
                    "function": {"name": "weather", "arguments": '{"q": "Rome?"}'},
                }
            ],
        }
    ]
    assert gen["$ai_input"] == [{"role": "user", "content": "Rome?"}]


def test_a_responses_stream(client: openai.OpenAI) -> None:
    with capture_events() as events, traced():
        stream = client.responses.create(
            model="gpt-4.1-mini", input="stream it", stream=True, reasoning={"effort": "low"}
        )
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.completed"
    gen = only_generation(events)
    assert gen["$ai_stream"] is True
    assert gen["$ai_output_choices"][0]["content"][-1] == {
        "type": "text",
        "text": "echo: stream it",
    }
    assert gen["$ai_input_tokens"] > 0 and gen["$ai_reasoning_tokens"] == 4
    assert gen["$ai_stop_reason"] == "completed"
    assert 0 < gen["$ai_time_to_first_token"] <= gen["$ai_latency"]


def test_async_responses(aclient: openai.AsyncOpenAI) -> None:
    async def main() -> str:
        with traced():
            response = await aclient.responses.create(model="gpt-4.1-mini", input="async")
            stream = await aclient.responses.create(model="gpt-4.1-mini", input="s", stream=True)
            async for _ in stream:
                pass
        return response.output_text

    with capture_events() as events:
        assert asyncio.run(main()) == "echo: async"
    plain, streamed = generations(events)
    assert plain["$ai_output_choices"] == [{"role": "assistant", "content": "echo: async"}]
    assert streamed["$ai_output_choices"] == [{"role": "assistant", "content": "echo: s"}]


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_sync_and_async(
    client: openai.OpenAI, aclient: openai.AsyncOpenAI, fake: FakeProvider
) -> None:
    async def later() -> None:
        await aclient.embeddings.create(model="text-embedding-3-small", input="one two")

    with capture_events() as events, traced():
        result = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
        asyncio.run(later())
    assert len(result.data) == 2
    first, second = (props(e) for e in events.named("$ai_embedding"))
    assert first["$ai_model"] == "text-embedding-3-small"
    assert first["$ai_input"] == ["a b", "c"]
    assert first["$ai_input_tokens"] == 3
    assert first["$ai_http_status"] == 200
    assert first["$ai_base_url"] == fake.url + "/v1"
    assert second["$ai_input"] == "one two"
    assert not events.named("$ai_generation")


# --- raw and streaming responses ----------------------------------------------------------------


def test_with_raw_response_and_with_streaming_response_still_work(client: openai.OpenAI) -> None:
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "raw"}]}
    with capture_events() as events, traced():
        raw = client.chat.completions.with_raw_response.create(**ask)
        assert raw.status_code == 200
        assert raw.parse().choices[0].message.content == "echo: raw"
        raw_stream = client.chat.completions.with_raw_response.create(**ask, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in raw_stream.parse()) == "echo: raw"
        with client.chat.completions.with_streaming_response.create(**ask) as streaming:
            assert streaming.parse().choices[0].message.content == "echo: raw"
    raw_gen, raw_stream_gen, streaming_gen = generations(events)
    assert raw_gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: raw"}]
    assert raw_gen["$ai_input_tokens"] > 0
    assert raw_stream_gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: raw"}]
    # The application reads a streaming response's body itself: the call, not its output.
    assert streaming_gen["$ai_http_status"] == 200
    assert streaming_gen["$ai_input"] == ask["messages"]


# --- errors -----------------------------------------------------------------------------------


def test_an_api_error_marks_the_generation_and_reaches_the_app_unchanged(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    fake.queue(
        "/v1/chat/completions",
        Json({"error": {"message": "slow down", "type": "rate_limit"}}, 429),
        Json({"error": {"message": "boom", "type": "server_error"}}, 500),
    )
    seen: list[BaseException] = []
    with capture_events() as events, traced():
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                )
            seen.append(info.value)
    assert type(seen[0]) is openai.RateLimitError and type(seen[1]) is openai.InternalServerError
    limited, failed = generations(events)
    assert limited["$ai_http_status"] == 429 and limited["$ai_is_error"] is True
    assert "slow down" in limited["$ai_error"]
    assert failed["$ai_http_status"] == 500


def test_a_connection_error_has_status_zero() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    with capture_events() as events, traced(), pytest.raises(openai.APIConnectionError):
        dead.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    gen = only_generation(events)
    assert gen["$ai_http_status"] == 0 and gen["$ai_is_error"] is True


def test_an_error_in_the_middle_of_a_stream_marks_the_generation(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    piece = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}],
    }
    fake.queue(
        "/v1/chat/completions",
        Sse([(None, piece), (None, {"error": {"message": "overloaded", "type": "server"}})]),
    )
    seen = []
    with capture_events() as events, traced():
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError, match="overloaded"):
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content)
    assert seen == ["half"]
    gen = only_generation(events)
    assert gen["$ai_is_error"] is True and "overloaded" in gen["$ai_error"]
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "half"}]


# --- nesting, no double counting ----------------------------------------------------------------


def test_a_call_lands_under_the_current_span(client: openai.OpenAI) -> None:
    with capture_events() as events, traced(), span("plan") as outer:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    gen = only_generation(events)
    assert gen["$ai_parent_id"] == outer.id


def test_a_call_without_a_trace_opens_its_own(client: openai.OpenAI) -> None:
    with default_client(), capture_events() as events:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    gen = only_generation(events)
    [own] = events.named("$ai_trace")
    assert gen["$ai_trace_id"] == props(own)["$ai_trace_id"]


def test_inside_an_application_generation_the_call_fills_it(client: openai.OpenAI) -> None:
    with (
        capture_events() as events,
        traced(),
        generation("answer", properties={"feature": "chat"}) as gen,
    ):
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "once"}],
            temperature=0,
        )
        gen.set_output(reply)
    only = only_generation(events)
    assert only["$ai_span_name"] == "answer" and only["feature"] == "chat"
    assert only["$ai_model"] == "gpt-4o-mini"
    assert only["$ai_output_choices"] == [{"role": "assistant", "content": "echo: once"}]
    assert only["$ai_input_tokens"] == reply.usage.prompt_tokens  # type: ignore[union-attr]
    assert only["$ai_stop_reason"] == "stop"
    assert only["$ai_model_parameters"] == {"temperature": 0}


def test_an_error_inside_an_application_generation_marks_it(
    client: openai.OpenAI, fake: FakeProvider
) -> None:
    fake.queue("/v1/chat/completions", Json({"error": {"message": "nope"}}, 400))
    # the application handles the error; the generation still failed
    with (
        capture_events() as events,
        traced(),
        generation("answer"),
        contextlib.suppress(openai.BadRequestError),
    ):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    only = only_generation(events)
    assert only["$ai_is_error"] is True and only["$ai_http_status"] == 400


# --- privacy, settings, undo ------------------------------------------------------------------


def test_privacy_mode_and_mask_apply(client: openai.OpenAI) -> None:
    ask = {"model": "m", "messages": [{"role": "user", "content": "secret 4111"}]}
    with capture_events() as events:
        with traced(privacy_mode=True):
            client.chat.completions.create(**ask)
        with traced(mask=lambda value: "[masked]"):
            client.chat.completions.create(**ask)
    private, masked = generations(events)
    assert "secret" not in json.dumps(private) and "$ai_input_tokens" in private
    assert "secret" not in json.dumps(masked)


def test_a_call_while_export_is_disabled_only_checks_a_flag(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posthog_llm_trace.providers.openai import _record as provider

    opened: list[str] = []
    real = provider.begin_call

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(provider, "begin_call", counting)
    ask = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with default_client(export="off"):  # and no capture: nothing would be recorded
        reply = client.chat.completions.create(**ask)
    assert reply.choices[0].message.content == "echo: x"
    assert opened == []
    with capture_events(), traced():
        client.chat.completions.create(**ask)
    assert opened == ["chat.completions"]


def test_uninstrument_restores_the_sdk_methods(client: openai.OpenAI) -> None:
    patched = chat_resources.Completions.create
    plt.uninstrument("openai")
    original = chat_resources.Completions.create
    assert original is not patched
    assert original.__module__ == "openai.resources.chat.completions.completions"
    with capture_events() as events, traced():
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        # bound before: with_raw_response keeps the wrapper, which now calls straight through
    assert not events.named("$ai_generation")
    plt.instrument("openai")
    assert chat_resources.Completions.create is not original


def test_the_instrument_setting_turns_it_on_and_off(client: openai.OpenAI) -> None:
    plt.uninstrument()
    with default_client(instrument=[]):
        assert "openai" not in plt.instrumented()
        with capture_events() as events, traced():
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert not events.named("$ai_generation")
    with default_client():  # the default: every importable SDK
        assert "openai" in plt.instrumented()
        with capture_events() as events, traced():
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert len(events.named("$ai_generation")) == 1


# --- other clients --------------------------------------------------------------------------------


def test_azure_and_posthog_wrapper_clients_are_covered(fake: FakeProvider) -> None:
    from posthog import Posthog
    from posthog.ai.openai import OpenAI as PostHogOpenAI

    from tests import fake_openai

    fake.route(
        "POST", "/openai/deployments/gpt-4o-mini/chat/completions", fake_openai.chat_completions
    )
    azure = openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key="x", api_version="2024-10-21", max_retries=0
    )
    ph = Posthog("phc_test", host="http://127.0.0.1:9", send=False, sync_mode=True)
    wrapped = PostHogOpenAI(
        base_url=fake.url + "/v1", api_key="x", posthog_client=ph, max_retries=0
    )
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with capture_events() as events, traced():
        azure.chat.completions.create(**ask)
        wrapped.chat.completions.create(**ask)
    ph.shutdown()
    from_azure, from_wrapper = generations(events)
    assert from_azure["$ai_base_url"].startswith(fake.url + "/openai")
    assert from_azure["$ai_output_choices"] == [{"role": "assistant", "content": "echo: hi"}]
    assert from_wrapper["$ai_output_choices"] == [{"role": "assistant", "content": "echo: hi"}]


# --- the manual API reads the same objects -------------------------------------------------------


def test_set_output_of_sdk_objects_records_stop_reason_usage_and_model() -> None:
    plt.uninstrument("openai")
    with FakeProvider() as fake:
        bare = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
        reply = bare.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=TOOLS
        )
        response = bare.responses.create(model="gpt-4.1-mini", input="hi")
    with capture_events() as events, traced():
        with generation("chat") as gen:
            gen.set_output(reply)
        with generation("resp") as gen:
            gen.set_output(response)
    chat, resp = generations(events)
    assert chat["$ai_stop_reason"] == "tool_calls"
    assert chat["$ai_model"] == "gpt-4o-mini"
    assert chat["$ai_input_tokens"] == reply.usage.prompt_tokens  # type: ignore[union-attr]
    assert chat["$ai_output_choices"][0]["content"][0]["type"] == "function"
    assert resp["$ai_stop_reason"] == "completed"
    assert resp["$ai_output_choices"] == [{"role": "assistant", "content": "echo: hi"}]


def test_a_call_in_a_celery_task_lands_under_the_task(client: openai.OpenAI) -> None:
    from celery import Celery

    import posthog_llm_trace.celery as plt_celery

    app = Celery("openai_unit", broker="memory://", set_as_current=False)

    @app.task(name="unit.ask", shared=False)
    def ask(question: str) -> str | None:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        return reply.choices[0].message.content

    plt_celery.instrument(app)
    try:
        with capture_events() as events:
            assert ask.apply(args=["from a task"]).get() == "echo: from a task"
    finally:
        plt_celery.uninstrument()
    [task] = [e for e in events.named("$ai_span") if props(e)["$ai_span_name"] == "unit.ask"]
    gen = only_generation(events)
    assert gen["$ai_parent_id"] == props(task)["$ai_span_id"]
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "echo: from a task"}]
