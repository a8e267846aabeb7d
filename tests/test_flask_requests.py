"""What each Flask request records: its name, its user and session, its failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from flask import Flask, abort, request
from flask_login import login_user
from flask_testapp import User, isolate, make_app, record_chat
from werkzeug.exceptions import InternalServerError

from posthog_llm_trace import current_trace, generation, tool
from posthog_llm_trace.flask import SESSION_KEY, LLMTrace
from posthog_llm_trace.testing import CapturedEvents, capture_events


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch)


def traced_app(**config: Any) -> Flask:
    app = make_app(**config)
    LLMTrace(app)
    return app


def only_trace(events: CapturedEvents) -> dict[str, Any]:
    [trace] = events.named("$ai_trace")
    return trace


def identities(events: Any) -> set[tuple[str, str | None]]:
    return {(e["distinct_id"], e["properties"].get("$ai_session_id")) for e in events}


# --- naming and what is sent


def test_trace_is_named_by_method_and_url_rule_never_the_raw_path() -> None:
    app = traced_app()

    with capture_events() as events:
        app.test_client().post("/chat/31337?q=hello")

    trace = only_trace(events)
    assert trace["properties"]["$ai_span_name"] == "POST /chat/<int:conversation>"
    assert "31337" not in json.dumps(events.named("$ai_trace"))
    gen = events.by_span_name("answer")
    lookup = events.by_span_name("lookup")
    assert gen["properties"]["$ai_parent_id"] == trace["properties"]["$ai_trace_id"]
    assert lookup["properties"]["$ai_parent_id"] == gen["properties"]["$ai_span_id"]


def test_a_request_that_records_no_span_sends_nothing_and_sets_no_cookie() -> None:
    app = traced_app()
    client = app.test_client()

    with capture_events() as events:
        response = client.get("/health")

    assert response.status_code == 200
    assert list(events) == []
    assert "Set-Cookie" not in response.headers  # the session was not touched


# --- the user


def test_the_flask_login_user_is_bound() -> None:
    app = traced_app()
    client = app.test_client()
    client.post("/login/alice")

    with capture_events() as events:
        client.post("/chat/1")

    assert len(events) == 3
    assert {e["distinct_id"] for e in events} == {"alice"}
    assert not any("$process_person_profile" in e["properties"] for e in events)


def test_a_login_during_the_request_binds_that_user() -> None:
    app = traced_app()

    @app.post("/signup/<name>")
    def signup(name: str) -> str:
        record_chat("welcome")  # recorded before the user exists
        login_user(User(name))
        return "welcome"

    with capture_events() as events:
        app.test_client().post("/signup/carol")

    assert {e["distinct_id"] for e in events} == {"carol"}


def resolve_from_api_key(req: Any) -> str | None:
    key = req.headers.get("X-Api-Key")
    return f"api-user-{key}" if key else None


@pytest.mark.parametrize(
    "resolver", [resolve_from_api_key, "test_flask_requests.resolve_from_api_key"]
)
def test_a_custom_distinct_id_resolver(resolver: Any) -> None:
    app = traced_app(POSTHOG_LLM_TRACE_DISTINCT_ID_RESOLVER=resolver)
    client = app.test_client()

    with capture_events() as events:
        client.post("/chat/1", headers={"X-Api-Key": "k1"})
        client.post("/chat/2")

    by_trace: dict[str, set[str]] = {}
    for e in events:
        by_trace.setdefault(e["properties"]["$ai_trace_id"], set()).add(e["distinct_id"])
    assert sorted(map(sorted, by_trace.values())) == [["anonymous"], ["api-user-k1"]]


def test_a_failing_resolver_does_not_break_the_request() -> None:
    def broken(req: Any) -> str:
        raise LookupError("user store down")

    app = traced_app(POSTHOG_LLM_TRACE_DISTINCT_ID_RESOLVER=broken)

    with capture_events() as events:
        response = app.test_client().post("/chat/1")

    assert response.status_code == 200
    assert {e["distinct_id"] for e in events} == {"anonymous"}


def test_anonymous_requests_use_the_default_distinct_id_without_a_person_profile() -> None:
    app = traced_app()

    with capture_events() as events:
        app.test_client().post("/chat/1")

    assert len(events) == 3
    for event in events:
        assert event["distinct_id"] == "anonymous"
        assert event["properties"]["$process_person_profile"] is False


def test_the_distinct_id_header_is_ignored_unless_enabled() -> None:
    header = {"X-POSTHOG-DISTINCT-ID": "claimed-by-the-browser"}
    default_app = traced_app()
    trusting_app = traced_app(POSTHOG_LLM_TRACE_DISTINCT_ID_HEADER=True)

    with capture_events() as ignored:
        default_app.test_client().post("/chat/1", headers=header)
    with capture_events() as trusted:
        trusting_app.test_client().post("/chat/1", headers=header)
    signed_in = trusting_app.test_client()
    signed_in.post("/login/dave")
    with capture_events() as user_wins:
        signed_in.post("/chat/1", headers=header)

    assert {e["distinct_id"] for e in ignored} == {"anonymous"}
    assert {e["distinct_id"] for e in trusted} == {"claimed-by-the-browser"}
    assert {e["distinct_id"] for e in user_wins} == {"dave"}


# --- the session


def test_session_id_is_stable_per_browser_session_and_never_the_cookie() -> None:
    app = traced_app()
    browser, other_browser = app.test_client(), app.test_client()

    with capture_events() as events:
        browser.post("/chat/1")
        browser.post("/login/erin")  # logging in keeps the browser session
        browser.post("/chat/2")
        other_browser.post("/chat/1")

    first, second, other = (t["properties"]["$ai_session_id"] for t in events.named("$ai_trace"))
    assert first == second
    assert other != first
    assert first.startswith("s_")
    cookie = browser.get_cookie("session")
    assert cookie is not None
    with browser.session_transaction() as session:
        raw_id = session[SESSION_KEY]
    sent = json.dumps(list(events))
    assert cookie.value not in sent
    assert raw_id not in sent


def test_without_a_secret_key_there_is_no_session_id_and_no_error() -> None:
    app = traced_app()
    app.secret_key = None

    with capture_events() as events:
        response = app.test_client().post("/chat/1")

    assert response.status_code == 200
    assert len(events) == 3
    assert not any("$ai_session_id" in e["properties"] for e in events)


def test_the_app_can_use_its_own_conversation_id() -> None:
    app = traced_app()

    @app.post("/conversations/<int:cid>/messages")
    def message(cid: int) -> str:
        trace = current_trace()
        assert trace is not None
        trace.session_id = f"conversation-{cid}"
        return record_chat("hi")

    with capture_events() as events:
        app.test_client().post("/conversations/7/messages")

    assert {e["properties"]["$ai_session_id"] for e in events} == {"conversation-7"}


def test_the_posthog_session_header_links_replays() -> None:
    app = traced_app()
    off = traced_app(POSTHOG_LLM_TRACE_SESSION_REPLAY_HEADER=False)
    header = {"X-POSTHOG-SESSION-ID": "0190c5a1-replay\x07"}

    with capture_events() as linked:
        app.test_client().post("/chat/1", headers=header)
    with capture_events() as unlinked:
        off.test_client().post("/chat/1", headers=header)

    assert {e["properties"]["$session_id"] for e in linked} == {"0190c5a1-replay"}
    assert not any("$session_id" in e["properties"] for e in unlinked)


# --- failures


def test_an_unhandled_exception_marks_the_trace_and_reaches_flask_unchanged() -> None:
    app = traced_app()
    raised: list[BaseException] = []
    handled: list[BaseException | None] = []

    @app.post("/explode")
    def explode() -> str:
        record_chat("hi")
        error = RuntimeError("model provider down")
        raised.append(error)
        raise error

    @app.errorhandler(InternalServerError)
    def on_500(e: InternalServerError) -> tuple[str, int]:
        handled.append(e.original_exception)
        return "sorry", 500

    with capture_events() as events:
        response = app.test_client().post("/explode")

    assert response.status_code == 500
    assert response.text == "sorry"
    assert handled[0] is raised[0]
    props = only_trace(events)["properties"]
    assert props["$ai_is_error"] is True
    assert props["$ai_error_type"] == "RuntimeError"
    assert "model provider down" in props["$ai_error"]


def test_an_exception_handled_into_a_5xx_marks_the_trace() -> None:
    app = traced_app()
    handled: list[BaseException] = []

    @app.post("/explode")
    def explode() -> str:
        record_chat("hi")
        raise ValueError("bad tool output")

    @app.errorhandler(ValueError)
    def on_value_error(e: ValueError) -> tuple[str, int]:
        handled.append(e)
        return "upstream failed", 502

    with capture_events() as events:
        response = app.test_client().post("/explode")

    assert response.status_code == 502
    assert str(handled[0]) == "bad tool output"
    assert only_trace(events)["properties"]["$ai_is_error"] is True


def test_with_propagate_exceptions_the_same_exception_leaves_the_app() -> None:
    app = traced_app(PROPAGATE_EXCEPTIONS=True)
    raised: list[BaseException] = []

    @app.post("/explode")
    def explode() -> str:
        record_chat("hi")
        raised.append(KeyError("missing"))
        raise raised[0]

    with capture_events() as events, pytest.raises(KeyError) as info:
        app.test_client().post("/explode")

    assert info.value is raised[0]
    assert only_trace(events)["properties"]["$ai_error_type"] == "KeyError"


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_response_marks_the_trace(status: int) -> None:
    app = traced_app()

    @app.post("/busy")
    def busy() -> tuple[str, int]:
        record_chat("hi")
        return "busy", status

    with capture_events() as events:
        app.test_client().post("/busy")

    props = only_trace(events)["properties"]
    assert props["$ai_is_error"] is True
    assert str(status) in props["$ai_error"]


def test_a_4xx_response_is_not_a_failure() -> None:
    app = traced_app()

    @app.post("/refuse")
    def refuse() -> str:
        record_chat("hi")
        abort(403)

    with capture_events() as events:
        response = app.test_client().post("/refuse")

    assert response.status_code == 403
    assert "$ai_is_error" not in only_trace(events)["properties"]


@pytest.mark.parametrize("propagate", [False, True])
@pytest.mark.parametrize("hook", ["after_request", "teardown_request"])
def test_a_failing_hook_still_exports_the_trace_exactly_once(hook: str, propagate: bool) -> None:
    app = traced_app(PROPAGATE_EXCEPTIONS=propagate)

    def broken(arg: Any) -> Any:
        raise OSError(f"{hook} failed")

    getattr(app, hook)(broken)

    with capture_events() as events:
        try:
            app.test_client().post("/chat/1")
        except OSError:
            assert propagate or hook == "teardown_request"

    assert len(events.named("$ai_trace")) == 1
    assert len(events.named("$ai_generation")) == 1
    assert only_trace(events)["properties"]["$ai_is_error"] is True


# --- async views and filters


def test_an_async_view_records_into_the_request_trace() -> None:
    app = traced_app()

    @app.post("/async-chat")
    async def async_chat() -> str:
        login_user(User("frank"))
        async with generation("answer", model="gpt-4o-mini", input="hi") as gen:
            await asyncio.sleep(0)
            async with tool("lookup"):
                await asyncio.sleep(0)
            gen.set_output("hello")
        return "ok"

    with capture_events() as events:
        app.test_client().post("/async-chat")

    trace = only_trace(events)
    assert trace["properties"]["$ai_span_name"] == "POST /async-chat"
    assert events.trace_ids() == {trace["properties"]["$ai_trace_id"]}
    assert {e["distinct_id"] for e in events} == {"frank"}
    assert len(events) == 3


def test_the_request_filter_turns_tracing_off_for_a_request() -> None:
    app = traced_app(POSTHOG_LLM_TRACE_REQUEST_FILTER=lambda req: "internal" not in req.args)

    with capture_events() as events:
        app.test_client().post("/chat/1?internal=1")
        app.test_client().post("/chat/2")

    assert len(events.named("$ai_trace")) == 1
    assert only_trace(events)["properties"]["$ai_span_name"] == "POST /chat/<int:conversation>"
    assert len(events) == 3  # and no implicit trace for the filtered request's spans


def test_requests_are_not_mixed_up_when_one_app_calls_another() -> None:
    inner = traced_app(POSTHOG_LLM_TRACE_DEFAULT_DISTINCT_ID="inner-app")
    outer = traced_app()

    @outer.post("/proxy")
    def proxy() -> str:
        record_chat("outer")
        inner.test_client().post("/chat/1?q=inner")
        return request.path

    with capture_events() as events:
        outer.test_client().post("/proxy")

    traces = events.named("$ai_trace")
    assert len(traces) == 2
    assert {t["distinct_id"] for t in traces} == {"anonymous", "inner-app"}
    for event in events:
        owner = "inner-app" if "inner" in json.dumps(event["properties"]) else "anonymous"
        if event["event"] != "$ai_trace":
            assert event["distinct_id"] == owner
