"""The Django middleware through the real request cycle (Django's test client, WSGI handler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient
from django.test import override_settings

from posthog_llm_trace import Client
from posthog_llm_trace.testing import CapturedEvents, capture_events
from posthog_llm_trace.web import session_hash
from tests.django_app import hooks, views
from tests.django_app.fixtures import llm_settings

pytestmark = pytest.mark.usefixtures("llm_settings")
SECRET = "test-secret-key-not-for-production"

__all__ = ["llm_settings"]


@pytest.fixture
def alice(db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def bob(db: None) -> Any:
    return get_user_model().objects.create_user("bob", password="pw")


def the_trace(events: CapturedEvents) -> dict[str, Any]:
    [trace] = events.named("$ai_trace")
    return trace


def assert_one_trace(events: CapturedEvents) -> dict[str, Any]:
    """Every event belongs to the one trace, under the same person and session."""
    trace = the_trace(events)
    props = trace["properties"]
    for event in events:
        assert event["properties"]["$ai_trace_id"] == props["$ai_trace_id"]
        assert event["distinct_id"] == trace["distinct_id"]
        assert event["properties"].get("$ai_session_id") == props.get("$ai_session_id")
    return trace


# --- naming and what is sent ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("post", "/api/v1/chat/42/", "POST /api/v1/chat/<int:id>/"),
        ("get", "/api/v1/chat/7/", "GET /api/v1/chat/<int:id>/"),
        ("get", "/legacy/9/", "GET /legacy/(?P<id>[0-9]+)/"),
        ("get", "/", "GET /"),
    ],
)
def test_trace_is_named_by_method_and_route_pattern(
    client: DjangoClient, db: None, method: str, path: str, name: str
) -> None:
    with capture_events() as events:
        response = getattr(client, method)(path)
    assert response.status_code == 200
    trace = assert_one_trace(events)
    assert trace["properties"]["$ai_span_name"] == name
    assert path.strip("/") == "" or path not in name  # never the raw path
    [gen] = events.named("$ai_generation")
    assert gen["properties"]["$ai_parent_id"] == trace["properties"]["$ai_trace_id"]
    [tool] = events.named("$ai_span")
    assert tool["properties"]["$ai_parent_id"] == gen["properties"]["$ai_span_id"]


def test_a_request_that_records_no_span_sends_nothing(client: DjangoClient, db: None) -> None:
    with capture_events() as events:
        assert client.get("/plain/").status_code == 200
        assert client.get("/no-such-page/").status_code == 404
    assert list(events) == []


def test_an_unmatched_url_still_gets_a_trace_named_by_method(
    client: DjangoClient, db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A middleware (or a 404 handler) recording a span for an unmatched URL: no raw path.
    from posthog_llm_trace import span

    def handler404(request: Any, exception: Exception) -> Any:
        with span("not-found-help"):
            pass
        from django.http import HttpResponseNotFound

        return HttpResponseNotFound("nope")

    monkeypatch.setattr("tests.django_app.urls.handler404", handler404, raising=False)
    with capture_events() as events:
        assert client.get("/secret-token-in-path/").status_code == 404
    trace = the_trace(events)
    assert trace["properties"]["$ai_span_name"] == "GET"
    assert "secret" not in str(trace)


# --- who made the request ------------------------------------------------------------------------


def test_anonymous_requests_use_the_default_distinct_id(client: DjangoClient, db: None) -> None:
    with capture_events() as events:
        client.post("/api/v1/chat/1/")
    assert_one_trace(events)
    for event in events:
        assert event["distinct_id"] == "anonymous"
        assert event["properties"]["$process_person_profile"] is False
        assert "$ai_session_id" not in event["properties"]  # no session was created for us


def test_the_default_distinct_id_is_a_setting(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    llm_settings(DEFAULT_DISTINCT_ID="guest")
    with capture_events() as events:
        client.post("/api/v1/chat/1/")
    assert {e["distinct_id"] for e in events} == {"guest"}


def test_a_signed_in_user_is_bound_by_primary_key(client: DjangoClient, alice: Any) -> None:
    client.force_login(alice)
    with capture_events() as events:
        assert client.get("/whoami/").json() == {"pk": alice.pk}
    trace = assert_one_trace(events)
    assert trace["distinct_id"] == str(alice.pk)
    assert "$process_person_profile" not in trace["properties"]


def test_a_user_who_logs_in_during_the_request_is_bound(client: DjangoClient, alice: Any) -> None:
    with capture_events() as events:
        client.post("/login-inside/", {"username": "alice"})
    trace = assert_one_trace(events)
    assert trace["distinct_id"] == str(alice.pk)
    # login() cycled the session key; the session id is derived from the new one.
    new_key = client.session.session_key
    assert trace["properties"]["$ai_session_id"] == session_hash(SECRET, new_key)


def test_a_user_authenticated_by_a_token_inside_the_view_is_bound(
    client: DjangoClient, alice: Any
) -> None:
    with capture_events() as events:
        response = client.get("/token/", headers={"Authorization": "Token alice"})
    assert response.json() == {"pk": alice.pk}
    assert assert_one_trace(events)["distinct_id"] == str(alice.pk)


def test_the_app_can_override_identity_on_the_current_trace(
    client: DjangoClient, alice: Any
) -> None:
    client.force_login(alice)
    with capture_events() as events:
        client.get("/override/")
    trace = assert_one_trace(events)
    assert trace["distinct_id"] == "app-chosen"
    assert trace["properties"]["$ai_session_id"] == "conversation-7"
    assert trace["properties"]["plan"] == "pro"


@pytest.mark.parametrize("resolver", [hooks.by_username, "tests.django_app.hooks.by_username"])
def test_distinct_id_resolver_as_callable_or_dotted_path(
    client: DjangoClient, alice: Any, llm_settings: Callable[..., Client], resolver: Any
) -> None:
    llm_settings(DISTINCT_ID_RESOLVER=resolver)
    client.force_login(alice)
    with capture_events() as events:
        client.get("/whoami/")
    assert assert_one_trace(events)["distinct_id"] == "user:alice"
    client.logout()
    with capture_events() as events:
        client.get("/whoami/")  # the resolver says None: the usual lookup (nobody) follows
    assert assert_one_trace(events)["distinct_id"] == "anonymous"


# --- sessions ------------------------------------------------------------------------------------


def test_session_id_is_a_stable_hash_never_the_session_key(
    client: DjangoClient, alice: Any
) -> None:
    client.force_login(alice)
    key = client.session.session_key
    with capture_events() as events:
        client.get("/whoami/")
        client.post("/api/v1/chat/3/")
    traces = events.named("$ai_trace")
    assert len(traces) == 2
    ids = {e["properties"]["$ai_session_id"] for e in events}
    assert ids == {session_hash(SECRET, key)}
    assert key not in str(list(events))


def test_another_session_gets_another_session_id(
    client: DjangoClient, alice: Any, bob: Any
) -> None:
    other = DjangoClient()
    client.force_login(alice)
    other.force_login(bob)
    with capture_events() as events:
        client.get("/whoami/")
        other.get("/whoami/")
    by_user = {e["distinct_id"]: e["properties"]["$ai_session_id"] for e in events}
    assert by_user[str(alice.pk)] != by_user[str(bob.pk)]


def test_an_anonymous_session_is_linked_once_it_exists(client: DjangoClient, db: None) -> None:
    with capture_events() as events:
        client.get("/session-touch/")  # the session is created after the view: no id yet
        client.get("/session-touch/")
    first, second = events.named("$ai_trace")
    assert "$ai_session_id" not in first["properties"]
    key = client.session.session_key
    assert second["properties"]["$ai_session_id"] == session_hash(SECRET, key)


# --- headers -------------------------------------------------------------------------------------


def test_the_distinct_id_header_is_ignored_unless_trusted(
    client: DjangoClient, alice: Any, llm_settings: Callable[..., Client]
) -> None:
    headers = {"X-POSTHOG-DISTINCT-ID": "someone-else"}
    with capture_events() as events:
        client.post("/api/v1/chat/1/", headers=headers)
    assert assert_one_trace(events)["distinct_id"] == "anonymous"

    llm_settings(DISTINCT_ID_HEADER=True)
    with capture_events() as events:
        client.post("/api/v1/chat/1/", headers=headers)
    assert assert_one_trace(events)["distinct_id"] == "someone-else"

    client.force_login(alice)  # a signed-in user wins over what the browser claims
    with capture_events() as events:
        client.get("/whoami/", headers=headers)
    assert assert_one_trace(events)["distinct_id"] == str(alice.pk)


def test_the_replay_session_header_links_session_replays(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    with capture_events() as events:
        client.post("/api/v1/chat/1/", headers={"X-POSTHOG-SESSION-ID": "replay\x00-1"})
    assert {e["properties"]["$session_id"] for e in events} == {"replay-1"}

    llm_settings(SESSION_REPLAY_HEADER=False)
    with capture_events() as events:
        client.post("/api/v1/chat/1/", headers={"X-POSTHOG-SESSION-ID": "replay-1"})
    assert all("$session_id" not in e["properties"] for e in events)


# --- failures ------------------------------------------------------------------------------------


def test_an_exception_in_the_view_fails_the_trace_and_propagates_unchanged(
    client: DjangoClient, db: None
) -> None:
    with capture_events() as events, pytest.raises(views.Boom, match="the view failed"):
        client.get("/boom/")
    trace = assert_one_trace(events)
    assert trace["properties"]["$ai_is_error"] is True
    assert "Boom" in str(trace["properties"]["$ai_error"])


def test_without_raising_django_answers_500_and_the_trace_is_failed(db: None) -> None:
    client = DjangoClient(raise_request_exception=False)
    with capture_events() as events:
        assert client.get("/boom/").status_code == 500
    assert assert_one_trace(events)["properties"]["$ai_is_error"] is True


def test_a_5xx_response_fails_the_trace(client: DjangoClient, db: None) -> None:
    with capture_events() as events:
        assert client.get("/server-error/").status_code == 503
    trace = assert_one_trace(events)
    assert trace["properties"]["$ai_is_error"] is True
    assert "503" in str(trace["properties"]["$ai_error"])


def test_http404_from_a_view_is_handled_not_a_failure(client: DjangoClient, db: None) -> None:
    with capture_events() as events:
        assert client.get("/not-found/").status_code == 404
    trace = assert_one_trace(events)
    assert not trace["properties"].get("$ai_is_error")


def test_a_stream_that_breaks_fails_the_trace(client: DjangoClient, db: None) -> None:
    client.raise_request_exception = False
    with capture_events() as events:
        response = client.get("/stream-failing/")
        with pytest.raises(views.Boom):
            b"".join(response.streaming_content)
        response.close()
    trace = assert_one_trace(events)
    assert trace["properties"]["$ai_is_error"] is True
    assert events.named("$ai_generation")[0]["properties"]["$ai_is_error"] is True


# --- settings that change what the middleware does -----------------------------------------------


def test_request_filter_skips_requests(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    llm_settings(REQUEST_FILTER="tests.django_app.hooks.only_api")
    with capture_events() as events:
        client.get("/whoami/")
        client.post("/api/v1/chat/5/")
    names = sorted(e["properties"]["$ai_span_name"] for e in events.named("$ai_trace"))
    # The untraced request's spans are not lost: they make an implicit trace of their own,
    # named after the first span, with no request, user or session.
    assert names == ["POST /api/v1/chat/<int:id>/", "answer"]


def test_a_failing_request_filter_does_not_break_the_request(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    def broken(request: Any) -> bool:
        raise RuntimeError("filter bug")

    llm_settings(REQUEST_FILTER=broken)
    with capture_events() as events:
        assert client.post("/api/v1/chat/5/").status_code == 200
    assert len(events.named("$ai_trace")) == 1


def test_serverless_flushes_at_the_end_of_each_request(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    llm_client = llm_settings(SERVERLESS=True)
    exporter = llm_client.exporter
    assert exporter is not None
    assert llm_client.settings.flush_at == 10
    client.post("/api/v1/chat/1/")
    assert len(exporter.events) == 3  # type: ignore[attr-defined]
    flushed: list[float | None] = []
    original = llm_client.flush

    def flush(timeout: float | None = None) -> bool:
        flushed.append(timeout)
        return original(timeout)

    llm_client.flush = flush  # type: ignore[method-assign]
    client.post("/api/v1/chat/1/")
    assert flushed == [2.0]  # bounded: min(timeout, 2 s)
    client.get("/plain/")  # records nothing: nothing to wait for
    assert flushed == [2.0]


def test_privacy_mode_from_the_settings_dict(
    client: DjangoClient, db: None, llm_settings: Callable[..., Client]
) -> None:
    llm_settings(PRIVACY_MODE=True)
    with capture_events() as events:
        client.post("/api/v1/chat/1/")
    [gen] = events.named("$ai_generation")
    assert gen["properties"].get("$ai_input") is None
    assert gen["properties"].get("$ai_output_choices") is None


# --- Django's semantics are kept --------------------------------------------------------------


@override_settings(
    MIDDLEWARE=["tests.django_app.middleware.OuterProbe", *django_settings.MIDDLEWARE]
)
def test_context_set_by_the_view_stays_visible_to_outer_middleware_and_the_body(
    client: DjangoClient, db: None
) -> None:
    # As in plain Django: e.g. LocaleMiddleware reads the language a view activated.
    with capture_events() as events:
        response = client.get("/probe/")
        assert response["X-Probe"] == "set-by-the-view"
        streamed = client.get("/probe/?stream=1")
        assert b"".join(streamed.streaming_content) == b"set-by-the-view"
        streamed.close()
    _, second = events.named("$ai_trace")
    assert second["properties"]["$ai_span_name"] == "GET /probe/"
    streamed_span = events.by_span_name("streamed")
    assert streamed_span["properties"]["$ai_trace_id"] == second["properties"]["$ai_trace_id"]


def test_a_failing_user_lookup_or_resolver_never_fails_the_response(
    client: DjangoClient,
    alice: Any,
    llm_settings: Callable[..., Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_resolver(request: Any) -> str:
        raise RuntimeError("resolver bug")

    llm_settings(DISTINCT_ID_RESOLVER=broken_resolver)
    client.force_login(alice)
    with capture_events() as events:
        assert client.post("/api/v1/chat/1/").status_code == 200
    assert assert_one_trace(events)["distinct_id"] == str(alice.pk)  # the user, as a fallback

    from django.contrib.auth import middleware
    from django.db import DatabaseError

    def database_down(request: Any) -> Any:
        raise DatabaseError("database down")

    llm_settings()
    monkeypatch.setattr(middleware, "get_user", database_down)
    with capture_events() as events:
        assert client.post("/api/v1/chat/1/").status_code == 200  # the view never reads the user
    assert assert_one_trace(events)["distinct_id"] == "anonymous"
