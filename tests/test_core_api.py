"""The application API of DESIGN.md, used the way an application uses it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from core_support import make_client, props

import posthog_llm_trace as plt
from posthog_llm_trace import (
    current_span,
    current_trace,
    embedding,
    generation,
    span,
    stats,
    tool,
    trace,
)
from posthog_llm_trace.testing import capture_events


def test_a_script_records_a_trace_with_every_kind_of_span():
    client = make_client()
    with (
        capture_events() as events,
        trace("nightly-summary", client=client, distinct_id="user-1") as t,
    ):
        t.set_input({"docs": 3})
        with span("retrieve", kind="retrieval", input="invoices") as s:
            s.set_output(["doc-1", "doc-2"])
        with embedding(
            "embed", model="text-embedding-3-small", provider="openai", input=["a", "b"]
        ) as e:
            e.set_usage(input_tokens=42)
        with generation("answer", model="gpt-4o-mini", provider="openai", input="hi") as g:
            g.set_output("hello")
            g.set_usage(input_tokens=12, output_tokens=3)
        with tool("get_weather", input={"city": "Paris"}) as w:
            w.set_output({"temp": 21})
        t.set_output("done")

    assert [e["event"] for e in events] == [
        "$ai_span",
        "$ai_embedding",
        "$ai_generation",
        "$ai_span",
        "$ai_trace",
    ]
    assert events.trace_ids() == {t.id}
    assert {e["distinct_id"] for e in events} == {"user-1"}
    assert props(events.by_span_name("retrieve"))["$ai_span_type"] == "retrieval"
    assert props(events.by_span_name("get_weather"))["$ai_span_type"] == "tool"
    assert props(events.by_span_name("get_weather"))["$ai_output_state"] == {"temp": 21}
    assert props(events.named("$ai_trace")[0])["$ai_input_state"] == {"docs": 3}
    assert props(events.named("$ai_trace")[0])["$ai_output_state"] == "done"


def test_async_with_works_like_with():
    client = make_client()

    async def main() -> str:
        async with trace("async-job", client=client) as t:
            async with generation("answer", model="m", provider="p", input="q") as g:
                await asyncio.sleep(0)
                g.set_output("a")
            async with tool("lookup") as s:
                s.set_output(1)
            async with span("step", kind="step"):
                pass
            async with embedding("embed", model="e", provider="p", input="x"):
                pass
        return t.id

    with capture_events() as events:
        trace_id = asyncio.run(main())

    assert [e["event"] for e in events] == [
        "$ai_generation",
        "$ai_span",
        "$ai_span",
        "$ai_embedding",
        "$ai_trace",
    ]
    assert events.trace_ids() == {trace_id}


class WeatherService:
    @tool()
    def forecast(self, city: str, days: int = 1) -> dict[str, Any]:
        return {"city": city, "days": days, "sky": "clear"}

    @tool
    async def alerts(self, city: str) -> list[str]:
        await asyncio.sleep(0)
        return [f"wind in {city}"]


def test_decorated_functions_record_arguments_without_self_and_the_return_value():
    service = WeatherService()
    with capture_events() as events, trace("t", client=make_client()):
        assert service.forecast("Paris", days=2) == {"city": "Paris", "days": 2, "sky": "clear"}
        assert asyncio.run(service.alerts("Lyon")) == ["wind in Lyon"]

    forecast = props(events.by_span_name("forecast"))
    assert forecast["$ai_span_type"] == "tool"
    assert forecast["$ai_input_state"] == {"city": "Paris", "days": 2}
    assert forecast["$ai_output_state"] == {"city": "Paris", "days": 2, "sky": "clear"}
    alerts = props(events.by_span_name("alerts"))
    assert alerts["$ai_input_state"] == {"city": "Lyon"}
    assert alerts["$ai_output_state"] == ["wind in Lyon"]


def test_every_kind_decorates_sync_and_async_functions():
    @generation(model="gpt-4o-mini", provider="openai")
    def answer(messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": "hi",
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }

    @embedding
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[0.1, 0.2] for _ in texts]

    @span(kind="agent")
    def plan(goal: str) -> str:
        return f"plan for {goal}"

    @span
    async def step(n: int) -> int:
        return n + 1

    with capture_events() as events, trace("t", client=make_client()):
        answer([{"role": "user", "content": "hello"}])
        asyncio.run(embed(["a"]))
        plan("ship")
        asyncio.run(step(1))

    gen = props(events.by_span_name("answer"))
    assert gen["$ai_input"] == [{"role": "user", "content": "hello"}]
    assert gen["$ai_output_choices"] == [{"role": "assistant", "content": "hi"}]
    assert gen["$ai_input_tokens"] == 5 and gen["$ai_output_tokens"] == 1
    assert events.by_span_name("embed")["event"] == "$ai_embedding"
    assert props(events.by_span_name("plan"))["$ai_span_type"] == "agent"
    assert props(events.by_span_name("plan"))["$ai_output_state"] == "plan for ship"
    assert props(events.by_span_name("step"))["$ai_output_state"] == 2


def test_a_decorated_generator_is_current_only_while_its_own_code_runs():
    @span(kind="step")
    def numbers() -> Any:
        for n in range(2):
            with tool("inner"):
                pass
            yield n

    with capture_events() as events, trace("t", client=make_client()) as t:
        iterator = numbers()
        assert next(iterator) == 0
        assert current_span() is None and current_trace() is t  # not leaked into the caller
        assert list(iterator) == [1]

    step = events.by_span_name("numbers")
    inner = [e for e in events if props(e)["$ai_span_name"] == "inner"]
    assert len(inner) == 2
    assert {props(e)["$ai_parent_id"] for e in inner} == {props(step)["$ai_span_id"]}


def test_current_trace_is_readable_and_writable():
    with (
        capture_events() as events,
        trace("chat", client=make_client(), properties={"plan": "free"}),
    ):
        t = current_trace()
        assert t is not None
        assert t.distinct_id is None and t.session_id is None
        t.distinct_id = "user-7"
        t.session_id = "conv-3"
        t.properties["plan"] = "pro"
        t.groups = {"company": "acme"}
        assert (t.distinct_id, t.session_id) == ("user-7", "conv-3")
        with tool("x"):
            assert current_trace() is t
    for event in events:
        assert event["distinct_id"] == "user-7"
        assert props(event)["$ai_session_id"] == "conv-3"
        assert props(event)["plan"] == "pro"
        assert props(event)["$groups"] == {"company": "acme"}
    assert current_trace() is None


def test_identity_set_by_the_application_wins_over_an_adapters_binding():
    with capture_events() as events, trace("t", client=make_client()) as t:
        t.distinct_id = "chosen-by-app"
        t.bind(distinct_id="from-the-session", session_id="s-1")
        with tool("x"):
            pass
    assert {e["distinct_id"] for e in events} == {"chosen-by-app"}
    assert {props(e)["$ai_session_id"] for e in events} == {"s-1"}


class QuotaError(Exception):
    status_code = 429


def test_an_exception_leaving_a_block_marks_the_span_and_propagates_unchanged():
    error = QuotaError("slow down")
    with (
        capture_events() as events,
        pytest.raises(QuotaError) as raised,
        trace("t", client=make_client()),
        generation("answer", model="m", provider="openai", input="q"),
    ):
        raise error
    assert raised.value is error
    gen = props(events.named("$ai_generation")[0])
    assert gen["$ai_is_error"] is True
    assert gen["$ai_error"] == "QuotaError: slow down"
    assert gen["$ai_error_type"] == "QuotaError"
    assert gen["$ai_http_status"] == 429
    trace_event = props(events.named("$ai_trace")[0])
    assert trace_event["$ai_is_error"] is True


def test_an_exception_leaving_a_decorated_function_propagates_unchanged():
    error = KeyError("city")

    @tool()
    def broken(city: str) -> None:
        raise error

    async def main() -> None:
        @tool()
        async def broken_async() -> None:
            raise error

        await broken_async()

    with capture_events() as events, trace("t", client=make_client()):
        with pytest.raises(KeyError) as raised:
            broken("Paris")
        assert raised.value is error
        with pytest.raises(KeyError) as raised_async:
            asyncio.run(main())
        assert raised_async.value is error

    failed = [props(e) for e in events if e["event"] == "$ai_span"]
    assert [p["$ai_span_name"] for p in failed] == ["broken", "broken_async"]
    assert all(p["$ai_is_error"] is True and p["$ai_error"] == "KeyError: 'city'" for p in failed)
    assert "$ai_output_state" not in failed[0]


def test_spans_without_errors_carry_no_error_keys():
    with capture_events() as events, trace("t", client=make_client()), tool("fine"):
        pass
    for event in events:
        assert "$ai_is_error" not in props(event) and "$ai_error" not in props(event)


def test_start_and_end_work_without_a_with_block():
    with capture_events() as events, trace("t", client=make_client()):
        gen = generation("manual", model="m", provider="p").start()
        gen.set_output("ok")
        gen.end()
        gen.end()  # idempotent
    assert len(events.named("$ai_generation")) == 1


def test_any_short_kind_is_sent_as_the_span_type_and_a_bad_one_falls_back():
    # posthog-python's agent integrations send handoff, guardrail, custom, mcp_tools.
    with capture_events() as events, trace("t", client=make_client()):
        for kind in ("handoff", "guardrail", "mcp_tools", "x" * 500, 42, ["list"], "  ", "a\nb"):
            with span("s", kind=kind):  # type: ignore[arg-type]
                pass
    types = [e["properties"]["$ai_span_type"] for e in events.named("$ai_span")]
    assert types == ["handoff", "guardrail", "mcp_tools", "span", "span", "span", "span", "span"]


def test_stats_counts_what_the_process_delivered():
    client = make_client(export="memory")
    before = stats()["sent"]
    with trace("t", client=client):
        with tool("a"):
            pass
        with tool("b"):
            pass
    assert client.stats.snapshot()["sent"] == 3  # two spans and the trace
    after = stats()
    assert after["sent"] - before >= 3
    assert {"queued", "sent", "retried", "dropped"} <= set(after)
    assert all(isinstance(v, int) for v in after.values())


def test_configure_makes_the_default_client_and_flush_returns(monkeypatch):
    from posthog_llm_trace import client as client_module

    # The process's default client (pytest-django may have configured it) is set aside, not
    # replaced: configure() would shut the one it replaces down.
    monkeypatch.setattr(client_module, "_default", None)
    monkeypatch.setattr(client_module, "_explicit", False)
    configured = plt.configure(export="memory", default_distinct_id="nobody")
    try:
        assert plt.get_client() is configured
        # no trace open: an implicit trace, default client
        with (
            capture_events() as events,
            tool("lonely"),
        ):
            pass
        assert {e["distinct_id"] for e in events} == {"nobody"}
        assert plt.flush(1.0) is True
    finally:
        configured.shutdown(1.0)


def test_the_public_names_of_the_design_are_importable():
    for name in (
        "configure",
        "trace",
        "generation",
        "embedding",
        "tool",
        "span",
        "current_trace",
        "flush",
        "shutdown",
        "stats",
        "run_in_context",
        "ConfigurationError",
        "Client",
    ):
        assert hasattr(plt, name), name
        assert getattr(plt, name).__doc__, name


def test_no_api_key_warns_once_and_the_api_keeps_working(monkeypatch, caplog):
    from posthog_llm_trace import client as client_module

    monkeypatch.setattr(client_module, "_warned_no_key", False)
    with caplog.at_level(logging.WARNING, logger="posthog_llm_trace"):
        first = make_client(export="thread")
        second = make_client(export="thread")
        with trace("t", client=first), generation("g", model="m", provider="p") as g:
            g.set_output("still works")
        with capture_events() as events, trace("t", client=second), tool("x"):
            pass
    warnings = [r for r in caplog.records if "no PostHog API key" in r.getMessage()]
    assert len(warnings) == 1
    assert not first.enabled and first.exporter is None
    assert [e["event"] for e in events] == ["$ai_span", "$ai_trace"]  # recording still works


def test_a_decorated_streaming_generation_records_what_it_yields():
    @generation(model="gpt-4o-mini", provider="openai")
    async def stream_answer(question: str) -> Any:
        for token in ("It ", "is ", "sunny."):
            await asyncio.sleep(0)
            with tool("inner"):  # a child of the generation while its code runs
                pass
            yield token

    @generation(model="gpt-4o-mini", provider="openai")
    def stream_sync(question: str) -> Any:
        yield from ("Sun", "ny.")

    async def consume() -> list[str]:
        pieces = []
        async for piece in stream_answer("Weather?"):
            assert current_span() is None  # the caller never sees the generation as current
            pieces.append(piece)
        return pieces

    with capture_events() as events, trace("t", client=make_client()):
        assert asyncio.run(consume()) == ["It ", "is ", "sunny."]
        assert list(stream_sync("Weather?")) == ["Sun", "ny."]

    streamed = props(events.by_span_name("stream_answer"))
    assert streamed["$ai_input"] == [{"role": "user", "content": '{"question": "Weather?"}'}]
    assert streamed["$ai_output_choices"] == [{"role": "assistant", "content": "It is sunny."}]
    assert streamed["$ai_stream"] is True and streamed["$ai_time_to_first_token"] >= 0
    inner = [props(e) for e in events if props(e)["$ai_span_name"] == "inner"]
    assert {p["$ai_parent_id"] for p in inner} == {streamed["$ai_span_id"]}
    sync = props(events.by_span_name("stream_sync"))
    assert sync["$ai_output_choices"] == [{"role": "assistant", "content": "Sunny."}]


def test_an_exception_inside_a_decorated_async_generator_marks_the_span():
    error = ConnectionError("stream cut")

    @span(kind="step")
    async def pieces() -> Any:
        yield 1
        raise error

    async def consume() -> None:
        async for _ in pieces():
            pass

    with (
        capture_events() as events,
        trace("t", client=make_client()),
        pytest.raises(ConnectionError) as raised,
    ):
        asyncio.run(consume())
    assert raised.value is error
    assert props(events.by_span_name("pieces"))["$ai_error"] == "ConnectionError: stream cut"
