"""posthog-python used as its documentation shows, inside real Django (sync and async views,
WSGI and ASGI servers) and Flask requests: the wrappers' generations join the request's trace
with the request's user, and ``ph.capture("signed up")`` in the view is attributed to that
user through posthog-python's own context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import posthog
import pytest
from django.test import Client as DjangoClient
from flask import Flask, jsonify, request
from flask_login import login_user
from flask_testapp import User, isolate, make_app
from posthog.ai.openai import OpenAI

from posthog_llm_trace import current_trace
from posthog_llm_trace.client import Client
from posthog_llm_trace.testing import CapturedEvents, capture_events
from tests.capture_server import CaptureServer
from tests.django_app.fixtures import (  # noqa: F401  (fixtures)
    Server,
    asgi_server,
    llm_settings,
    wait_for,
    wsgi_server,
)
from tests.fake_provider import FakeProvider
from tests.posthog_support import instrumented, posthog_client, wait_ai_events


@pytest.fixture
def ph(capture_server: CaptureServer) -> Iterator[posthog.Posthog]:
    client = posthog_client(capture_server)
    yield client
    client.shutdown()


def one_generation_in_one_trace(events: CapturedEvents) -> tuple[dict[str, Any], dict[str, Any]]:
    [trace] = events.named("$ai_trace")
    [gen] = events.named("$ai_generation")
    return trace, gen


def product_events(server: CaptureServer, ph: posthog.Posthog) -> list[dict[str, Any]]:
    events = wait_ai_events(server, ph)
    assert not [e for e in events if e["event"].startswith("$ai_")]  # all delivered by us
    return events


# --- Django -------------------------------------------------------------------------------------


@pytest.fixture
def django_posthog(
    llm_settings: Callable[..., Client],  # noqa: F811
    settings: Any,
    fake: FakeProvider,
    ph: posthog.Posthog,
) -> Iterator[None]:
    settings.ROOT_URLCONF = "tests.django_app.posthog_views"
    settings.OPENAI_BASE_URL_FOR_TESTS = fake.url + "/v1"
    settings.POSTHOG_CLIENT_FOR_TESTS = ph
    with instrumented("posthog"):
        yield


def check_one_generation_of_alice(
    events: CapturedEvents, answer: dict[str, Any], alice: Any
) -> None:
    assert answer["answer"] == "echo: from django"
    trace, gen = one_generation_in_one_trace(events)
    p = gen["properties"]
    assert p["$ai_trace_id"] == answer["trace_id"] == trace["properties"]["$ai_trace_id"]
    assert p["$ai_parent_id"] == answer["trace_id"]
    assert gen["distinct_id"] == trace["distinct_id"] == str(alice.pk)
    assert p["$ai_session_id"] == trace["properties"]["$ai_session_id"]
    assert "$process_person_profile" not in p


def test_a_sync_django_view_using_the_posthog_wrapper_fills_the_request_trace(
    django_posthog: None,
    client: DjangoClient,
    db: None,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.create_user("alice")
    client.force_login(alice)
    with capture_events() as events:
        answer = client.get("/ph/ask/", {"q": "from django"}).json()
    check_one_generation_of_alice(events, answer, alice)
    [asked] = product_events(capture_server, ph)
    assert asked["event"] == "asked" and asked["distinct_id"] == str(alice.pk)
    assert "$process_person_profile" not in asked["properties"]


def test_an_async_django_view_under_asgi_using_the_async_wrapper_fills_the_trace(
    django_posthog: None,
    asgi_server: Server,  # noqa: F811
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    import json

    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.create_user("alice")
    browser = DjangoClient()
    browser.force_login(alice)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    with capture_events() as events:
        status, body = asgi_server.request("GET", "/ph/aask/?q=from+django", {"Cookie": cookie})
        wait_for(lambda: events.named("$ai_trace"))
    assert status == 200
    check_one_generation_of_alice(events, json.loads(body), alice)
    [asked] = product_events(capture_server, ph)
    assert asked["event"] == "asked" and asked["distinct_id"] == str(alice.pk)


def test_a_user_who_signs_in_during_the_view_owns_its_events(
    django_posthog: None,
    client: DjangoClient,
    db: None,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    with capture_events() as events:
        answer = client.get("/ph/signup/", {"name": "bob", "q": "hi"}).json()
    from django.contrib.auth import get_user_model

    bob = get_user_model().objects.get(username="bob")
    trace, gen = one_generation_in_one_trace(events)
    assert gen["distinct_id"] == trace["distinct_id"] == str(bob.pk)
    assert gen["properties"]["$ai_trace_id"] == answer["trace_id"]
    [signed_up] = product_events(capture_server, ph)
    assert signed_up["event"] == "signed up" and signed_up["distinct_id"] == str(bob.pk)


def test_anonymous_requests_leave_product_events_personless_as_posthog_would(
    django_posthog: None,
    client: DjangoClient,
    db: None,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    with capture_events() as events:
        client.get("/ph/ask/", {"q": "anon"}, HTTP_X_POSTHOG_SESSION_ID="browser-1")
    _, gen = one_generation_in_one_trace(events)
    assert gen["distinct_id"] == "anonymous"
    assert gen["properties"]["$session_id"] == "browser-1"
    [asked] = product_events(capture_server, ph)
    assert asked["properties"]["$process_person_profile"] is False
    assert asked["properties"]["$session_id"] == "browser-1"


@pytest.mark.parametrize("server_fixture", ["wsgi_server", "asgi_server"])
def test_a_streamed_wrapper_call_in_a_streaming_view_is_one_generation_of_the_trace(
    django_posthog: None,
    request: pytest.FixtureRequest,
    server_fixture: str,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    server: Server = request.getfixturevalue(server_fixture)
    with capture_events() as events:
        conn, response = server.open_stream("/ph/stream/?q=stream+this", {})
        body = response.read()
        conn.close()
        wait_for(lambda: events.named("$ai_trace"))
    assert body == b"echo: stream this"
    trace, gen = one_generation_in_one_trace(events)
    assert gen["properties"]["$ai_trace_id"] == trace["properties"]["$ai_trace_id"]
    assert gen["properties"]["$ai_output_tokens"] > 0
    assert product_events(capture_server, ph) == []


def test_django_export_posthog_delivers_through_the_dotted_path_client(
    llm_settings: Callable[..., Client],  # noqa: F811
    settings: Any,
    fake: FakeProvider,
    client: DjangoClient,
    db: None,
    capture_server: CaptureServer,
) -> None:
    import tests.posthog_support as support

    support.SHARED = posthog_client(capture_server)  # type: ignore[attr-defined]
    try:
        ours = llm_settings(EXPORT="posthog", POSTHOG_CLIENT="tests.posthog_support.SHARED")
        settings.ROOT_URLCONF = "tests.django_app.posthog_views"
        settings.OPENAI_BASE_URL_FOR_TESTS = fake.url + "/v1"
        settings.POSTHOG_CLIENT_FOR_TESTS = support.SHARED  # type: ignore[attr-defined]
        with instrumented("posthog"):
            answer = client.get("/ph/ask/", {"q": "one client"}).json()
        ours.flush(5)
        delivered = {e["event"]: e for e in capture_server.events}
    finally:
        support.SHARED.shutdown()  # type: ignore[attr-defined]
    assert set(delivered) == {"asked", "$ai_generation", "$ai_trace"}
    assert delivered["$ai_generation"]["properties"]["$ai_trace_id"] == answer["trace_id"]
    assert delivered["$ai_generation"]["properties"]["$lib"] == "posthog-python"


# --- Flask --------------------------------------------------------------------------------------


def flask_app(fake: FakeProvider, ph: posthog.Posthog, **config: Any) -> Flask:
    app = make_app(**config)
    llm = OpenAI(posthog_client=ph, base_url=fake.url + "/v1", api_key="x", max_retries=0)

    @app.get("/ph/ask")
    def ask() -> Any:
        if request.args.get("login"):
            login_user(User(request.args["login"]))
        ph.capture("asked")
        reply = llm.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": request.args["q"]}]
        )
        trace = current_trace()
        return jsonify(
            answer=reply.choices[0].message.content, trace_id=trace.id if trace else None
        )

    @app.get("/ph/stream")
    def stream() -> Any:
        chunks = llm.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": request.args["q"]}],
            stream=True,
        )
        return app.response_class(
            (c.choices[0].delta.content or "" for c in chunks if c.choices),
            mimetype="text/plain",
        )

    from posthog_llm_trace.flask import LLMTrace

    LLMTrace(app)
    return app


def test_a_flask_view_using_the_posthog_wrapper_fills_the_request_trace(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider,
    ph: posthog.Posthog,
    capture_server: CaptureServer,
) -> None:
    isolate(monkeypatch)
    with instrumented("posthog"):
        app = flask_app(fake, ph, POSTHOG_LLM_TRACE_EXPORT="memory")
        with capture_events() as events:
            answer = app.test_client().get("/ph/ask?q=from+flask&login=carol").get_json()
            body = app.test_client().get("/ph/stream?q=streamed").get_data()
    assert answer["answer"] == "echo: from flask" and body == b"echo: streamed"
    plain, streamed = events.named("$ai_generation")
    traces = {t["properties"]["$ai_trace_id"]: t for t in events.named("$ai_trace")}
    assert plain["properties"]["$ai_trace_id"] == answer["trace_id"]
    # Flask binds the user after the view: the generation is still carol's.
    assert plain["distinct_id"] == traces[answer["trace_id"]]["distinct_id"] == "carol"
    assert streamed["properties"]["$ai_trace_id"] in traces
    [asked] = product_events(capture_server, ph)
    assert asked["event"] == "asked" and asked["distinct_id"] == "carol"
