"""Instrumented ``anthropic`` calls inside real Django and Flask requests: the views call a plain
SDK client, the request's trace gets the generation, with the request's user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from django.test import Client as DjangoClient
from flask import Flask, jsonify, request
from flask_testapp import isolate, make_app

import posthog_llm_trace as plt
from posthog_llm_trace import current_trace
from posthog_llm_trace.client import Client
from posthog_llm_trace.flask import LLMTrace
from posthog_llm_trace.testing import CapturedEvents, capture_events
from tests.django_app.fixtures import (  # noqa: F401  (fixtures)
    Server,
    asgi_server,
    llm_settings,
    wait_for,
    wsgi_server,
)
from tests.fake_provider import FakeProvider

MODEL = "claude-sonnet-4-5"


def one_trace_with_one_generation(events: CapturedEvents) -> tuple[dict[str, Any], dict[str, Any]]:
    [trace] = events.named("$ai_trace")
    [gen] = events.named("$ai_generation")
    return trace, gen


def text_output(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


# --- Django -------------------------------------------------------------------------------------


@pytest.fixture
def django_anthropic(
    not_instrumented: None,
    llm_settings: Callable[..., Client],  # noqa: F811
    settings: Any,
    fake: FakeProvider,
) -> None:
    settings.ROOT_URLCONF = "tests.django_app.anthropic_views"
    settings.ANTHROPIC_BASE_URL_FOR_TESTS = fake.url
    assert "anthropic" in plt.instrumented()  # the app's setup did it (default: every SDK)


@pytest.mark.parametrize("path", ["/anthropic/ask/", "/anthropic/aask/"])
def test_a_django_view_calling_anthropic_fills_the_request_trace(
    django_anthropic: None, client: DjangoClient, db: None, path: str
) -> None:
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.create_user("alice")
    client.force_login(alice)
    with capture_events() as events:
        answer = client.get(path, {"q": "from django"}).json()
    assert answer["answer"] == "echo: from django"
    trace, gen = one_trace_with_one_generation(events)
    p = gen["properties"]
    assert p["$ai_trace_id"] == answer["trace_id"] == trace["properties"]["$ai_trace_id"]
    assert p["$ai_parent_id"] == answer["trace_id"]
    assert gen["distinct_id"] == str(alice.pk)
    assert p["$ai_provider"] == "anthropic" and p["$ai_model"] == MODEL
    assert p["$ai_input"][0] == {"role": "system", "content": "Be brief."}
    assert p["$ai_output_choices"] == text_output("echo: from django")
    assert p["$ai_input_tokens"] > 0 and p["$ai_http_status"] == 200
    assert p["$ai_stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("server_fixture", "path"),
    [("wsgi_server", "/anthropic/stream/"), ("asgi_server", "/anthropic/astream/")],
)
def test_a_django_streaming_view_records_the_stream_in_the_request_trace(
    django_anthropic: None, request: pytest.FixtureRequest, server_fixture: str, path: str
) -> None:
    server: Server = request.getfixturevalue(server_fixture)
    with capture_events() as events:
        conn, response = server.open_stream(f"{path}?q=stream+this", {})
        body = response.read()
        conn.close()
        wait_for(lambda: events.named("$ai_trace"))
    assert body == b"echo: stream this"
    trace, gen = one_trace_with_one_generation(events)
    p = gen["properties"]
    assert p["$ai_trace_id"] == trace["properties"]["$ai_trace_id"]
    assert p["$ai_parent_id"] == trace["properties"]["$ai_trace_id"]
    assert p["$ai_stream"] is True
    assert p["$ai_output_choices"] == text_output("echo: stream this")
    assert p["$ai_input_tokens"] > 0 and p["$ai_output_tokens"] > 1


def test_django_instrument_setting_without_anthropic_leaves_it_alone(
    not_instrumented: None,
    llm_settings: Callable[..., Client],  # noqa: F811
    settings: Any,
    fake: FakeProvider,
    client: DjangoClient,
    db: None,
) -> None:
    plt.uninstrument()
    llm_settings(INSTRUMENT=["openai"])
    settings.ROOT_URLCONF = "tests.django_app.anthropic_views"
    settings.ANTHROPIC_BASE_URL_FOR_TESTS = fake.url
    assert "anthropic" not in plt.instrumented()
    with capture_events() as events:
        assert client.get("/anthropic/ask/").json()["answer"] == "echo: hello"
    assert not events.named("$ai_generation")


# --- Flask --------------------------------------------------------------------------------------


def flask_app(fake: FakeProvider, **config: Any) -> Flask:
    app = make_app(**config)
    llm = anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)

    def ask() -> dict[str, Any]:
        return {
            "model": MODEL,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": request.args["q"]}],
        }

    @app.get("/anthropic/ask")
    def ask_view() -> Any:
        reply = llm.messages.create(**ask())
        trace = current_trace()
        return jsonify(
            answer=reply.content[0].text,  # type: ignore[union-attr]
            trace_id=trace.id if trace else None,
        )

    @app.get("/anthropic/stream")
    def stream_view() -> Any:
        manager = llm.messages.stream(**ask())

        def body() -> Any:
            with manager as stream:
                yield from stream.text_stream

        return app.response_class(body(), mimetype="text/plain")

    LLMTrace(app)
    return app


def test_a_flask_view_calling_anthropic_fills_the_request_trace(
    monkeypatch: pytest.MonkeyPatch, not_instrumented: None, fake: FakeProvider
) -> None:
    isolate(monkeypatch)
    app = flask_app(fake, POSTHOG_LLM_TRACE_EXPORT="memory")
    assert "anthropic" in plt.instrumented()  # init_app applied the default setting
    with capture_events() as events:
        answer = app.test_client().get("/anthropic/ask?q=from+flask").get_json()
        body = app.test_client().get("/anthropic/stream?q=streamed").get_data()
    assert answer["answer"] == "echo: from flask"
    assert body == b"echo: streamed"
    traces = events.named("$ai_trace")
    plain, streamed = events.named("$ai_generation")
    assert plain["properties"]["$ai_trace_id"] == answer["trace_id"]
    assert plain["properties"]["$ai_parent_id"] == answer["trace_id"]
    assert plain["properties"]["$ai_provider"] == "anthropic"
    assert streamed["properties"]["$ai_trace_id"] in {
        t["properties"]["$ai_trace_id"] for t in traces
    }
    assert streamed["properties"]["$ai_trace_id"] != answer["trace_id"]  # its own request
    assert streamed["properties"]["$ai_input_tokens"] > 0
    assert streamed["properties"]["$ai_output_choices"] == text_output("echo: streamed")
