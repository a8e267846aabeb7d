"""The mapping from spans to PostHog events, property by property (research/posthog.md §1)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from core_support import make_client, props
from freezegun import freeze_time

from posthog_llm_trace import embedding, generation, span, tool, trace
from posthog_llm_trace.events import LIB_VERSION
from posthog_llm_trace.testing import capture_events

LIB = {
    "$ai_lib": "posthog-llm-trace",
    "$ai_lib_version": LIB_VERSION,
    "$lib": "posthog-llm-trace",
    "$lib_version": LIB_VERSION,
}


def test_a_generation_becomes_exactly_this_event():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with (
        capture_events() as events,
        freeze_time("2025-03-01 12:00:00") as clock,
        trace(
            "POST /chat/",
            client=make_client(),
            distinct_id="user-1",
            session_id="conv-9",
            groups={"company": "acme"},
            properties={"plan": "pro"},
        ) as t,
    ):
        clock.tick(0.5)
        with generation(
            "answer",
            model="gpt-4o-mini",
            provider="OpenAI",
            input=[{"role": "user", "content": "Weather in Paris?"}],
            model_parameters={"temperature": 0.2, "max_tokens": 100},
            tools=tools,
            base_url="https://api.openai.com/v1",
        ) as gen:
            clock.tick(1.25)
            gen.set_output("Sunny.", stop_reason="stop")
            gen.set_usage(
                input_tokens=120,
                output_tokens=40,
                cache_read_input_tokens=20,
                cache_creation_input_tokens=0,
                reasoning_tokens=8,
            )
            gen.set_http_status(200)
        clock.tick(0.25)

    generation_event, trace_event = events
    assert generation_event == {
        "event": "$ai_generation",
        "distinct_id": "user-1",
        "timestamp": "2025-03-01T12:00:01.750Z",  # the span's end
        "uuid": gen.id,
        "properties": {
            "plan": "pro",
            "$ai_trace_id": t.id,
            "$ai_session_id": "conv-9",
            "$groups": {"company": "acme"},
            **LIB,
            "$ai_span_id": gen.id,
            "$ai_span_name": "answer",
            "$ai_parent_id": t.id,
            "$ai_latency": 1.25,
            "$ai_model": "gpt-4o-mini",
            "$ai_provider": "openai",
            "$ai_input": [{"role": "user", "content": "Weather in Paris?"}],
            "$ai_output_choices": [{"role": "assistant", "content": "Sunny."}],
            "$ai_input_tokens": 120,
            "$ai_output_tokens": 40,
            "$ai_cache_read_input_tokens": 20,
            "$ai_cache_creation_input_tokens": 0,
            "$ai_reasoning_tokens": 8,
            "$ai_cache_reporting_exclusive": False,
            "$ai_model_parameters": {"temperature": 0.2, "max_tokens": 100},
            "$ai_tools": tools,
            "$ai_stop_reason": "stop",
            "$ai_http_status": 200,
            "$ai_base_url": "https://api.openai.com/v1",
        },
    }
    assert trace_event == {
        "event": "$ai_trace",
        "distinct_id": "user-1",
        "timestamp": "2025-03-01T12:00:02.000Z",
        "uuid": t.id,
        "properties": {
            "plan": "pro",
            "$ai_trace_id": t.id,
            "$ai_session_id": "conv-9",
            "$groups": {"company": "acme"},
            **LIB,
            "$ai_span_name": "POST /chat/",
            "$ai_trace_name": "POST /chat/",
            "$ai_latency": 2.0,
        },
    }


def test_spans_and_embeddings_carry_their_own_properties():
    with (
        capture_events() as events,
        freeze_time("2025-03-01 12:00:00") as clock,
        trace("t", client=make_client(), distinct_id="u") as t,
    ):
        with tool("get_weather", input={"city": "Paris"}) as w:
            clock.tick(0.75)
            w.set_output({"temp": 21})
        with embedding(
            "embed", model="text-embedding-3-small", provider="openai", input=["a", "b"]
        ) as e:
            clock.tick(0.5)
            e.set_usage(input_tokens=42)

    tool_event, embedding_event, _ = events
    assert tool_event["timestamp"] == "2025-03-01T12:00:00.750Z"
    assert props(tool_event) == {
        "$ai_trace_id": t.id,
        **LIB,
        "$ai_span_id": w.id,
        "$ai_span_name": "get_weather",
        "$ai_parent_id": t.id,
        "$ai_latency": 0.75,
        "$ai_span_type": "tool",
        "$ai_input_state": {"city": "Paris"},
        "$ai_output_state": {"temp": 21},
    }
    assert embedding_event["event"] == "$ai_embedding"
    assert embedding_event["timestamp"] == "2025-03-01T12:00:01.250Z"
    assert props(embedding_event) == {
        "$ai_trace_id": t.id,
        **LIB,
        "$ai_span_id": e.id,
        "$ai_span_name": "embed",
        "$ai_parent_id": t.id,
        "$ai_latency": 0.5,
        "$ai_model": "text-embedding-3-small",
        "$ai_provider": "openai",
        "$ai_input": ["a", "b"],
        "$ai_input_tokens": 42,
    }


def test_every_event_has_a_stable_uuid_of_its_own(monkeypatch: pytest.MonkeyPatch):
    from posthog_llm_trace.client import Client

    records: list[Any] = []
    render = Client.render
    monkeypatch.setattr(Client, "render", lambda self, r: records.append(r) or render(self, r))
    client = make_client(chunk_spans=True)
    with capture_events() as events, trace("t", client=client):
        with generation("g", model="m", provider="p") as g:
            g.chunk("a")
            g.chunk("{}", kind="tool_call", tool_call_id="c1", tool_name="f")
        with tool("x"):
            pass
    uuids = [e["uuid"] for e in events]
    assert len(events) == 5 and len(set(uuids)) == 5
    for value in uuids:
        assert str(uuid.UUID(value)) == value  # a canonical UUID string
    # Rendering the same record again (a retry, a replay) gives the same uuids.
    [record] = records
    assert [e["uuid"] for e in render(client, record)] == uuids


def test_the_default_distinct_id_is_personless_and_a_real_one_is_not():
    with capture_events() as anonymous, trace("t", client=make_client()), tool("x"):
        pass
    assert {e["distinct_id"] for e in anonymous} == {"anonymous"}
    assert all(props(e)["$process_person_profile"] is False for e in anonymous)

    custom = make_client(default_distinct_id="guest")
    with capture_events() as guests, trace("t", client=custom), tool("x"):
        pass
    assert {e["distinct_id"] for e in guests} == {"guest"}
    assert all(props(e)["$process_person_profile"] is False for e in guests)

    with (
        capture_events() as known,
        trace("t", client=make_client(), distinct_id="u-1"),
        tool("x"),
    ):
        pass
    assert all("$process_person_profile" not in props(e) for e in known)


def test_session_and_groups_appear_only_when_set():
    with capture_events() as events, trace("t", client=make_client()), tool("x"):
        pass
    for event in events:
        assert "$ai_session_id" not in props(event)
        assert "$groups" not in props(event)


def test_custom_properties_never_overwrite_computed_keys():
    hostile = {
        "$ai_trace_id": "spoofed",
        "$ai_model": "spoofed",
        "$ai_latency": -1,
        "$ai_span_id": "spoofed",
        "$ai_parent_id": "spoofed",
        "$groups": "spoofed",
        "$process_person_profile": True,
        "team": "search",
    }
    with (
        capture_events() as events,
        trace("t", client=make_client(), properties=hostile, groups={"company": "a"}) as t,
        generation("g", model="gpt-4o", provider="openai", properties=hostile) as g,
    ):
        g.set_property("$ai_input_tokens", 999)  # not computed (no usage): kept
        g.set_usage(output_tokens=5)
        g.set_property("$ai_output_tokens", 999)  # computed: ignored
    gen, trace_event = (props(e) for e in events)
    for p in (gen, trace_event):
        assert p["$ai_trace_id"] == t.id
        assert p["$groups"] == {"company": "a"}
        assert p["$process_person_profile"] is False
        assert p["team"] == "search"
        assert p["$ai_latency"] >= 0
    assert gen["$ai_model"] == "gpt-4o"
    assert gen["$ai_span_id"] == g.id and gen["$ai_parent_id"] == t.id
    assert gen["$ai_output_tokens"] == 5


def test_a_spans_own_properties_win_over_the_traces():
    with capture_events() as events, trace("t", client=make_client(), properties={"plan": "pro"}):
        with tool("x", properties={"plan": "free"}):
            pass
        with tool("y"):
            pass
    assert props(events.by_span_name("x"))["plan"] == "free"
    assert props(events.by_span_name("y"))["plan"] == "pro"


def test_input_tokens_are_gross_and_the_cache_flag_is_explicit_only_with_cache_counts():
    with capture_events() as events, trace("t", client=make_client()):
        with generation("cached", model="claude-sonnet-4", provider="anthropic") as g:
            g.set_usage(input_tokens=1000, output_tokens=10, cache_read_input_tokens=800)
        with generation("plain", model="gpt-4o", provider="openai") as g:
            g.set_usage(input_tokens=50, output_tokens=10)
    cached, plain = (props(events.by_span_name(n)) for n in ("cached", "plain"))
    assert cached["$ai_input_tokens"] == 1000
    assert cached["$ai_cache_read_input_tokens"] == 800
    assert cached["$ai_cache_reporting_exclusive"] is False
    assert "$ai_cache_reporting_exclusive" not in plain


def test_unknown_counts_are_omitted_not_sent_as_zero():
    with capture_events() as events, trace("t", client=make_client()):
        with generation("no-usage", model="m", provider="p"):
            pass
        with generation("partial", model="m", provider="p") as g:
            g.set_usage(output_tokens=0)
    none, partial = (props(events.by_span_name(n)) for n in ("no-usage", "partial"))
    token_keys = {k for k in none if "tokens" in k or "cost" in k}
    assert token_keys == set()
    assert partial["$ai_output_tokens"] == 0  # zero is a known count
    assert "$ai_input_tokens" not in partial


def test_costs_appear_only_when_the_application_supplies_them():
    with capture_events() as events, trace("t", client=make_client()):
        with generation("priced", model="m", provider="p") as g:
            g.set_cost(input_usd=0.0001, output_usd=0.0002)
        with generation("total-only", model="m", provider="p") as g:
            g.set_cost(total_usd=0.5)
        with generation("unpriced", model="m", provider="p"):
            pass
    priced = props(events.by_span_name("priced"))
    assert priced["$ai_input_cost_usd"] == 0.0001
    assert priced["$ai_output_cost_usd"] == 0.0002
    assert priced["$ai_total_cost_usd"] == pytest.approx(0.0003)
    total = props(events.by_span_name("total-only"))
    assert total["$ai_total_cost_usd"] == 0.5 and total["$ai_cost_passthrough"] is True
    assert not any("cost" in k for k in props(events.by_span_name("unpriced")))


def python_weather(city: str, days: int = 1) -> dict[str, Any]:
    """Forecast for a city."""
    return {}


def test_tools_are_sent_in_openai_function_shape_whatever_their_source():
    openai_tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object"},
        },
    }
    anthropic_tool = {
        "name": "get_time",
        "description": "Time",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
    }
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation(
            "g", model="m", provider="p", tools=[openai_tool, anthropic_tool, python_weather]
        ),
    ):
        pass
    assert props(events[0])["$ai_tools"] == [
        openai_tool,
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "python_weather",
                "description": "Forecast for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        },
    ]


def test_no_tools_means_no_tools_property():
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p", tools=[]),
    ):
        pass
    assert "$ai_tools" not in props(events[0])


def test_a_stream_reports_time_to_first_token_and_the_accumulated_output():
    with (
        capture_events() as events,
        freeze_time("2025-03-01 12:00:00") as clock,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p", stream=True) as g,
    ):
        clock.tick(0.25)
        g.chunk("Hel")
        clock.tick(0.5)
        g.chunk("lo")
        g.chunk("!")
        clock.tick(0.25)
    gen = props(events[0])
    assert gen["$ai_stream"] is True
    assert gen["$ai_time_to_first_token"] == 0.25
    assert gen["$ai_latency"] == 1.0
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "Hello!"}]


def test_stream_properties_are_absent_for_an_ordinary_call_and_false_when_said_so():
    with capture_events() as events, trace("t", client=make_client()):
        with generation("plain", model="m", provider="p"):
            pass
        with generation("said-no", model="m", provider="p", stream=False):
            pass
    plain, said_no = (props(events.by_span_name(n)) for n in ("plain", "said-no"))
    assert "$ai_stream" not in plain and "$ai_time_to_first_token" not in plain
    assert said_no["$ai_stream"] is False


def test_chunk_spans_summarise_a_stream_by_segment_never_by_token():
    client = make_client(chunk_spans=True)
    with (
        capture_events() as events,
        freeze_time("2025-03-01 12:00:00") as clock,
        trace("t", client=client),
        generation("g", model="m", provider="p") as g,
    ):
        for token in ("Let", " me", " think"):
            clock.tick(0.1)
            g.chunk(token, kind="reasoning")
        for token in ("I'll", " check"):
            clock.tick(0.1)
            g.chunk(token)
        for piece in ('{"ci', 'ty": "Paris"}'):
            g.chunk(piece, kind="tool_call", tool_call_id="call_1", tool_name="weather")
        g.chunk('{"tz": 1}', kind="tool_call", tool_call_id="call_2", tool_name="time")
        clock.tick(0.1)

    gen = props(events.named("$ai_generation")[0])
    chunks = [props(e) for e in events.named("$ai_span")]
    assert [c["chunk_type"] for c in chunks] == ["reasoning", "text", "tool_call", "tool_call"]
    assert [c["chunk_sequence_number"] for c in chunks] == [0, 1, 2, 3]
    assert {c["$ai_span_type"] for c in chunks} == {"chunk"}
    assert {c["$ai_parent_id"] for c in chunks} == {g.id}
    assert chunks[0]["$ai_output_state"] == {"text": "Let me think"}
    assert chunks[0]["$ai_latency"] == pytest.approx(0.2)
    assert chunks[1]["$ai_output_state"] == {"text": "I'll check"}
    assert chunks[2]["$ai_output_state"] == {
        "tool_call_id": "call_1",
        "tool_name": "weather",
        "arguments": '{"city": "Paris"}',
    }
    assert gen["$ai_output_choices"] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll check"},
                {
                    "type": "function",
                    "id": "call_1",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "type": "function",
                    "id": "call_2",
                    "function": {"name": "time", "arguments": '{"tz": 1}'},
                },
            ],
        }
    ]
    assert gen["$ai_time_to_first_token"] == pytest.approx(0.1)


def test_without_the_chunk_spans_setting_a_stream_is_one_event():
    with (
        capture_events() as events,
        trace("t", client=make_client()),
        generation("g", model="m", provider="p") as g,
    ):
        for token in "many tokens here":
            g.chunk(token)
    assert [e["event"] for e in events] == ["$ai_generation", "$ai_trace"]


def test_a_trace_that_records_no_span_exports_nothing():
    with capture_events() as events, trace("GET /health/", client=make_client()) as t:
        t.set_input("ping")
        t.set_output("pong")
    assert events == []


def test_the_trace_event_is_sent_only_with_a_child_and_carries_its_error():
    with (
        capture_events() as events,
        pytest.raises(RuntimeError),
        trace("t", client=make_client()),
    ):
        with span("s"):
            pass
        raise RuntimeError("view failed")
    trace_event = props(events.named("$ai_trace")[0])
    assert trace_event["$ai_is_error"] is True
    assert trace_event["$ai_error"] == "RuntimeError: view failed"


def test_a_long_trace_hands_its_spans_over_in_parts_with_one_trace_event():
    from posthog_llm_trace.spans import SPANS_PER_HANDOVER

    with capture_events() as events, trace("worker-loop", client=make_client()) as t:
        for _ in range(SPANS_PER_HANDOVER + 10):
            with tool("step"):
                pass
        assert len(events) == SPANS_PER_HANDOVER  # handed over before the trace ended
    assert len(events.named("$ai_span")) == SPANS_PER_HANDOVER + 10
    assert len(events.named("$ai_trace")) == 1
    assert events.trace_ids() == {t.id}


def test_a_forked_worker_never_repeats_its_parents_ids():
    import os

    with trace("t", client=make_client()) as before:
        pass
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a preloaded server's worker
        try:
            with trace("t", client=make_client()) as child:
                os.write(write, child.id.encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    with trace("t", client=make_client()) as after:
        pass
    assert len({before.id, child_id, after.id}) == 3
    assert child_id[:24] != after.id[:24]  # the child drew a prefix of its own
    assert uuid.UUID(child_id).version == 4
