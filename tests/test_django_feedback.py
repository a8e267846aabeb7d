"""Feedback through a real Django app: the trace id header, the template context, signed
references, and feedback requests bound to the signed-in user."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import AsyncClient, override_settings
from django.test import Client as DjangoClient

from posthog_llm_trace import Client, current_trace
from posthog_llm_trace.testing import capture_events
from posthog_llm_trace.web import session_hash
from tests.django_app import feedback_views
from tests.django_app.fixtures import Server, asgi_server, llm_settings, wsgi_server

pytestmark = [
    pytest.mark.usefixtures("llm_settings"),
    pytest.mark.django_db,
]
SECRET = "test-secret-key-not-for-production"
HEADER = "X-PostHog-Trace-Id"

__all__ = ["asgi_server", "llm_settings", "wsgi_server"]


@pytest.fixture(autouse=True)
def _urls() -> Any:
    with override_settings(
        ROOT_URLCONF="tests.django_app.feedback_views", TEMPLATES=feedback_views.TEMPLATES
    ):
        yield


@pytest.fixture
def alice(db: None) -> Any:
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def bob(db: None) -> Any:
    return get_user_model().objects.create_user("bob", password="pw")


def post_json(browser: DjangoClient, url: str, data: dict[str, Any]) -> Any:
    return browser.post(url, json.dumps(data), content_type="application/json")


# --- the header ----------------------------------------------------------------------------------


def test_a_request_that_recorded_a_trace_names_it_in_the_response() -> None:
    browser = DjangoClient()
    with capture_events() as events:
        response = browser.get("/answer/")
        quiet = browser.get("/nothing/")
    [trace] = events.named("$ai_trace")
    assert response[HEADER] == trace["properties"]["$ai_trace_id"] == response.json()["trace_id"]
    assert HEADER not in quiet  # no trace was recorded: no id to give


def test_the_header_can_be_renamed_or_turned_off(llm_settings: Any) -> None:
    llm_settings(TRACE_ID_HEADER="X-Answer-Id")
    renamed = DjangoClient().get("/answer/")
    assert renamed["X-Answer-Id"] == renamed.json()["trace_id"]
    assert HEADER not in renamed
    llm_settings(TRACE_ID_HEADER=None)
    assert HEADER not in DjangoClient().get("/answer/")
    llm_settings(TRACE_ID_HEADER="")
    assert HEADER not in DjangoClient().get("/answer/")


def test_a_header_the_view_set_is_left_alone() -> None:
    assert DjangoClient().get("/own-header/")[HEADER] == "set-by-the-view"


def test_a_streamed_response_names_its_trace_before_the_body() -> None:
    with capture_events() as events:
        response = DjangoClient().get("/stream/")
        header = response[HEADER]  # known before a byte of the body was produced
        assert events.named("$ai_trace") == []
        body = b"".join(response.streaming_content)
        response.close()
    assert body == b"ab"
    [trace] = events.named("$ai_trace")
    assert header == trace["properties"]["$ai_trace_id"]


def test_an_async_streamed_response_under_uvicorn_names_its_trace(asgi_server: Server) -> None:
    with capture_events() as events:
        conn, response = asgi_server.open_stream("/astream/")
        header = response.getheader(HEADER)
        body = response.read()
        conn.close()
        from tests.django_app.fixtures import wait_for

        wait_for(lambda: events.named("$ai_trace"))
    assert body == b"ab"
    assert header == events.named("$ai_trace")[0]["properties"]["$ai_trace_id"]


def test_an_async_view_gets_the_header_too() -> None:
    @async_to_sync
    async def run() -> Any:
        return await AsyncClient().get("/async/answer/")

    with capture_events() as events:
        response = run()
    assert response[HEADER] == events.named("$ai_trace")[0]["properties"]["$ai_trace_id"]


# --- templates -----------------------------------------------------------------------------------


def test_a_template_reads_the_trace_id_and_its_signed_reference(alice: Any) -> None:
    browser = DjangoClient()
    browser.force_login(alice)
    with capture_events() as events:
        page = browser.get("/answer-page/").content.decode()
    trace_id = events.named("$ai_trace")[0]["properties"]["$ai_trace_id"]
    assert f"data-trace='{trace_id}'" in page
    token = html.unescape(re.search(r"data-token='([^']+)'", page).group(1))  # type: ignore[union-attr]
    assert token.startswith(trace_id + ".")
    assert current_trace() is None  # only the request had it

    # The token goes back with the feedback, and is accepted from alice.
    with capture_events() as events:
        sent = post_json(browser, "/feedback/", {"token": token, "value": 1})
    assert sent.json() == {"accepted": True}
    [metric] = events
    assert metric["properties"]["$ai_trace_id"] == trace_id


# --- feedback requests ---------------------------------------------------------------------------


def test_a_feedback_request_sends_under_the_user_and_session_without_a_trace(alice: Any) -> None:
    browser = DjangoClient()
    browser.force_login(alice)
    answer = browser.get("/answer/").json()
    with capture_events() as events:
        response = post_json(
            browser, "/feedback/", {"token": answer["token"], "value": -1, "comment": "Wrong"}
        )
    assert response.json() == {"accepted": True}
    assert HEADER not in response  # feedback is no trace of this request's own
    assert [e["event"] for e in events] == ["$ai_metric", "$ai_feedback"]
    key = browser.session.session_key
    for event in events:
        assert event["distinct_id"] == str(alice.pk)
        assert event["properties"]["$ai_trace_id"] == answer["trace_id"]
        assert event["properties"]["$ai_session_id"] == session_hash(SECRET, key)
        assert "$process_person_profile" not in event["properties"]
    assert events[1]["properties"]["$ai_feedback_text"] == "Wrong"


def test_one_user_cannot_send_feedback_on_another_users_trace(alice: Any, bob: Any) -> None:
    as_alice, as_bob = DjangoClient(), DjangoClient()
    as_alice.force_login(alice)
    as_bob.force_login(bob)
    answer = as_alice.get("/answer/").json()
    client: Client = llm_settings_client()
    with capture_events() as events:
        stolen = post_json(as_bob, "/feedback/", {"token": answer["token"], "value": -1})
        forged = post_json(
            as_bob,
            "/feedback/",
            {"token": answer["trace_id"] + ".AAAAAAAAAAAAAAAAAAAAAA", "value": 1},
        )
    assert stolen.json() == forged.json() == {"accepted": False}
    assert list(events) == []
    assert client.stats.snapshot()["dropped_feedback_bad_token"] == 2


def test_a_bad_trace_id_from_the_browser_never_breaks_the_view(alice: Any) -> None:
    browser = DjangoClient()
    browser.force_login(alice)
    client = llm_settings_client()
    with capture_events() as events:
        for bad in ({"trace_id": "x" * 5000, "value": 1}, {"trace_id": "ok", "value": ""}):
            assert post_json(browser, "/feedback/", bad).json() == {"accepted": False}
        ok = post_json(browser, "/feedback/", {"trace_id": "ok-trace", "value": 5})
    assert ok.json() == {"accepted": True}
    assert [e["properties"]["$ai_trace_id"] for e in events] == ["ok-trace"]
    counters = client.stats.snapshot()
    assert counters["dropped_feedback_bad_trace_id"] == 1
    assert counters["dropped_feedback_bad_value"] == 1


def llm_settings_client() -> Client:
    from posthog_llm_trace import get_client

    return get_client()


def test_feedback_with_a_raw_trace_id_is_sent_under_the_user_bound_at_the_end(alice: Any) -> None:
    # No token: nothing looks the user up while the view runs; the end of the request must.
    browser = DjangoClient()
    browser.force_login(alice)
    with capture_events() as events:
        sent = post_json(browser, "/feedback/", {"trace_id": "answer-1", "value": 4})
    assert sent.json() == {"accepted": True}
    [metric] = events
    assert metric["distinct_id"] == str(alice.pk)
    key = browser.session.session_key
    assert metric["properties"]["$ai_session_id"] == session_hash(SECRET, key)


def test_an_async_view_checks_the_token_against_the_user_it_loaded(alice: Any, bob: Any) -> None:
    token = logged_in(alice).get("/answer/").json()["token"]

    def post_async(user: Any) -> Any:
        client = AsyncClient()
        client.force_login(user)

        @async_to_sync
        async def run() -> Any:
            return await client.post(
                "/async/feedback/", json.dumps({"token": token, "value": 1}), "application/json"
            )

        return run()

    with capture_events() as events:
        assert post_async(alice).json() == {"accepted": True}
        assert post_async(bob).json() == {"accepted": False}
    [metric] = events
    assert metric["distinct_id"] == str(alice.pk)


def logged_in(user: Any) -> DjangoClient:
    browser = DjangoClient()
    browser.force_login(user)
    return browser
