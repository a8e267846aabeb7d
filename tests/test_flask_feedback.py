"""Feedback through a real Flask app: the trace id header (plain and streamed responses, a real
server), templates, signed references keyed with the app's SECRET_KEY, feedback requests bound to
the Flask-Login user."""

from __future__ import annotations

import http.client
from typing import Any

import pytest
from flask import Flask, Response, render_template_string, request, stream_with_context
from flask_testapp import isolate, make_app, record_chat, serve

from posthog_llm_trace import current_trace, feedback, generation, sign_trace
from posthog_llm_trace.flask import LLMTrace
from posthog_llm_trace.testing import capture_events

HEADER = "X-PostHog-Trace-Id"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)


def feedback_app(**settings: Any) -> Flask:
    app = make_app()
    LLMTrace(app, export="off", **settings)

    @app.get("/answer")
    def answer() -> Any:
        reply = record_chat("hi")
        trace = current_trace()
        assert trace is not None
        return {"answer": reply, "trace_id": trace.id, "token": trace.feedback_token}

    @app.get("/page")
    def page() -> str:
        record_chat("hi")
        # The extension gives templates current_trace().
        return render_template_string(
            "<p data-trace='{{ current_trace().id }}'"
            " data-token='{{ current_trace().feedback_token }}'>"
        )

    @app.post("/feedback")
    def send_feedback() -> Any:
        data = request.get_json()
        accepted = feedback(
            data.get("trace_id"), data.get("value"), token=data.get("token"),
            comment=data.get("comment"),
        )  # fmt: skip
        return {"accepted": accepted}

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Any:
            with generation("stream", model="m", provider="p", stream=True) as gen:
                for piece in ("a", "b"):
                    gen.chunk(piece)
                    yield piece

        return Response(stream_with_context(body()), mimetype="text/plain")

    return app


def test_a_recorded_request_names_its_trace_and_a_quiet_one_does_not() -> None:
    browser = feedback_app().test_client()
    with capture_events() as events:
        response = browser.get("/answer")
        quiet = browser.get("/health")
    [trace] = events.named("$ai_trace")
    assert response.headers[HEADER] == trace["properties"]["$ai_trace_id"]
    assert response.headers[HEADER] == response.json["trace_id"]  # type: ignore[index]
    assert HEADER not in quiet.headers


def test_the_header_setting_renames_it_or_turns_it_off() -> None:
    with capture_events():  # export is off: without it nothing records, and no header is due
        renamed = feedback_app(trace_id_header="X-Answer-Id").test_client().get("/answer")
    assert renamed.headers["X-Answer-Id"] == renamed.json["trace_id"]  # type: ignore[index]
    assert HEADER not in renamed.headers
    app = make_app(POSTHOG_LLM_TRACE_TRACE_ID_HEADER="")
    LLMTrace(app, export="off")
    with capture_events():
        assert HEADER not in app.test_client().get("/chat/1").headers


def test_a_streamed_response_from_a_real_server_names_its_trace_before_the_body() -> None:
    with capture_events() as events, serve(feedback_app()) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/stream")
        response = conn.getresponse()
        header = response.getheader(HEADER)
        body = response.read()
        conn.close()
    assert body == b"ab"
    [trace] = events.named("$ai_trace")
    assert header == trace["properties"]["$ai_trace_id"]


def test_feedback_with_a_token_from_the_page_is_bound_to_the_signed_in_user() -> None:
    app = feedback_app()
    alice = app.test_client()
    alice.post("/login/alice")
    with capture_events() as events:
        page = alice.get("/page").get_data(as_text=True)
    trace_id = events.named("$ai_trace")[0]["properties"]["$ai_trace_id"]
    assert f"data-trace='{trace_id}'" in page
    token = page.split("data-token='")[1].split("'")[0]
    # Keyed with the app's SECRET_KEY, for alice.
    assert token == sign_trace(trace_id, "alice", key="test-secret-key")

    with capture_events() as events:
        sent = alice.post("/feedback", json={"token": token, "value": 1, "comment": "Good"})
    assert sent.json == {"accepted": True}
    assert HEADER not in sent.headers
    assert [e["event"] for e in events] == ["$ai_metric", "$ai_feedback"]
    session_ids = {e["properties"]["$ai_session_id"] for e in events}
    assert len(session_ids) == 1 and None not in session_ids
    for event in events:
        assert event["distinct_id"] == "alice"
        assert event["properties"]["$ai_trace_id"] == trace_id


def test_another_user_cannot_reuse_the_token_and_anonymous_feedback_uses_the_session() -> None:
    app = feedback_app()
    alice, bob = app.test_client(), app.test_client()
    alice.post("/login/alice")
    bob.post("/login/bob")
    token = alice.get("/answer").json["token"]  # type: ignore[index]
    client = app.extensions["posthog_llm_trace"]
    with capture_events() as events:
        assert bob.post("/feedback", json={"token": token, "value": -1}).json == {"accepted": False}
    assert list(events) == []
    assert client.stats.snapshot()["dropped_feedback_bad_token"] == 1

    # Anonymous: the token is bound to the browser's session.
    anon, other = app.test_client(), app.test_client()
    anon_token = anon.get("/answer").json["token"]  # type: ignore[index]
    with capture_events() as events:
        assert other.post("/feedback", json={"token": anon_token, "value": 1}).json == {
            "accepted": False
        }
        assert anon.post("/feedback", json={"token": anon_token, "value": 1}).json == {
            "accepted": True
        }
    [metric] = events
    assert metric["distinct_id"] == "anonymous"
    assert metric["properties"]["$process_person_profile"] is False


def test_a_raw_trace_id_from_the_browser_is_checked_never_raised() -> None:
    app = feedback_app()
    browser = app.test_client()
    with capture_events() as events:
        bad = browser.post("/feedback", json={"trace_id": "<b>", "value": 1})
        worse = browser.post("/feedback", json={"trace_id": "t", "value": {"x": 1}})
        ok = browser.post("/feedback", json={"trace_id": "t-1", "value": 1})
    assert bad.status_code == worse.status_code == ok.status_code == 200
    assert [bad.json, worse.json, ok.json] == [{"accepted": False}] * 2 + [{"accepted": True}]
    assert [e["properties"]["$ai_trace_id"] for e in events] == ["t-1"]


def test_feedback_with_a_raw_trace_id_is_sent_under_the_user_bound_at_the_end() -> None:
    browser = feedback_app().test_client()
    browser.post("/login/alice")
    with capture_events() as events:
        sent = browser.post("/feedback", json={"trace_id": "answer-1", "value": 4})
    assert sent.json == {"accepted": True}
    [metric] = events
    assert metric["distinct_id"] == "alice"
    assert metric["properties"]["$ai_session_id"]
