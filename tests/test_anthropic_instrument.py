"""The real ``anthropic`` client, instrumented, against the fake provider: every Messages call is
one generation with the fields PostHog reads, streams are unchanged, errors reach the
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

import anthropic
import pytest
from anthropic.resources.messages import messages as messages_resource

import posthog_llm_trace as plt
from posthog_llm_trace import client as client_module
from posthog_llm_trace import generation, span, trace
from posthog_llm_trace.testing import CapturedEvents, capture_events
from tests import fake_anthropic
from tests.core_support import make_client, props
from tests.fake_provider import FakeProvider

MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
NORMALISED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]
CACHE = {"fake_cache": {"read": 100, "5m": 30, "1h": 20}}


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    before = plt.instrumented()
    plt.instrument("anthropic")
    yield
    plt.uninstrument()
    if before:
        plt.instrument(*before)


@pytest.fixture
def client(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)


@pytest.fixture
def aclient(fake: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key="x", max_retries=0)


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


def ask(text: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": text}],
        **kwargs,
    }


def text_output(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


# --- messages.create --------------------------------------------------------------------------


def test_a_message_is_one_generation_with_every_field(
    client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    with capture_events() as events, traced():
        reply = client.messages.create(
            model=MODEL,
            max_tokens=200,
            system="Answer briefly.",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            stop_sequences=["\n\nHuman:"],
            tool_choice={"type": "auto"},
            tools=TOOLS,
            service_tier="auto",
            output_config={"effort": "low"},
            extra_body={"temperature": 0.3, "top_k": 5, **CACHE},
        )
    assert reply.stop_reason == "tool_use"
    gen = only_generation(events)
    usage = reply.usage
    assert gen["$ai_model"] == MODEL
    assert gen["$ai_provider"] == "anthropic"
    assert gen["$ai_input"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "weather in Paris?"},
    ]
    [tool_use] = [b for b in reply.content if b.type == "tool_use"]
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "checking"},
                {
                    "type": "function",
                    "id": tool_use.id,
                    "function": {"name": "weather", "arguments": '{"q": "weather in Paris?"}'},
                },
            ],
        }
    ]
    # Gross input, as PostHog prices it when told the cache is included.
    assert gen["$ai_input_tokens"] == usage.input_tokens + 100 + 50
    assert gen["$ai_cache_reporting_exclusive"] is False
    assert gen["$ai_output_tokens"] == usage.output_tokens
    assert gen["$ai_cache_read_input_tokens"] == 100
    assert gen["$ai_cache_creation_input_tokens"] == 50
    assert gen["$ai_cache_creation_5m_input_tokens"] == 30
    assert gen["$ai_cache_creation_1h_input_tokens"] == 20
    assert gen["$ai_stop_reason"] == "tool_use"
    assert gen["$ai_tools"] == NORMALISED_TOOLS
    assert gen["$ai_model_parameters"] == {
        "max_tokens": 200,
        "stop_sequences": ["\n\nHuman:"],
        "tool_choice": {"type": "auto"},
        "service_tier": "auto",
        "effort": "low",
        "temperature": 0.3,
        "top_k": 5,
    }
    assert gen["$ai_http_status"] == 200
    assert gen["$ai_base_url"] == fake.url
    assert gen["$ai_stream"] is False
    assert "$ai_time_to_first_token" not in gen
    assert gen["$ai_parent_id"] == gen["$ai_trace_id"]
    assert fake.requests[-1].body["system"] == "Answer briefly."  # the SDK sent it unchanged


def test_a_system_prompt_of_text_blocks_is_the_leading_system_message(
    client: anthropic.Anthropic,
) -> None:
    system = [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}},
    ]
    with capture_events() as events, traced():
        client.messages.create(**ask("hi", system=system))
    gen = only_generation(events)
    assert gen["$ai_input"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Cite sources."},
        ],
    }
    assert gen["$ai_input"][1] == {"role": "user", "content": "hi"}


def test_tool_use_and_tool_result_history_render_as_posthog_shows_them(
    client: anthropic.Anthropic,
) -> None:
    history = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"q": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "-3C, snow"}],
                },
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    with capture_events() as events, traced():
        reply = client.messages.create(model=MODEL, max_tokens=100, messages=history, tools=TOOLS)
    assert reply.stop_reason == "end_turn"  # the fake saw the tool result
    gen = only_generation(events)
    assert gen["$ai_input"] == [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "checking"},
                {
                    "type": "function",
                    "id": "toolu_1",
                    "function": {"name": "weather", "arguments": '{"q": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3C, snow"},
        {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]},
    ]


def test_extended_thinking_is_output_and_counted(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        reply = client.messages.create(
            **ask("why?", thinking={"type": "enabled", "budget_tokens": 1024})
        )
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "thinking about why?"},
                {"type": "text", "text": "echo: why?"},
            ],
        }
    ]
    details = reply.usage.output_tokens_details
    assert details is not None
    assert gen["$ai_reasoning_tokens"] == details.thinking_tokens == 3
    assert gen["$ai_model_parameters"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        client.messages.create(**dict(ask("one two three four"), max_tokens=2))
    gen = only_generation(events)
    assert gen["$ai_stop_reason"] == "max_tokens"
    assert gen["$ai_output_choices"] == text_output("echo: one")


def test_async_message(aclient: anthropic.AsyncAnthropic) -> None:
    async def main() -> anthropic.types.Message:
        return await aclient.messages.create(**ask("async hi", extra_body=CACHE))

    with capture_events() as events, traced():
        reply = asyncio.run(main())
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == text_output("echo: async hi")
    assert gen["$ai_input_tokens"] == reply.usage.input_tokens + 150
    assert gen["$ai_http_status"] == 200 and gen["$ai_stream"] is False


def test_parse_is_recorded(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        client.messages.parse(**ask("parsed"))
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == text_output("echo: parsed")
    assert gen["$ai_stop_reason"] == "end_turn"


# --- stream=True --------------------------------------------------------------------------------


def stream_events(client: anthropic.Anthropic, **kwargs: Any) -> tuple[type, list[Any]]:
    stream = client.messages.create(**ask("tell me more", stream=True, **kwargs))
    return type(stream), [event.model_dump() for event in stream]


def strip_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    text = json.dumps(events)
    for event in events:
        if event["type"] == "message_start":
            text = text.replace(event["message"]["id"], "msg")
        if event["type"] == "content_block_start" and "id" in event["content_block"]:
            text = text.replace(event["content_block"]["id"], "toolu")
    stripped: list[dict[str, Any]] = json.loads(text)
    return stripped


@pytest.mark.parametrize("delta_usage", ["cumulative", "output"])
def test_a_stream_is_unchanged_event_for_event_and_recorded(
    client: anthropic.Anthropic, delta_usage: str
) -> None:
    extra = {"extra_body": {**CACHE, "fake_delta_usage": delta_usage}}
    with capture_events() as events, traced():
        kind, streamed = stream_events(client, **extra)
    plt.uninstrument("anthropic")
    bare_kind, bare = stream_events(client, **extra)
    assert kind is bare_kind is anthropic.Stream
    assert strip_ids(streamed) == strip_ids(bare)
    gen = only_generation(events)
    start = streamed[0]["message"]["usage"]
    [delta] = [e for e in streamed if e["type"] == "message_delta"]
    # Input from message_start (gross: cache included), output from the last message_delta.
    assert gen["$ai_input_tokens"] == start["input_tokens"] + 150
    assert gen["$ai_output_tokens"] == delta["usage"]["output_tokens"] != start["output_tokens"]
    assert gen["$ai_cache_read_input_tokens"] == 100
    assert gen["$ai_cache_creation_5m_input_tokens"] == 30
    assert gen["$ai_cache_creation_1h_input_tokens"] == 20
    assert gen["$ai_stream"] is True
    assert gen["$ai_output_choices"] == text_output("echo: tell me more")
    assert gen["$ai_stop_reason"] == "end_turn"
    assert gen["$ai_time_to_first_token"] <= gen["$ai_latency"]
    assert gen["$ai_http_status"] == 200


def test_time_to_first_token_is_the_first_delta_not_message_start(
    client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    def slow(request: Any) -> Any:
        answer = fake_anthropic.messages(request)
        answer.delay = 0.05  # type: ignore[union-attr]
        return answer

    fake.route("POST", "/v1/messages", slow)
    try:
        with capture_events() as events, traced():
            list(client.messages.create(**ask("a", stream=True)))
    finally:
        fake.route("POST", "/v1/messages", fake_anthropic.messages)
    gen = only_generation(events)
    # message_start, ping and content_block_start come first, one delay each: the first text
    # delta is the fourth event.
    assert gen["$ai_time_to_first_token"] >= 0.2


def test_streamed_tool_use_and_thinking_become_the_output(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        stream = client.messages.create(
            **ask(
                "Oslo",
                stream=True,
                tools=TOOLS,
                thinking={"type": "enabled", "budget_tokens": 2000},
            )
        )
        streamed = list(stream)
    [start] = [e for e in streamed if e.type == "content_block_start" and e.index == 2]
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "thinking about Oslo"},
                {"type": "text", "text": "checking"},
                {
                    "type": "function",
                    "id": start.content_block.id,  # type: ignore[union-attr]
                    "function": {"name": "weather", "arguments": '{"q": "Oslo"}'},
                },
            ],
        }
    ]
    assert gen["$ai_stop_reason"] == "tool_use"
    assert gen["$ai_reasoning_tokens"] == 3
    assert gen["$ai_tools"] == NORMALISED_TOOLS


def test_async_stream(aclient: anthropic.AsyncAnthropic) -> None:
    async def main() -> list[str]:
        stream = await aclient.messages.create(**ask("async stream", stream=True))
        return [
            e.delta.text
            async for e in stream
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        ]

    with capture_events() as events, traced():
        assert "".join(asyncio.run(main())) == "echo: async stream"
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == text_output("echo: async stream")
    assert gen["$ai_input_tokens"] > 0 and gen["$ai_output_tokens"] > 1
    assert gen["$ai_stream"] is True


def test_an_abandoned_stream_still_ends_its_generation(client: anthropic.Anthropic) -> None:
    def start() -> anthropic.Stream[Any]:
        return client.messages.create(**ask("one two three four", stream=True))

    with capture_events() as events, traced():
        with start() as stream:  # break at the first text, then leave the with block
            for event in stream:
                if event.type == "content_block_delta":
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
    assert gens[0]["$ai_output_choices"] == text_output("echo:")
    assert all(g["$ai_stream"] is True and "$ai_is_error" not in g for g in gens)
    # message_start was read: the input side of the usage is known
    assert all(g["$ai_input_tokens"] > 0 for g in gens[:3])


# --- the messages.stream() helper ----------------------------------------------------------------


def test_the_stream_helper_is_one_generation_and_unchanged(client: anthropic.Anthropic) -> None:
    def run() -> tuple[list[str], dict[str, Any], str]:
        with client.messages.stream(**ask("helper call", extra_body=CACHE)) as stream:
            texts = list(stream.text_stream)
            final = stream.get_final_message()
            return texts, final.model_dump(exclude={"id"}), stream.get_final_text()

    with capture_events() as events, traced():
        recorded = run()
    plt.uninstrument("anthropic")
    assert run() == recorded
    texts, final, _ = recorded
    assert "".join(texts) == "echo: helper call"
    gen = only_generation(events)  # posted by the helper itself, not through create: once
    assert gen["$ai_output_choices"] == text_output("echo: helper call")
    assert gen["$ai_input_tokens"] == final["usage"]["input_tokens"] + 150
    assert gen["$ai_output_tokens"] == final["usage"]["output_tokens"]
    assert gen["$ai_stop_reason"] == "end_turn"
    assert gen["$ai_stream"] is True and gen["$ai_time_to_first_token"] <= gen["$ai_latency"]


def test_the_async_stream_helper(aclient: anthropic.AsyncAnthropic) -> None:
    async def main() -> anthropic.types.Message:
        async with aclient.messages.stream(
            **ask("async helper", thinking={"type": "enabled", "budget_tokens": 1024})
        ) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_message()

    with capture_events() as events, traced():
        final = asyncio.run(main())
    gen = only_generation(events)
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "thinking about async helper"},
                {"type": "text", "text": "echo: async helper"},
            ],
        }
    ]
    assert gen["$ai_reasoning_tokens"] == 4 and gen["$ai_stream"] is True


def test_a_stream_helper_left_early_ends_its_generation(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        with client.messages.stream(**ask("one two three")) as stream:
            for event in stream:
                if event.type == "text":
                    break
        client.messages.stream(**ask("never entered"))  # no request made: nothing recorded
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == text_output("echo:")
    assert "$ai_is_error" not in gen


def test_beta_messages_are_recorded_too(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced():
        client.beta.messages.create(**ask("beta", tools=TOOLS))
        with client.beta.messages.stream(**ask("beta stream")) as stream:
            texts = list(stream.text_stream)
    assert "".join(texts) == "echo: beta stream"
    created, streamed = generations(events)
    assert created["$ai_stop_reason"] == "tool_use" and created["$ai_tools"] == NORMALISED_TOOLS
    assert created["$ai_output_choices"][0]["content"][1]["type"] == "function"
    assert streamed["$ai_output_choices"] == text_output("echo: beta stream")
    assert streamed["$ai_stream"] is True and streamed["$ai_output_tokens"] > 1


def test_async_beta_stream(aclient: anthropic.AsyncAnthropic) -> None:
    async def main() -> str:
        async with aclient.beta.messages.stream(**ask("async beta")) as stream:
            return "".join([text async for text in stream.text_stream])

    with capture_events() as events, traced():
        assert asyncio.run(main()) == "echo: async beta"
    assert only_generation(events)["$ai_output_choices"] == text_output("echo: async beta")


# --- raw responses ------------------------------------------------------------------------------


def test_with_raw_response_and_with_streaming_response_still_work(
    client: anthropic.Anthropic,
) -> None:
    with capture_events() as events, traced():
        raw = client.messages.with_raw_response.create(**ask("raw"))
        assert raw.status_code == 200
        assert raw.parse().content[0].text == "echo: raw"  # type: ignore[union-attr]
        raw_stream = client.messages.with_raw_response.create(**ask("raw", stream=True))
        texts = [
            e.delta.text
            for e in raw_stream.parse()
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        ]
        assert "".join(texts) == "echo: raw"
        with client.messages.with_streaming_response.create(**ask("raw")) as streaming:
            assert streaming.parse().content[0].text == "echo: raw"  # type: ignore[union-attr]
    raw_gen, raw_stream_gen, streaming_gen = generations(events)
    assert raw_gen["$ai_output_choices"] == text_output("echo: raw")
    assert raw_gen["$ai_input_tokens"] > 0
    assert raw_stream_gen["$ai_output_choices"] == text_output("echo: raw")
    # The application reads a streaming response's body itself: the call, not its output.
    assert streaming_gen["$ai_http_status"] == 200
    assert streaming_gen["$ai_input"] == [{"role": "user", "content": "raw"}]


def test_async_with_raw_response(aclient: anthropic.AsyncAnthropic) -> None:
    async def main() -> str:
        raw = await aclient.messages.with_raw_response.create(**ask("async raw"))
        assert raw.status_code == 200
        message = await raw.parse()
        return message.content[0].text  # type: ignore[union-attr]

    with capture_events() as events, traced():
        assert asyncio.run(main()) == "echo: async raw"
    gen = only_generation(events)
    assert gen["$ai_output_choices"] == text_output("echo: async raw")
    assert gen["$ai_http_status"] == 200 and gen["$ai_output_tokens"] > 0


# --- errors -------------------------------------------------------------------------------------


def test_an_api_error_marks_the_generation_and_reaches_the_app_unchanged(
    client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    fake.queue(
        "/v1/messages",
        fake_anthropic.error(429, "rate_limit_error", "slow down"),
        fake_anthropic.error(529, "overloaded_error", "Overloaded"),
    )
    seen: list[BaseException] = []
    with capture_events() as events, traced():
        for _ in range(2):
            with pytest.raises(anthropic.APIStatusError) as info:
                client.messages.create(**ask("x"))
            seen.append(info.value)
    assert type(seen[0]) is anthropic.RateLimitError
    assert type(seen[1]) is anthropic.OverloadedError
    limited, overloaded = generations(events)
    assert limited["$ai_http_status"] == 429 and limited["$ai_is_error"] is True
    assert "slow down" in limited["$ai_error"]
    assert overloaded["$ai_http_status"] == 529


def test_the_very_exception_object_reaches_the_app(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = anthropic.APIConnectionError(request=None)  # type: ignore[arg-type]

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr(client.messages, "_post", failing)  # under the patched create
    with capture_events() as events, traced(), pytest.raises(anthropic.APIConnectionError) as info:
        client.messages.create(**ask("x"))
    assert info.value is raised
    gen = only_generation(events)
    assert gen["$ai_is_error"] is True and gen["$ai_http_status"] == 0


def test_a_connection_error_has_status_zero() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="x", max_retries=0)
    with capture_events() as events, traced(), pytest.raises(anthropic.APIConnectionError):
        dead.messages.create(**ask("x"))
    with (
        capture_events() as helper_events,
        traced(),
        pytest.raises(anthropic.APIConnectionError),
        dead.messages.stream(**ask("x")),
    ):
        pass
    for gen in (only_generation(events), only_generation(helper_events)):
        assert gen["$ai_http_status"] == 0 and gen["$ai_is_error"] is True


def test_an_error_event_in_a_stream_fails_the_generation(
    client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    fake.queue("/v1/messages", fake_anthropic.stream_error(), fake_anthropic.stream_error())
    with capture_events() as events, traced():
        with pytest.raises(anthropic.APIStatusError):
            list(client.messages.create(**ask("x", stream=True)))
        with pytest.raises(anthropic.APIStatusError), client.messages.stream(**ask("x")) as s:
            s.until_done()
    gens = generations(events)
    assert len(gens) == 2
    for gen in gens:
        assert gen["$ai_is_error"] is True and "Overloaded" in gen["$ai_error"]
        assert gen["$ai_input_tokens"] == 3  # message_start came first


# --- nesting, no double counting ----------------------------------------------------------------


def test_a_call_lands_under_the_current_span(client: anthropic.Anthropic) -> None:
    with capture_events() as events, traced(), span("plan") as outer:
        client.messages.create(**ask("x"))
        with client.messages.stream(**ask("y")) as stream:
            stream.until_done()
    assert [g["$ai_parent_id"] for g in generations(events)] == [outer.id, outer.id]


def test_a_call_without_a_trace_opens_its_own(client: anthropic.Anthropic) -> None:
    with default_client(), capture_events() as events:
        client.messages.create(**ask("x"))
    gen = only_generation(events)
    [own] = events.named("$ai_trace")
    assert gen["$ai_trace_id"] == props(own)["$ai_trace_id"]


def test_inside_an_application_generation_the_call_fills_it(client: anthropic.Anthropic) -> None:
    with (
        capture_events() as events,
        traced(),
        generation("answer", properties={"feature": "chat"}) as gen,
    ):
        reply = client.messages.create(**ask("once", extra_body=CACHE))
        gen.set_output(reply)
        gen.set_usage(reply.usage)
    only = only_generation(events)
    assert only["$ai_span_name"] == "answer" and only["feature"] == "chat"
    assert only["$ai_model"] == MODEL and only["$ai_provider"] == "anthropic"
    assert only["$ai_output_choices"] == text_output("echo: once")
    assert only["$ai_input_tokens"] == reply.usage.input_tokens + 150  # counted once, gross
    assert only["$ai_stop_reason"] == "end_turn"
    assert only["$ai_model_parameters"] == {"max_tokens": 200}


def test_a_stream_inside_an_application_generation_fills_it(client: anthropic.Anthropic) -> None:
    with (
        capture_events() as events,
        traced(),
        generation("answer") as gen,
        client.messages.stream(**ask("streamed once")) as stream,
    ):
        for text in stream.text_stream:
            gen.chunk(text)  # a manual loop written before instrumentation: not counted twice
    only = only_generation(events)
    assert only["$ai_span_name"] == "answer"
    assert only["$ai_output_choices"] == text_output("echo: streamed once")
    assert only["$ai_stream"] is True and only["$ai_output_tokens"] > 1


def test_an_error_inside_an_application_generation_marks_it(
    client: anthropic.Anthropic, fake: FakeProvider
) -> None:
    fake.queue("/v1/messages", fake_anthropic.error(400, "invalid_request_error", "nope"))
    with (
        capture_events() as events,
        traced(),
        generation("answer"),
        contextlib.suppress(anthropic.BadRequestError),
    ):
        client.messages.create(**ask("x"))
    only = only_generation(events)
    assert only["$ai_is_error"] is True and only["$ai_http_status"] == 400


# --- privacy, settings, undo -------------------------------------------------------------------


def test_privacy_mode_and_mask_apply(client: anthropic.Anthropic) -> None:
    secret = ask("secret 4111", system="secret system")
    with capture_events() as events:
        with traced(privacy_mode=True):
            client.messages.create(**secret)
        with traced(mask=lambda value: "[masked]"), client.messages.stream(**secret) as stream:
            stream.until_done()
    private, masked = generations(events)
    assert "secret" not in json.dumps(private) and "$ai_input_tokens" in private
    assert "secret" not in json.dumps(masked)


def test_a_call_while_export_is_disabled_only_checks_a_flag(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posthog_llm_trace.providers import anthropic as provider

    opened: list[str] = []
    real = provider.begin_call

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(provider, "begin_call", counting)
    with default_client(export="off"):
        assert client.messages.create(**ask("x")).content[0].text == "echo: x"  # type: ignore[union-attr]
        with client.messages.stream(**ask("x")) as stream:
            stream.until_done()
    assert opened == []
    with capture_events(), traced():
        client.messages.create(**ask("x"))
    assert opened == ["messages"]


def test_uninstrument_restores_the_sdk_methods(client: anthropic.Anthropic) -> None:
    patched = messages_resource.Messages.create
    plt.uninstrument("anthropic")
    original = messages_resource.Messages.create
    assert original is not patched
    assert original.__module__ == "anthropic.resources.messages.messages"
    assert messages_resource.Messages.stream.__module__ == "anthropic.resources.messages.messages"
    with capture_events() as events, traced():
        client.messages.create(**ask("x"))
        with client.messages.stream(**ask("x")) as stream:
            stream.until_done()
    assert not events.named("$ai_generation")
    plt.instrument("anthropic")
    assert messages_resource.Messages.create is not original


def test_the_instrument_setting_turns_it_on_and_off(client: anthropic.Anthropic) -> None:
    plt.uninstrument()
    with default_client(instrument=["openai"]):
        assert "anthropic" not in plt.instrumented()
        with capture_events() as events, traced():
            client.messages.create(**ask("x"))
        assert not events.named("$ai_generation")
    with default_client():  # the default: every importable SDK
        assert "anthropic" in plt.instrumented()
        with capture_events() as events, traced():
            client.messages.create(**ask("x"))
        assert len(events.named("$ai_generation")) == 1


# --- other clients ------------------------------------------------------------------------------


def test_a_posthog_wrapper_client_is_covered(fake: FakeProvider) -> None:
    from posthog import Posthog
    from posthog.ai.anthropic import Anthropic as PostHogAnthropic

    ph = Posthog("phc_test", host="http://127.0.0.1:9", send=False, sync_mode=True)
    wrapped = PostHogAnthropic(base_url=fake.url, api_key="x", posthog_client=ph, max_retries=0)
    with capture_events() as events, traced():
        wrapped.messages.create(**ask("hi"))
        with wrapped.messages.stream(**ask("hi stream")) as stream:
            texts = list(stream.text_stream)
    ph.shutdown()
    assert "".join(texts) == "echo: hi stream"
    created, streamed = generations(events)
    assert created["$ai_output_choices"] == text_output("echo: hi")
    assert streamed["$ai_output_choices"] == text_output("echo: hi stream")
    assert streamed["$ai_output_tokens"] > 1


def test_an_async_posthog_wrapper_client_is_covered(fake: FakeProvider) -> None:
    from posthog import Posthog
    from posthog.ai.anthropic import AsyncAnthropic as PostHogAsyncAnthropic

    ph = Posthog("phc_test", host="http://127.0.0.1:9", send=False, sync_mode=True)
    wrapped = PostHogAsyncAnthropic(
        base_url=fake.url, api_key="x", posthog_client=ph, max_retries=0
    )

    async def main() -> str:
        await wrapped.messages.create(**ask("hi"))
        events = await wrapped.messages.create(**ask("hi"), stream=True)
        async for _ in events:
            pass
        async with wrapped.messages.stream(**ask("hi stream")) as stream:
            return "".join([text async for text in stream.text_stream])

    with capture_events() as events, traced():
        assert asyncio.run(main()) == "echo: hi stream"
    ph.shutdown()
    created, streamed, helper = generations(events)
    assert (
        created["$ai_output_choices"] == streamed["$ai_output_choices"] == text_output("echo: hi")
    )
    assert streamed["$ai_stream"] is True and streamed["$ai_output_tokens"] > 1
    assert helper["$ai_output_choices"] == text_output("echo: hi stream")


# --- the manual API reads the same objects --------------------------------------------------------


def test_set_output_and_set_usage_of_sdk_objects() -> None:
    plt.uninstrument("anthropic")
    with FakeProvider() as fake:
        bare = anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)
        reply = bare.messages.create(
            **ask(
                "manual",
                thinking={"type": "enabled", "budget_tokens": 1024},
                extra_body=CACHE,
            )
        )
        tool_reply = bare.messages.create(**ask("manual tool", tools=TOOLS))
    with capture_events() as events, traced():
        with generation("out", model=MODEL, provider="anthropic") as gen:
            gen.set_output(reply)
        with generation("usage", model=MODEL, provider="anthropic") as gen:
            gen.set_usage(reply.usage)
        with generation("tool", model=MODEL, provider="anthropic") as gen:
            gen.set_output(tool_reply)
    out, usage, tool = generations(events)
    assert out["$ai_stop_reason"] == "end_turn"
    assert out["$ai_output_choices"][0]["content"][0] == {
        "type": "thinking",
        "thinking": "thinking about manual",
    }
    for counted in (out, usage):
        assert counted["$ai_input_tokens"] == reply.usage.input_tokens + 150
        assert counted["$ai_reasoning_tokens"] == 3
        assert counted["$ai_cache_creation_5m_input_tokens"] == 30
        assert counted["$ai_cache_creation_1h_input_tokens"] == 20
        assert counted["$ai_cache_reporting_exclusive"] is False
    assert "$ai_stop_reason" not in usage
    assert tool["$ai_stop_reason"] == "tool_use"
    assert tool["$ai_output_choices"][0]["content"][1]["type"] == "function"
