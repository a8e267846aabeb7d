"""feedback(): the $ai_metric / $ai_feedback events, their identity, bad input, privacy, signed
trace references, and delivery through the real thread exporter to the capture server."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from capture_server import CaptureServer
from core_support import make_client, props, strict_json

from posthog_llm_trace import (
    ConfigurationError,
    current_trace,
    feedback,
    generation,
    sign_trace,
    trace,
    verify_trace_token,
)
from posthog_llm_trace import trace_feedback as feedback_module
from posthog_llm_trace.client import Client
from posthog_llm_trace.settings import Layer, build_settings
from posthog_llm_trace.testing import capture_events
from posthog_llm_trace.trace_feedback import MAX_COMMENT_CHARS, MAX_VALUE_CHARS

TRACE_ID = "0b1e8f9a-5c1d-4c6e-9a51-2f6f3a0c7d11"


def test_a_score_and_a_comment_become_a_metric_and_a_feedback_event() -> None:
    client = make_client()
    with capture_events() as events:
        assert feedback(TRACE_ID, 1, comment="Right city", name="thumbs", client=client)

    [metric] = events.named("$ai_metric")
    [text] = events.named("$ai_feedback")
    assert props(metric)["$ai_trace_id"] == TRACE_ID
    assert props(metric)["$ai_metric_name"] == "thumbs"
    assert props(metric)["$ai_metric_value"] == 1
    assert "$ai_feedback_text" not in props(metric)
    assert props(text)["$ai_trace_id"] == TRACE_ID
    assert props(text)["$ai_feedback_text"] == "Right city"
    # No trace of its own, no span: the feedback is about TRACE_ID.
    assert [e["event"] for e in events] == ["$ai_metric", "$ai_feedback"]
    for event in events:
        assert "$ai_span_id" not in props(event) and "$ai_parent_id" not in props(event)
        # Outside any trace and without a user: the default id, and no person is made of it.
        assert event["distinct_id"] == "anonymous"
        assert props(event)["$process_person_profile"] is False
        strict_json(event)
    assert metric["uuid"] != text["uuid"]


def test_without_a_comment_only_the_metric_is_sent_and_a_string_value_is_kept() -> None:
    client = make_client()
    with capture_events() as events:
        feedback(TRACE_ID, "negative", client=client)
        feedback(TRACE_ID, 0.8, name="eval_relevance", distinct_id="user-7", client=client)
    assert [e["event"] for e in events] == ["$ai_metric", "$ai_metric"]
    assert props(events[0])["$ai_metric_value"] == "negative"
    assert props(events[0])["$ai_metric_name"] == "rating"  # the default name
    assert props(events[1])["$ai_metric_value"] == 0.8
    assert events[1]["distinct_id"] == "user-7"
    assert "$process_person_profile" not in props(events[1])


def test_a_comment_alone_sends_only_the_feedback_event() -> None:
    with capture_events() as events:
        feedback(TRACE_ID, comment="It did not answer", client=make_client())
    [event] = events
    assert event["event"] == "$ai_feedback"
    assert props(event)["$ai_feedback_text"] == "It did not answer"
    assert "$ai_metric_name" not in props(event)


def test_a_named_span_is_the_parent_of_the_feedback() -> None:
    with capture_events() as events:
        feedback(TRACE_ID, -1, comment="no", span_id="gen-42", client=make_client())
    assert len(events) == 2
    for event in events:
        assert props(event)["$ai_parent_id"] == "gen-42"
        # A node of its own under the span, never a second node with the span's id.
        assert props(event)["$ai_span_id"] == event["uuid"] != "gen-42"


def test_custom_properties_are_added_but_never_over_the_ai_keys() -> None:
    custom = {
        "$ai_trace_id": "someone-elses",
        "$ai_metric_value": 99,
        "$ai_feedback_text": "forged",
        "$ai_span_id": "forged",
        "plan": "pro",
    }
    with capture_events() as events:
        feedback(TRACE_ID, 1, comment="ok", properties=custom, client=make_client())
    metric, text = events
    assert props(metric)["plan"] == props(text)["plan"] == "pro"
    assert props(metric)["$ai_trace_id"] == props(text)["$ai_trace_id"] == TRACE_ID
    assert props(metric)["$ai_metric_value"] == 1
    assert props(text)["$ai_feedback_text"] == "ok"
    assert "$ai_feedback_text" not in props(metric)
    assert "$ai_span_id" not in props(metric)


# --- inside a trace ------------------------------------------------------------------------------


def test_inside_a_trace_it_goes_out_at_the_end_under_the_identity_bound_then() -> None:
    client = make_client()
    with capture_events() as events, trace("POST /feedback/", client=client) as t:
        feedback(TRACE_ID, 1, comment="thanks")
        assert list(events) == []  # held until the trace ends ...
        # ... so identity an adapter binds at the end (a login, a DRF token) applies to it.
        t.bind(distinct_id="user-3", session_id="conv-9")
    assert [e["event"] for e in events] == ["$ai_metric", "$ai_feedback"]
    for event in events:
        assert event["distinct_id"] == "user-3"
        assert props(event)["$ai_session_id"] == "conv-9"
        assert props(event)["$ai_trace_id"] == TRACE_ID  # the trace it is about, not t
        assert "$process_person_profile" not in props(event)
    # Feedback alone is no trace of the request's own: no $ai_trace for t.
    assert t.id not in events.trace_ids()


def test_feedback_in_a_trace_that_records_spans_keeps_both_apart() -> None:
    client = make_client()
    with capture_events() as events, trace("chat", client=client, distinct_id="user-1") as t:
        with generation("answer", model="m", provider="p", input="hi") as g:
            g.set_output("hello")
        feedback(TRACE_ID, "up", name="thumbs")
    [trace_event] = events.named("$ai_trace")
    assert props(trace_event)["$ai_trace_id"] == t.id
    [metric] = events.named("$ai_metric")
    assert props(metric)["$ai_trace_id"] == TRACE_ID
    assert metric["distinct_id"] == "user-1"
    assert len(events) == 3


def test_an_unsampled_trace_still_sends_the_feedback_given_in_it() -> None:
    # The feedback is about another trace; this request's sampling says nothing about it.
    client = make_client(sample_rate=0.0)
    with capture_events() as events, trace("POST /feedback/", client=client, distinct_id="u"):
        with generation("g", model="m", provider="p"):
            pass
        feedback(TRACE_ID, 1)
    assert [e["event"] for e in events] == ["$ai_metric"]
    assert events[0]["distinct_id"] == "u"


def test_feedback_after_the_trace_ended_goes_out_at_once_under_its_identity() -> None:
    client = make_client()
    with capture_events() as events, trace("t", client=client, distinct_id="user-5") as t:
        t.session_id = "conv-5"
        t.end()
        feedback(TRACE_ID, 3, name="stars")
        [metric] = events
    assert metric["distinct_id"] == "user-5"
    assert props(metric)["$ai_session_id"] == "conv-5"


def test_feedback_for_another_client_inside_a_trace_goes_out_at_once() -> None:
    ours, other = make_client(), make_client(default_distinct_id="other-anon")
    with capture_events() as events, trace("t", client=ours, distinct_id="user-1"):
        feedback(TRACE_ID, 1, client=other)
        [metric] = events  # not held for the end of a trace of another client
    assert metric["distinct_id"] == "user-1"  # still the trace's user


def test_a_disabled_client_sends_nothing_and_counts_nothing() -> None:
    client = make_client()
    assert client.recording is False  # export off, no capture_events()
    assert feedback(TRACE_ID, 1, client=client) is False
    assert client.stats.snapshot()["dropped"] == 0


# --- bad input -----------------------------------------------------------------------------------


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"trace_id": None, "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": "", "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": 12345, "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": "has space", "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": "<script>", "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": "x" * 201, "value": 1}, "feedback_bad_trace_id"),
        ({"trace_id": "ok", "value": 1, "span_id": "a/b"}, "feedback_bad_span_id"),
        ({"trace_id": "ok", "value": float("nan")}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": float("inf")}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": float("-inf")}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": 10**400}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": True}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": {"score": 1}}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": [1]}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": "   "}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": Hostile()}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": None}, "feedback_bad_value"),
        ({"trace_id": "ok", "value": 1, "name": ""}, "feedback_bad_name"),
        ({"trace_id": "ok", "value": 1, "name": 7}, "feedback_bad_name"),
        ({"trace_id": "ok", "value": 1, "name": "a\nb"}, "feedback_bad_name"),
        ({"trace_id": "ok", "value": 1, "comment": {"text": "hi"}}, "feedback_bad_comment"),
        ({"trace_id": "ok", "value": 1, "properties": ["x"]}, "feedback_invalid"),
        ({"trace_id": "ok", "value": 1, "distinct_id": Hostile()}, "feedback_invalid"),
    ],
)
def test_bad_input_is_a_counted_logged_drop_never_an_exception(
    kwargs: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    client.stats.LOG_EVERY = 0.0  # log every drop, not one per ten seconds
    with capture_events() as events, caplog.at_level(logging.WARNING, "posthog_llm_trace"):
        assert feedback(**kwargs, client=client) is False
    assert list(events) == []
    counters = client.stats.snapshot()
    assert counters["dropped_" + reason] >= 1, counters
    assert reason in caplog.text
    if isinstance(kwargs["trace_id"], str):
        assert "<script>" not in caplog.text  # the browser's value is never logged


def test_a_uuid_object_and_every_allowed_character_make_a_trace_id() -> None:
    import uuid

    allowed = "Az09-_~.@()!':|"
    with capture_events() as events:
        assert feedback(uuid.UUID(TRACE_ID), 1, client=make_client())
        assert feedback(allowed, 1, client=make_client())
    assert [props(e)["$ai_trace_id"] for e in events] == [TRACE_ID, allowed]


def test_an_oversized_comment_and_string_value_are_trimmed_not_dropped() -> None:
    with capture_events() as events:
        feedback(TRACE_ID, "v" * 5000, comment="c" * 50_000, client=make_client())
    metric, text = events
    assert props(metric)["$ai_metric_value"] == "v" * MAX_VALUE_CHARS
    comment = props(text)["$ai_feedback_text"]
    assert comment.startswith("c" * MAX_COMMENT_CHARS)
    assert len(comment) < MAX_COMMENT_CHARS + 100 and "truncated" in comment


def test_numbers_of_other_types_are_plain_json_numbers() -> None:
    from decimal import Decimal
    from fractions import Fraction

    with capture_events() as events:
        feedback(TRACE_ID, Fraction(1, 4), client=make_client())
        feedback(TRACE_ID, 2**40, client=make_client())
    assert [props(e)["$ai_metric_value"] for e in events] == [0.25, 2**40]
    # A Decimal is not a numbers.Real: refused, not guessed.
    client = make_client()
    with capture_events():
        assert feedback(TRACE_ID, Decimal("0.5"), client=client) is False
    assert client.stats.snapshot()["dropped_feedback_bad_value"] == 1


# --- privacy -------------------------------------------------------------------------------------


def test_privacy_mode_drops_the_comment_text_and_keeps_the_value() -> None:
    secret = "my card is 4242 4242 4242 4242"
    with capture_events() as events:
        feedback(TRACE_ID, -1, comment=secret, client=make_client(privacy_mode=True))
    metric, text = events
    assert props(metric)["$ai_metric_value"] == -1
    assert props(text)["$ai_feedback_text"] is None
    assert "4242" not in json.dumps(list(events))


def test_the_mask_sees_the_comment() -> None:
    client = make_client(mask=lambda value: str(value).replace("4242", "XXXX"))
    with capture_events() as events:
        feedback(TRACE_ID, 1, comment="card 4242", client=client)
    assert props(events[1])["$ai_feedback_text"] == "card XXXX"


# --- signed references ---------------------------------------------------------------------------


def test_a_signed_reference_is_accepted_from_its_user_only() -> None:
    client = make_client()
    token = sign_trace(TRACE_ID, "user-1", key="k1")
    assert token.startswith(TRACE_ID + ".")
    assert verify_trace_token(token, "user-1", key="k1") == TRACE_ID
    assert verify_trace_token(token, "user-2", key="k1") is None
    assert verify_trace_token(token, "user-1", key="another key") is None
    # A signature moved onto another trace id does not verify.
    forged = "other-trace." + token.rpartition(".")[2]
    assert verify_trace_token(forged, "user-1", key="k1") is None
    for junk in (None, 5, "", "no-dot", "." * 400, "bad id.sig"):
        assert verify_trace_token(junk, "user-1", key="k1") is None

    with capture_events() as events:
        assert feedback(token=token, value=1, distinct_id="user-1", key="k1", client=client)
        assert not feedback(token=token, value=1, distinct_id="user-2", key="k1", client=client)
        assert not feedback(token=forged, value=1, distinct_id="user-1", key="k1", client=client)
        # A trace id given next to the token must be the token's.
        assert not feedback(
            "other-trace", 1, token=token, distinct_id="user-1", key="k1", client=client
        )
    [metric] = events
    assert props(metric)["$ai_trace_id"] == TRACE_ID
    assert metric["distinct_id"] == "user-1"
    assert client.stats.snapshot()["dropped_feedback_bad_token"] == 3


def test_in_a_trace_the_reference_is_for_its_user_resolved_then() -> None:
    """What a request does: the adapter's identify hook tells the user while the view runs."""
    client = make_client(trace_token_key="app-secret")
    with trace("GET /chat/", client=client) as answer:
        answer.identify = lambda: ("user-1", "sess-1")
        token = answer.feedback_token
        assert token == sign_trace()  # the same thing, as a function
    assert token is not None and token.startswith(answer.id + ".")

    def feedback_request(user: str) -> bool:
        with trace("POST /feedback/", client=client) as t:
            t.identify = lambda: (user, "sess-2")
            return feedback(None, 1, token=token)

    with capture_events() as events:
        assert feedback_request("user-1")
        assert not feedback_request("user-2")
    [metric] = events
    assert props(metric)["$ai_trace_id"] == answer.id
    assert metric["distinct_id"] == "user-1"


def test_an_anonymous_request_is_bound_to_its_session() -> None:
    client = make_client(trace_token_key="app-secret")
    with trace("GET /", client=client) as t:
        t.identify = lambda: (None, "s_abc")
        token = t.feedback_token
    with trace("POST /feedback/", client=client) as t2:
        t2.identify = lambda: (None, "s_abc")
        assert verify_trace_token(token) == t.id
    with trace("POST /feedback/", client=client) as t3:
        t3.identify = lambda: (None, "s_other")
        assert verify_trace_token(token) is None


def test_without_a_key_signing_is_a_clear_error_and_a_token_a_counted_drop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(feedback_module, "_django_secret", lambda: None)
    monkeypatch.setattr(feedback_module, "_warned_no_key", False)
    client = make_client()
    with pytest.raises(ConfigurationError, match="trace_token_key"):
        sign_trace(TRACE_ID, "u", client=client)
    with trace("t", client=client) as t, caplog.at_level(logging.WARNING, "posthog_llm_trace"):
        assert t.feedback_token is None
    assert "trace_token_key" in caplog.text
    with trace("t", client=client) as t, caplog.at_level(logging.WARNING, "posthog_llm_trace"):
        caplog.clear()
        assert t.feedback_token is None
    assert caplog.text == ""  # said once, not on every page
    with capture_events():
        assert not feedback(token=f"{TRACE_ID}.abc", value=1, client=client)
    assert client.stats.snapshot()["dropped_feedback_bad_token"] == 1


def test_the_key_setting_is_a_secret_in_reprs_and_errors() -> None:
    settings = build_settings(Layer({"trace_token_key": "s3cr3t-value"}), environ={})
    assert "s3cr3t-value" not in repr(settings)
    with pytest.raises(ConfigurationError) as raised:
        build_settings(Layer({"trace_token_key": 12345}), environ={})
    assert "12345" not in str(raised.value)


def test_the_trace_id_header_setting_is_checked() -> None:
    assert build_settings(environ={}).trace_id_header == "X-PostHog-Trace-Id"
    assert build_settings(Layer({"trace_id_header": ""}), environ={}).trace_id_header is None
    assert build_settings(Layer({"trace_id_header": None}), environ={}).trace_id_header is None
    renamed = build_settings(Layer({"trace_id_header": "X-Answer-Id"}), environ={})
    assert renamed.trace_id_header == "X-Answer-Id"
    with pytest.raises(ConfigurationError, match="trace_id_header"):
        build_settings(Layer({"trace_id_header": "Bad Header:"}), environ={})
    env = build_settings(environ={"POSTHOG_LLM_TRACE_TRACE_ID_HEADER": ""})
    assert env.trace_id_header is None


# --- delivery ------------------------------------------------------------------------------------


def test_feedback_reaches_the_capture_server_through_the_thread_exporter(
    capture_server: CaptureServer,
) -> None:
    values = {"api_key": "phc_test", "host": capture_server.url, "flush_interval": 0.05}
    client = Client(build_settings(Layer(values), environ={}))
    try:
        # From another thread, as a worker loop or a script would.
        worker = threading.Thread(
            target=feedback,
            args=(TRACE_ID, 0.8),
            kwargs={"name": "eval_relevance", "comment": "close", "client": client},
        )
        worker.start()
        worker.join()
        assert client.flush(10.0)
        assert capture_server.wait_for(2)
    finally:
        client.shutdown(2.0)
    received = {e["event"]: e for e in capture_server.events}
    assert set(received) == {"$ai_metric", "$ai_feedback"}
    assert received["$ai_metric"]["properties"]["$ai_metric_value"] == 0.8
    assert received["$ai_feedback"]["properties"]["$ai_feedback_text"] == "close"
    assert client.stats.snapshot()["sent"] == 2


def test_current_trace_id_is_what_the_header_and_the_template_name() -> None:
    client = make_client()
    with trace("t", client=client) as t:
        node = current_trace()
        assert node is t and node.id == t.id
