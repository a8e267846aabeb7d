"""posthog-python's own AI wrappers, LangChain handler and AI captures, inside and outside our
traces: the real ``posthog.ai`` wrappers against the fake provider, a real ``posthog.Posthog``
client delivering to the loopback capture server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import openai
import posthog
import pytest
from posthog.ai.anthropic import Anthropic
from posthog.ai.openai import AsyncOpenAI, OpenAI

import posthog_llm_trace as plt
from posthog_llm_trace import generation, span, trace
from posthog_llm_trace.providers import posthog as bridge
from posthog_llm_trace.testing import CapturedEvents, capture_events
from tests.capture_server import CaptureServer
from tests.core_support import make_client, props
from tests.fake_provider import FakeProvider, Json
from tests.posthog_support import (
    add_anthropic_routes,
    instrumented,
    posthog_client,
    wait_ai_events,
)

ASK = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        add_anthropic_routes(provider)
        yield provider


@pytest.fixture
def ph(capture_server: CaptureServer) -> Iterator[posthog.Posthog]:
    client = posthog_client(capture_server)
    yield client
    client.shutdown()


@pytest.fixture
def bridged() -> Iterator[None]:
    with instrumented("posthog"):
        yield


def wrapper(ph: posthog.Posthog, fake: FakeProvider) -> OpenAI:
    return OpenAI(posthog_client=ph, base_url=fake.url + "/v1", api_key="x", max_retries=0)


def ai(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"].startswith("$ai_")]


def one(events: CapturedEvents, name: str) -> dict[str, Any]:
    [event] = events.named(name)
    return event


# --- inside one of our traces ------------------------------------------------------------------


def test_a_wrapper_call_joins_the_current_trace_and_is_delivered_once_by_us(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    llm = wrapper(ph, fake)
    with (
        capture_events() as events,
        trace("job", client=make_client(), distinct_id="user-7", session_id="conv-1") as t,
    ):
        t.groups["company"] = "acme"
        t.set_property("plan", "pro")
        with span("agent", kind="agent") as agent:
            reply = llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert reply.choices[0].message.content == "echo: hello there"
    gen = one(events, "$ai_generation")
    p = props(gen)
    assert p["$ai_trace_id"] == t.id
    assert p["$ai_parent_id"] == agent.id
    assert gen["distinct_id"] == "user-7"
    assert p["$ai_session_id"] == "conv-1"
    assert p["$groups"] == {"company": "acme"}
    assert p["plan"] == "pro"
    # What the wrapper knew is kept.
    assert p["$ai_model"] == "gpt-4o-mini" and p["$ai_provider"] == "openai"
    assert p["$ai_output_choices"][0]["content"][0]["text"] == "echo: hello there"
    assert p["$ai_usage"]["prompt_tokens"] == p["$ai_input_tokens"] > 0
    assert "$process_person_profile" not in p
    assert one(events, "$ai_trace")["distinct_id"] == "user-7"
    # Not a second time by posthog-python.
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_with_openai_instrumentation_too_one_call_is_one_generation_richest_fields_win(
    ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    llm = wrapper(ph, fake)
    with (
        instrumented("posthog", "openai"),
        capture_events() as events,
        trace("job", client=make_client()),
    ):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        stream = llm.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        llm.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert text == "echo: a b c"
    plain, streamed = (props(e) for e in events.named("$ai_generation"))
    assert len(events.named("$ai_embedding")) == 1
    assert plain["$ai_stream"] is False and "$ai_usage" in plain
    # Ours: time to first token and the stream flag; the wrapper's: its raw usage.
    assert streamed["$ai_stream"] is True and streamed["$ai_time_to_first_token"] >= 0
    assert streamed["$ai_usage"]["completion_tokens"] == streamed["$ai_output_tokens"]
    assert streamed["$ai_output_choices"] == [{"role": "assistant", "content": "echo: a b c"}]
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_an_application_generation_around_a_wrapper_call_is_filled_not_doubled(
    ph: posthog.Posthog, fake: FakeProvider
) -> None:
    llm = wrapper(ph, fake)
    with (
        instrumented("posthog", "openai"),
        capture_events() as events,
        trace("job", client=make_client()),
        generation("answer") as gen,
    ):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    p = props(one(events, "$ai_generation"))
    assert p["$ai_span_id"] == gen.id and p["$ai_span_name"] == "answer"
    assert p["$ai_model"] == "gpt-4o-mini" and "$ai_usage" in p


def test_async_wrapper_calls_and_streams_join_the_trace(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    llm = AsyncOpenAI(posthog_client=ph, base_url=fake.url + "/v1", api_key="x", max_retries=0)

    async def main() -> tuple[str, str]:
        async with trace("async job", client=make_client()) as t:
            await llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
            stream = await llm.chat.completions.create(
                model="gpt-4o-mini", messages=ASK, stream=True
            )
            async for _ in stream:
                pass
        return t.id, ""

    with capture_events() as events:
        trace_id, _ = asyncio.run(main())
    gens = events.named("$ai_generation")
    assert len(gens) == 2
    assert {props(g)["$ai_trace_id"] for g in gens} == {trace_id}
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_the_anthropic_wrapper_joins_the_trace_streamed_or_not(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    claude = Anthropic(posthog_client=ph, base_url=fake.url, api_key="x", max_retries=0)
    with capture_events() as events, trace("claude", client=make_client(), distinct_id="u-3") as t:
        message = claude.messages.create(model="claude-x", max_tokens=50, messages=ASK)
        streamed = claude.messages.create(
            model="claude-x", max_tokens=50, messages=ASK, stream=True
        )
        for _ in streamed:
            pass
    assert message.content[0].text == "echo: hello there"
    gens = events.named("$ai_generation")
    assert len(gens) == 2
    for gen in gens:
        p = props(gen)
        assert p["$ai_trace_id"] == t.id and p["$ai_parent_id"] == t.id
        assert p["$ai_provider"] == "anthropic" and gen["distinct_id"] == "u-3"
        assert p["$ai_output_tokens"] > 0
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_an_app_capture_of_an_ai_event_joins_the_trace_an_explicit_user_wins(
    bridged: None, ph: posthog.Posthog, capture_server: CaptureServer
) -> None:
    with (
        capture_events() as events,
        trace("manual", client=make_client(), distinct_id="user-1") as t,
    ):
        ph.capture(
            "$ai_generation",
            properties={"$ai_model": "m", "$ai_provider": "p", "$ai_trace_id": "theirs"},
        )
        ph.capture(
            "$ai_span", distinct_id="someone-else", properties={"$ai_span_type": "mcp_tools"}
        )
    gen, spn = one(events, "$ai_generation"), one(events, "$ai_span")
    assert props(gen)["$ai_trace_id"] == props(spn)["$ai_trace_id"] == t.id
    assert gen["distinct_id"] == "user-1"
    assert spn["distinct_id"] == "someone-else"
    assert props(spn)["$ai_span_type"] == "mcp_tools"
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_privacy_mode_mask_and_the_size_limit_apply_to_bridged_events(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider
) -> None:
    llm = wrapper(ph, fake)
    with capture_events() as events, trace("private", client=make_client(privacy_mode=True)):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    p = props(one(events, "$ai_generation"))
    assert p["$ai_input"] is None and p["$ai_output_choices"] is None
    assert p["$ai_input_tokens"] > 0

    masked = make_client(mask=lambda value: "[masked]", max_event_bytes=4000)
    with capture_events() as events, trace("masked", client=masked):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        ph.capture("$ai_span", properties={"$ai_input_state": "x" * 100_000, "note": "y" * 20_000})
    p = props(one(events, "$ai_generation"))
    assert p["$ai_input"] == "[masked]" and p["$ai_output_choices"] == "[masked]"
    big = one(events, "$ai_span")
    assert big["properties"]["$ai_input_state"] == "[masked]"
    assert len(str(big)) < 6000


def test_a_langchain_run_tree_becomes_a_subtree_under_the_current_span(
    bridged: None, ph: posthog.Posthog, capture_server: CaptureServer
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from posthog.ai.langchain import CallbackHandler

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | FakeListChatModel(
        responses=["forty-two"]
    )
    handler = CallbackHandler(client=ph)
    with (
        capture_events() as events,
        trace("agent", client=make_client(), distinct_id="u-9") as t,
        span("plan") as plan,
    ):
        answer = chain.invoke({"q": "meaning?"}, config={"callbacks": [handler]})
    assert answer.content == "forty-two"
    spans = {props(e)["$ai_span_name"]: e for e in events.named("$ai_span")}
    root = spans["RunnableSequence"]
    assert props(root)["$ai_parent_id"] == plan.id
    assert props(root)["$ai_span_type"] == "chain"
    assert props(spans["ChatPromptTemplate"])["$ai_parent_id"] == props(root)["$ai_span_id"]
    gen = one(events, "$ai_generation")
    assert props(gen)["$ai_parent_id"] == props(root)["$ai_span_id"]
    every = [*events.named("$ai_span"), gen]
    assert {props(e)["$ai_trace_id"] for e in every} == {t.id}
    assert {e["distinct_id"] for e in every} == {"u-9"}
    assert ai(wait_ai_events(capture_server, ph)) == []


def _openai_chat_model(fake: FakeProvider) -> Any:
    """A LangChain chat model that calls the real ``openai`` SDK underneath, as
    langchain-openai's does."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    sdk = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)

    class SdkChatModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "sdk-chat"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            reply = sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": str(m.content)} for m in messages],
            )
            text = reply.choices[0].message.content or ""
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return SdkChatModel()


def test_a_langchain_model_over_an_instrumented_sdk_is_one_generation_in_its_chain(
    ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    from langchain_core.prompts import ChatPromptTemplate
    from posthog.ai.langchain import CallbackHandler

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | _openai_chat_model(fake)
    with (
        instrumented("posthog", "openai"),
        capture_events() as events,
        trace("agent", client=make_client(), distinct_id="u-7") as t,
    ):
        answer = chain.invoke({"q": "hello there"}, config={"callbacks": [CallbackHandler(ph)]})
    assert answer.content == "echo: hello there"
    [gen] = events.named("$ai_generation")  # not one from the SDK and one from LangChain
    spans = {props(e)["$ai_span_name"]: e for e in events.named("$ai_span")}
    root = spans["RunnableSequence"]
    p = props(gen)
    # In the LangChain subtree, under its chain; in our trace, under the request's user.
    assert p["$ai_parent_id"] == props(root)["$ai_span_id"]
    assert p["$ai_trace_id"] == t.id and gen["distinct_id"] == "u-7"
    # Ours (the SDK call): HTTP status, base URL, stop reason; its token counts, once.
    assert p["$ai_http_status"] == 200 and p["$ai_base_url"] == fake.url + "/v1"
    assert p["$ai_stop_reason"] == "stop"
    assert p["$ai_input_tokens"] > 0 and p["$ai_output_tokens"] > 0
    assert ai(wait_ai_events(capture_server, ph)) == []


# --- left alone ---------------------------------------------------------------------------------


def test_outside_our_traces_posthog_python_delivers_its_events_untouched(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    llm = wrapper(ph, fake)
    with capture_events() as events:
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK, posthog_trace_id="conv-x")
        ph.capture("$ai_span", distinct_id="d", properties={"$ai_trace_id": "t-1"})
    assert list(events) == []
    delivered = ai(wait_ai_events(capture_server, ph))
    assert [e["event"] for e in delivered] == ["$ai_generation", "$ai_span"]
    assert delivered[0]["properties"]["$ai_trace_id"] == "conv-x"
    assert delivered[0]["properties"]["$lib"] == "posthog-python"
    assert bridge.MARKER not in delivered[0]["properties"]


def test_product_events_in_a_trace_are_posthog_pythons_own(
    bridged: None, ph: posthog.Posthog, capture_server: CaptureServer
) -> None:
    with capture_events() as events, trace("t", client=make_client(), distinct_id="u"):
        ph.capture("signed up", distinct_id="u", properties={"plan": "pro"})
        with span("s"):
            pass
    assert [e["event"] for e in events] == ["$ai_span", "$ai_trace"]
    [signed] = wait_ai_events(capture_server, ph)
    assert signed["event"] == "signed up" and signed["properties"]["plan"] == "pro"


def test_a_disabled_posthog_client_records_nothing_of_its_own_call(
    bridged: None, capture_server: CaptureServer, fake: FakeProvider
) -> None:
    ph = posthog_client(capture_server, disabled=True)
    with capture_events() as events, trace("t", client=make_client()):
        wrapper(ph, fake).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert events.named("$ai_generation") == []


def test_a_sampled_out_trace_drops_its_wrapper_events_export_off_leaves_them_to_posthog(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    llm = wrapper(ph, fake)
    sampled_out = make_client(export="memory", sample_rate=0.0)
    with trace("sampled out", client=sampled_out):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert ai(wait_ai_events(capture_server, ph)) == []
    with trace("export off", client=make_client(export="off")):
        llm.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert [e["event"] for e in ai(wait_ai_events(capture_server, ph))] == ["$ai_generation"]


def test_an_unknown_posthog_version_logs_one_warning_and_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ph: posthog.Posthog,
    fake: FakeProvider,
    capture_server: CaptureServer,
) -> None:
    import posthog.version

    before = plt.instrumented()
    plt.uninstrument()
    monkeypatch.setattr(posthog.version, "VERSION", "99.0.0")
    try:
        with caplog.at_level(logging.WARNING, "posthog_llm_trace"):
            assert plt.instrument("posthog") == ()
        warnings = [r for r in caplog.records if "posthog" in r.getMessage()]
        assert len(warnings) == 1
        with capture_events() as events, trace("t", client=make_client()):
            wrapper(ph, fake).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    finally:
        monkeypatch.undo()
        plt.uninstrument()
        if before:
            plt.instrument(*before)
    assert events.named("$ai_generation") == []
    assert [e["event"] for e in ai(wait_ai_events(capture_server, ph))] == ["$ai_generation"]


def test_a_failure_inside_the_bridge_never_reaches_posthog_python(
    bridged: None,
    monkeypatch: pytest.MonkeyPatch,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(bridge, "_properties", broken)
    with trace("t", client=make_client(export="memory")):
        assert ph.capture("$ai_generation", properties={"$ai_model": "m"})
    assert [e["event"] for e in ai(wait_ai_events(capture_server, ph))] == ["$ai_generation"]


# --- delivery through the application's posthog client -----------------------------------------


def test_trace_with_a_posthog_client_delivers_through_it_without_looping_back(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    seen: list[str] = []

    def before_send(event: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(event["event"])
        return None if event["event"] == "$ai_span" else event

    ph.before_send = before_send
    with trace("through posthog", client=ph, distinct_id="u-5") as t:
        wrapper(ph, fake).chat.completions.create(model="gpt-4o-mini", messages=ASK)
        with span("dropped by before_send"):
            pass
    t.client.flush(5)  # False: before_send refused one event
    delivered = {e["event"]: e for e in ai(list(capture_server.events))}
    assert set(delivered) == {"$ai_generation", "$ai_trace"}
    gen = delivered["$ai_generation"]
    assert gen["properties"]["$ai_trace_id"] == t.id and gen["distinct_id"] == "u-5"
    assert gen["properties"]["$ai_lib"] == "posthog-llm-trace"
    assert sorted(seen) == ["$ai_generation", "$ai_span", "$ai_trace"]  # once each: no loop
    assert t.client.stats.snapshot()["dropped_rejected"] == 1


def test_export_posthog_uses_the_configured_client_and_its_disabled_switch(
    bridged: None, ph: posthog.Posthog, capture_server: CaptureServer
) -> None:
    ours = make_client(export="posthog", posthog_client=ph)
    with trace("t", client=ours), span("s"):
        pass
    assert ours.flush(5)
    assert sorted(e["event"] for e in ai(list(capture_server.events))) == ["$ai_span", "$ai_trace"]
    ph.disabled = True
    with trace("t2", client=ours), span("s2"):
        pass
    ours.flush(5)
    assert len(ai(list(capture_server.events))) == 2


def test_trace_refuses_a_client_of_the_wrong_kind_with_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match=r"posthog\.Posthog client"):
        trace("t", client="not a client")  # type: ignore[arg-type]


def test_with_anthropic_instrumentation_too_the_anthropic_wrapper_is_recorded_once(
    ph: posthog.Posthog, fake: FakeProvider, capture_server: CaptureServer
) -> None:
    claude = Anthropic(posthog_client=ph, base_url=fake.url, api_key="x", max_retries=0)
    with (
        instrumented("posthog", "anthropic"),
        capture_events() as events,
        trace("claude", client=make_client()),
    ):
        claude.messages.create(model="claude-x", max_tokens=50, messages=ASK)
        for _ in claude.messages.create(model="claude-x", max_tokens=50, messages=ASK, stream=True):
            pass
        with claude.messages.stream(model="claude-x", max_tokens=50, messages=ASK) as s:
            for _ in s.text_stream:
                pass
    gens = [props(g) for g in events.named("$ai_generation")]
    assert len(gens) == 3
    assert [g["$ai_stream"] for g in gens] == [False, True, True]
    assert all(g["$ai_time_to_first_token"] >= 0 for g in gens[1:])
    assert all("$ai_usage" in g for g in gens)
    assert ai(wait_ai_events(capture_server, ph)) == []


def test_a_wrong_posthog_client_setting_is_a_clear_configuration_error() -> None:
    with pytest.raises(plt.ConfigurationError, match="posthog_client"):
        make_client(export="posthog", posthog_client=42)
    with pytest.raises(plt.ConfigurationError, match="could not import"):
        make_client(export="posthog", posthog_client="nowhere.to_be.found")


def test_bridged_events_go_through_our_exporter_with_its_retries_and_stats(
    bridged: None,
    ph: posthog.Posthog,
    fake: FakeProvider,
    capture_server: CaptureServer,
    settings_for: Any,
) -> None:
    ours = plt.Client(settings_for(capture_server, flush_at=1, flush_interval=0.05))
    capture_server.fail(503, times=1, paths=("/batch/",))
    with trace("delivered by us", client=ours, distinct_id="u-1") as t:
        wrapper(ph, fake).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert ours.flush(10)
    ph.flush(5)
    delivered = {e["event"]: e for e in capture_server.events}
    assert set(delivered) == {"$ai_generation", "$ai_trace"}
    gen = delivered["$ai_generation"]
    assert gen["properties"]["$lib"] == "posthog-llm-trace"  # not posthog-python's
    assert gen["properties"]["$ai_trace_id"] == t.id and gen["distinct_id"] == "u-1"
    counts = ours.stats.snapshot()
    assert counts["sent"] == 2 and counts["retried"] >= 1 and counts["dropped"] == 0
    ours.shutdown(1)


def test_a_failing_wrapper_call_is_one_failed_generation_and_the_error_reaches_the_app(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider
) -> None:
    secret = {"error": {"message": "prompt was: my secret", "type": "server_error"}}
    for privacy in (False, True):
        fake.queue("/v1/chat/completions", Json(secret, 500))
        client = make_client(privacy_mode=privacy)
        with (
            capture_events() as events,
            trace("t", client=client),
            pytest.raises(openai.InternalServerError),
        ):
            wrapper(ph, fake).chat.completions.create(model="gpt-4o-mini", messages=ASK)
        p = props(one(events, "$ai_generation"))
        assert p["$ai_is_error"] is True and p["$ai_http_status"] == 500
        assert ("my secret" in str(p)) is not privacy


def test_the_memory_bound_counts_what_a_bridged_event_holds(
    bridged: None, ph: posthog.Posthog, fake: FakeProvider
) -> None:
    client = make_client(export="memory")
    records: list[Any] = []
    client.submit = records.append  # type: ignore[method-assign]
    with trace("big", client=client):
        ph.capture("$ai_span", properties={"$ai_input_state": "x" * 100_000})
        wrapper(ph, fake).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "y" * 50_000}]
        )
    [record] = records
    assert record.approx_bytes > 150_000
